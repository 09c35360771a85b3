"""A step that raises changes nothing, on every execution path (issue 10, cases 2 and 3).

docs/api.md ("Nothing is lost") and docs/torch.md ("Atomic steps") promise it: every check, the
κ, the result shapes and NumPy's floating-point traps run before the first write; the writes
themselves cannot fail (a Ctrl-C that arrives while writing is delivered after them). Each test
injects a failure at every stage a path has (the k-th call of the κ, for every k; an overflow in
the last element; a wrong result shape in a later leaf; a KeyboardInterrupt) and compares
params, momentum and counters bit for bit before and after. Where the injected failure does not
happen (the path calls the κ fewer times), the step must equal the eager step instead.
"""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest

import lionk
from lionk.execution import kernels as _kernel
from lionk.execution import paths as _paths

from ._util import textbook

NUMPY_PATHS = [("eager", 1), ("chunked", 1), ("chunked", 2), ("compiled", 1), ("compiled", 2),
               ("auto", 2)]


class Injected(RuntimeError):
    """The failure a test injects."""


def counting_kappa(raise_at: int | None, exc: type[BaseException] = Injected,
                   name: str = "inject") -> tuple[lionk.kappa.Kappa, list[int]]:
    """An elementwise κ (sign) whose ``raise_at``-th grad call raises ``exc``; ``calls`` counts."""
    calls = [0]

    def grad(y):
        calls[0] += 1
        if raise_at is not None and calls[0] == raise_at:
            raise exc(f"injected at call {raise_at}")
        return lionk.kappa.exact_sign(y)

    return lionk.kappa.Kappa(name, grad=grad, separable=True, exact=True), calls


def numpy_tree(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    params = {"a": rng.standard_normal(3000).astype(np.float32),
              "b": rng.standard_normal((50, 50)).astype(np.float32)}
    grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    return params, grads


def snapshot_numpy(opt: lionk.LionK) -> list:
    leaves = [*opt.params.values(), *opt.state.momentum.values()]
    return [a.copy() for a in leaves] + [opt.state.count, opt.state.skipped]


def assert_unchanged(before: list, after: list) -> None:
    assert len(before) == len(after)
    for i, (b, a) in enumerate(zip(before, after)):
        if isinstance(b, np.ndarray):
            assert b.dtype == a.dtype and b.tobytes() == a.tobytes(), f"array {i} changed"
        else:
            assert b == a, f"counter {i}: {b} -> {a}"


def make_opt(params, path: str, threads: int, kappa) -> lionk.LionK:
    if path == "compiled" and not _kernel.numba_available():
        pytest.skip("numba not installed")
    return lionk.LionK(params, lr=0.01, weight_decay=0.5, kappa=kappa, execution=path,
                       chunk_size=1024, threads=threads)


def eager_reference(seed: int, kappa) -> list:
    params, grads = numpy_tree(seed)
    opt = lionk.LionK(params, lr=0.01, weight_decay=0.5, kappa=kappa, execution="eager")
    opt.step(grads)
    return snapshot_numpy(opt)


@pytest.mark.parametrize("exc", [Injected, KeyboardInterrupt])
@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "kappa-per-chunk"])
@pytest.mark.parametrize(("path", "threads"), NUMPY_PATHS)
def test_numpy_kappa_error_at_any_call_writes_nothing(path, threads, recorded, exc, monkeypatch):
    """docs/api.md "Nothing is lost": a κ raising (an error, or Ctrl-C) at its k-th call, for
    every k."""
    if not recorded:  # no recorded program: the κ runs chunk by chunk
        monkeypatch.setattr(_paths, "_tape_program", lambda *a: None)
    kap, calls = counting_kappa(None)
    params, grads = numpy_tree()
    opt = make_opt(params, path, threads, kap)
    opt.step(grads)
    total = calls[0]
    if path == "chunked" and not recorded:
        assert total >= 6  # several chunks: the injected failure lands between writes on main
    for k in range(1, total + 2):
        kap, calls = counting_kappa(k, exc=exc, name=f"inject{k}")
        params, grads = numpy_tree()
        opt = make_opt(params, path, threads, kap)
        before = snapshot_numpy(opt)
        try:
            opt.step(grads)
        except (exc, ValueError):  # ValueError: "compiled" has no kernel for a failing κ
            assert_unchanged(before, snapshot_numpy(opt))
        else:
            assert_unchanged(eager_reference(0, counting_kappa(None)[0]), snapshot_numpy(opt))


def overflow_in_last_element() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """x - lr*∇K(c) overflows float32 in the very last element of the last leaf only."""
    params, grads = numpy_tree()
    params["b"][-1, -1] = np.float32(-3.4e38)
    grads["b"][-1, -1] = np.float32(3.0e38)
    return params, grads


@pytest.mark.parametrize(("path", "threads"), NUMPY_PATHS)
def test_numpy_floating_point_trap_in_the_last_element_writes_nothing(path, threads):
    """np.seterr(all="raise"): FloatingPointError, nothing written (main: written, threads=1;
    ignored, threads=2 and compiled)."""
    params, grads = overflow_in_last_element()
    opt = make_opt(params, path, threads, textbook("quadratic"))
    opt.lr = 0.9
    opt.weight_decay = 0.0
    before = snapshot_numpy(opt)
    with np.errstate(all="raise"), pytest.raises(FloatingPointError, match="overflow"):
        opt.step(grads)
    assert_unchanged(before, snapshot_numpy(opt))
    with np.errstate(all="ignore"):  # the same step goes through without the trap
        opt.step(grads)
    assert opt.state.count == 1 and params["b"][-1, -1] == -np.inf


@pytest.mark.parametrize(("path", "threads"), [p for p in NUMPY_PATHS if p[0] != "compiled"])
def test_numpy_runtime_warning_as_error_writes_nothing(path, threads):
    """Default np.seterr ("warn") with warnings turned into errors: the RuntimeWarning raises
    before anything is written (the compiled kernel reports no floating-point events)."""
    params, grads = overflow_in_last_element()
    opt = make_opt(params, path, threads, textbook("quadratic"))
    opt.lr = 0.9
    opt.weight_decay = 0.0
    before = snapshot_numpy(opt)
    with np.errstate(all="warn"), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning, match="overflow"):
            opt.step(grads)
    assert_unchanged(before, snapshot_numpy(opt))


@pytest.mark.parametrize(("path", "threads"), NUMPY_PATHS)
def test_numpy_seterr_call_callback_raising_writes_nothing(path, threads):
    params, grads = overflow_in_last_element()
    opt = make_opt(params, path, threads, textbook("quadratic"))
    opt.lr = 0.9
    opt.weight_decay = 0.0
    before = snapshot_numpy(opt)

    def callback(kind, flag):
        raise Injected(kind)

    with np.errstate(all="call", call=callback), pytest.raises((Injected, FloatingPointError)):
        opt.step(grads)
    assert_unchanged(before, snapshot_numpy(opt))


def test_kappa_returning_another_shape_for_a_later_leaf_writes_nothing():
    """Issue 10 case 3: the error names the κ and the leaf; the earlier leaf is not written."""

    def grad(y):
        return np.ones((3, 3), dtype=y.dtype) if y.ndim == 2 else np.sign(y)

    kap = lionk.kappa.Kappa("badshape", grad=grad, separable=False)
    params = {"a": np.ones(4, np.float32), "b": np.ones((3, 1), np.float32)}
    opt = lionk.LionK(params, lr=0.1, kappa=kap)
    before = snapshot_numpy(opt)
    with pytest.raises(ValueError, match=r"kappa 'badshape' at params\['b'\]: grad must keep the shape"):
        opt.step({"a": np.ones(4, np.float32), "b": np.ones((3, 1), np.float32)})
    assert_unchanged(before, snapshot_numpy(opt))


@pytest.mark.parametrize("threads", [1, 2])
def test_chunked_kappa_returning_another_shape_in_a_later_chunk_writes_nothing(threads, monkeypatch):
    monkeypatch.setattr(_paths, "_tape_program", lambda *a: None)
    calls = [0]

    def grad(y):
        calls[0] += 1
        return np.sign(y)[:-1] if calls[0] == 4 else np.sign(y)

    kap = lionk.kappa.Kappa("shortchunk", grad=grad, separable=True)
    params, grads = numpy_tree()
    opt = make_opt(params, "chunked", threads, kap)
    before = snapshot_numpy(opt)
    with pytest.raises(ValueError, match=r"kappa 'shortchunk' at params\['[ab]'\] \(elements \d+:\d+\)"):
        opt.step(grads)
    assert_unchanged(before, snapshot_numpy(opt))


def test_ctrl_c_while_writing_is_delivered_after_the_whole_step(monkeypatch):
    """A SIGINT that arrives between two leaves' writes: the step completes (params, momentum
    and count), then KeyboardInterrupt is raised. Main: raised between the writes."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has a non-default handler here")
    real = _paths.write_inplace
    sent = []

    def write_and_interrupt(dst, src):
        real(dst, src)
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(_paths, "write_inplace", write_and_interrupt)
    params, grads = numpy_tree()
    opt = lionk.LionK(params, lr=0.01, weight_decay=0.5, kappa="sign", execution="eager")
    with pytest.raises(KeyboardInterrupt):
        opt.step(grads)
    monkeypatch.setattr(_paths, "write_inplace", real)
    assert_unchanged(eager_reference(0, "sign"), snapshot_numpy(opt))


def test_pure_step_and_jit_step_leave_their_inputs_when_the_kappa_raises():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    kap, _ = counting_kappa(1)
    params = {"a": jnp.ones(3), "b": jnp.arange(2.0)}
    grads = {"a": jnp.ones(3), "b": jnp.ones(2)}
    state = lionk.init(params)
    with pytest.raises(Injected):
        lionk.step(params, grads, state, lr=0.1, kappa=kap)
    kap, _ = counting_kappa(1, name="inject-jit")
    run = lionk.jit_step(lr=0.1, kappa=kap)
    with pytest.raises(Injected):
        run(params, grads, state)
    # not donated: the failure was at trace time, before any buffer was handed to XLA
    np.testing.assert_array_equal(np.asarray(params["b"]), [0.0, 1.0])
    np.testing.assert_array_equal(np.asarray(state.momentum["a"]), np.zeros(3))


# ---------------------------------------------------------------------------------------------
# torch: atomic across param groups (issue 10 case 2).

torch = pytest.importorskip("torch")

TORCH_PATHS = ["eager", "chunked", "packed", "auto"]


def torch_model(seed: int = 0, *, big: bool = False):
    gen = torch.Generator().manual_seed(seed)
    n = 300_000 if big else 64  # big: "auto" runs group 0 chunked
    ps = [torch.nn.Parameter(torch.randn(n, generator=gen)),
          torch.nn.Parameter(torch.randn(8, 4, generator=gen)),
          torch.nn.Parameter(torch.randn(5, generator=gen))]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen)
    return ps


def torch_opt(ps, path, kappas):
    from lionk.torch import LionK

    groups = [{"params": [ps[0]], "kappa": kappas[0]},
              {"params": [ps[1], ps[2]], "kappa": kappas[1], "weight_decay": 0.1}]
    return LionK(groups, lr=0.01, execution=path)


def torch_snapshot(opt) -> list:
    out: list = []
    for g in opt.param_groups:
        out.append(g["skipped"])
        for p in g["params"]:
            out.append(p.detach().clone())
            st = opt.state.get(p, {})
            out.append(sorted(st))
            out.append(st.get("step"))
            m = st.get("exp_avg")
            out.append(None if m is None else m.detach().clone())
    return out


def assert_torch_unchanged(before, after) -> None:
    assert len(before) == len(after)
    for i, (b, a) in enumerate(zip(before, after)):
        if isinstance(b, torch.Tensor):
            assert a is not None and b.dtype == a.dtype and torch.equal(
                b.view(torch.int32), a.view(torch.int32)), f"tensor {i} changed"
        else:
            assert b == a, f"entry {i}: {b!r} -> {a!r}"


@pytest.mark.parametrize("big", [False, True], ids=["small", "big"])
@pytest.mark.parametrize("path", TORCH_PATHS)
@pytest.mark.parametrize("exc", [Injected, KeyboardInterrupt])
def test_torch_kappa_error_in_a_later_group_writes_no_group(path, big, exc):
    """docs/torch.md "Atomic steps": group 1's κ raises at its k-th call, for every k, after a
    first step (so the counters are non-zero); nothing in any group changes. Main: group 0 was
    written and its step counter incremented with "auto"/"chunked"."""
    for k in range(1, 4):
        kap, _ = counting_kappa(None, name="ok")
        bad, _ = counting_kappa(k, exc=exc, name=f"bad{k}")
        ps = torch_model(big=big)
        opt = torch_opt(ps, path, [kap, bad])
        try:
            opt.step()
        except (Injected, KeyboardInterrupt):  # k == 1: the first step fails already
            pass
        before = torch_snapshot(opt)
        try:
            opt.step()
        except (Injected, KeyboardInterrupt):
            assert_torch_unchanged(before, torch_snapshot(opt))
        else:
            assert opt.state[ps[0]]["step"] >= 1


@pytest.mark.parametrize("path", TORCH_PATHS)
def test_torch_wrong_kappa_shape_in_a_later_group_writes_no_group(path):
    def grad(y):
        return torch.ones(y.shape[0], 7) if y.ndim == 2 else torch.sign(y)

    bad = lionk.kappa.Kappa("badshape", grad=grad, separable=False)
    ps = torch_model(big=True)
    opt = torch_opt(ps, path, ["sign", bad])
    before = torch_snapshot(opt)
    with pytest.raises(ValueError, match=r"kappa 'badshape' at param_groups\[1\]\['params'\]\[0\]"):
        opt.step()
    assert_torch_unchanged(before, torch_snapshot(opt))


def test_torch_chunked_non_contiguous_params_step_and_no_group_is_written_first():
    """Issue 15 item 3: execution="chunked" with params that are views randn(10,5,2)[..., 0]
    runs them eagerly (last_execution says so) and equals the eager optimizer."""
    from lionk.torch import LionK

    def model():
        gen = torch.Generator().manual_seed(3)
        big = torch.nn.Parameter(torch.randn(300_000, generator=gen))
        nc = torch.nn.Parameter(torch.randn(10, 5, 2, generator=gen)[..., 0])
        assert not nc.is_contiguous()
        for p in (big, nc):
            p.grad = torch.randn(p.shape, generator=gen)
        return big, nc

    results = {}
    for path in ("chunked", "eager"):
        big, nc = model()
        opt = LionK([{"params": [big]}, {"params": [nc]}], lr=0.01, execution=path)
        opt.step()
        results[path] = (big.detach().clone(), nc.detach().clone(), opt.last_execution)
    assert results["chunked"][2] == ["chunked", "eager"]
    assert torch.equal(results["chunked"][0], results["eager"][0])
    assert torch.equal(results["chunked"][1], results["eager"][1])


def test_torch_ctrl_c_while_writing_completes_every_group(monkeypatch):
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has a non-default handler here")
    real = _paths.write_inplace
    sent = []

    def write_and_interrupt(dst, src):
        real(dst, src)
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)

    ps = torch_model()
    opt = torch_opt(ps, "eager", ["sign", "sign"])
    monkeypatch.setattr(_paths, "write_inplace", write_and_interrupt)
    with pytest.raises(KeyboardInterrupt):
        opt.step()
    monkeypatch.setattr(_paths, "write_inplace", real)
    ref = torch_model()
    ref_opt = torch_opt(ref, "eager", ["sign", "sign"])
    ref_opt.step()
    assert_torch_unchanged(torch_snapshot(ref_opt), torch_snapshot(opt))


def test_torch_compile_groups_run_as_one_call_that_writes_nothing_when_a_group_fails():
    """The torch.compile path: group 1's κ raises while traced; group 0, compiled in the same
    call, is not written (main: group 0 compiled, written and counted first)."""
    kap, _ = counting_kappa(None, name="ok-compiled")
    bad, _ = counting_kappa(1, name="bad-compiled")
    ps = torch_model()
    opt = torch_opt(ps, "compiled", [kap, bad])
    before = torch_snapshot(opt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Injected):
            opt.step()
    assert_torch_unchanged(before, torch_snapshot(opt))


def test_interrupt_deferral_leaves_a_program_s_own_handler_and_a_second_ctrl_c_interrupts():
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has a non-default handler here")
    calls = []

    def own(signum, frame):
        calls.append(signum)

    old = signal.signal(signal.SIGINT, own)
    try:
        with _paths.interrupts_deferred():
            assert signal.getsignal(signal.SIGINT) is own
            os.kill(os.getpid(), signal.SIGINT)
        assert calls == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, old)
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with _paths.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            reached.append(1)  # the first one is held back
            os.kill(os.getpid(), signal.SIGINT)
            reached.append(2)  # not reached: the second one interrupts at once
    assert reached == [1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
