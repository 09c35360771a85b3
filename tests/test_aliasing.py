"""Arrays that share memory are refused, by every front end, through one function (issue 10,
case 4): ``lionk.core.array_api.check_no_aliasing``.

docs/api.md and docs/torch.md ("Aliasing") state it: the same buffer twice, overlapping views,
a gradient that is a param's or a momentum's memory give a ValueError naming both leaves, and
nothing is written. Read-only arrays may share memory (one gradient for two leaves) and
disjoint interleaved views are accepted. JAX arrays are immutable; only ``jit_step``'s donated
buffers are checked. On main, ``lionk.LionK([x, x])`` stepped x by -0.1 eager and -0.2 chunked.

The hypothesis fuzz at the end draws trees (dict with mixed int/str keys, OrderedDict,
defaultdict, namedtuple, list, tuple), aliasing and bad gradients, and checks on every execution
path that a call either raises a TypeError/ValueError naming a leaf and changes nothing bit for
bit, or equals the pure step on separate copies (bitwise; NumPy, torch and JAX eager agree).
"""

from __future__ import annotations

import re
from collections import OrderedDict, defaultdict, namedtuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lionk
from lionk.core import array_api
from lionk.core.trees import flatten
from lionk.execution import kernels as _kernel

PATHS = ["eager", "chunked", "auto"] + (["compiled"] if _kernel.numba_available() else [])


def snapshot(opt) -> list[bytes]:
    xs, _, _ = flatten(opt.params)
    ms, _, _ = flatten(opt.state.momentum)
    return [a.tobytes() for a in (*xs, *ms)] + [repr((opt.state.count, opt.state.skipped))]


@pytest.mark.parametrize("path", PATHS)
def test_the_same_array_twice_is_refused_naming_both(path):
    x = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"params\[1\]: .*same array as params\[0\]"):
        lionk.LionK([x, x], lr=0.1, execution=path)
    assert (x == 1).all()
    with pytest.raises(ValueError, match=r"params\[1\]: .*same array as params\[0\]"):
        lionk.step([x, x], [np.ones(3, np.float32)] * 2, lionk.init([x, x]), lr=0.1)


@pytest.mark.parametrize("path", PATHS)
def test_overlapping_views_are_refused_and_disjoint_interleaved_views_accepted(path):
    base = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match=r"params\['b'\]: .*shares memory with params\['a'\]"):
        lionk.LionK({"a": base[:5], "b": base[3:]}, lr=0.1, execution=path)
    with pytest.raises(ValueError, match=r"params\['b'\]: .*shares memory with params\['a'\]"):
        lionk.LionK({"a": base[::2], "b": base[2::4]}, lr=0.1, execution=path)
    opt = lionk.LionK({"a": base[::2], "b": base[1::2]}, lr=0.1, execution="eager")
    opt.step({"a": np.ones(4, np.float32), "b": -np.ones(4, np.float32)})
    np.testing.assert_array_equal(base, np.tile(np.float32([-0.1, 0.1]), 4))


@pytest.mark.parametrize("path", PATHS)
def test_gradients_aliasing_a_param_or_a_momentum_are_refused_and_nothing_written(path):
    p = {"a": np.arange(3, dtype=np.float32), "b": np.ones(3, np.float32)}
    opt = lionk.LionK(p, lr=0.1, execution=path)
    opt.step({"a": np.ones(3, np.float32), "b": np.ones(3, np.float32)})
    before = snapshot(opt)
    cases = [
        ({"a": p["b"], "b": np.ones(3, np.float32)}, r"grads\['a'\]: .*same array as params\['b'\]"),
        ({"a": np.ones(3, np.float32), "b": p["b"]}, r"grads\['b'\]: .*same array as params\['b'\]"),
        ({"a": opt.state.momentum["b"], "b": np.ones(3, np.float32)},
         r"state.momentum\['b'\]: .*same array as grads\['a'\]"),
        ({"a": np.ones(3, np.float32), "b": p["a"][::-1]},
         r"grads\['b'\]: .*shares memory with params\['a'\]"),
    ]
    for grads, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            opt.step(grads)
        assert snapshot(opt) == before
    shared = np.ones(3, np.float32)  # read-only arrays may share memory
    opt.step({"a": shared, "b": shared})
    assert opt.state.count == 2


def test_torch_tensors_in_lionk_lionk_and_lionk_step():
    torch = pytest.importorskip("torch")
    base = torch.zeros(10, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"params\[1\]: .*shares memory with params\[0\]"):
        lionk.LionK([base[:6], base[4:]], lr=0.1)
    a, b = base[0::2], base[1::2]  # disjoint (exact test on the CPU through NumPy views)
    opt = lionk.LionK([a, b], lr=0.5)
    opt.step([torch.ones(5, dtype=torch.bfloat16), -torch.ones(5, dtype=torch.bfloat16)])
    assert base.tolist() == [-0.5, 0.5] * 5
    x = torch.ones(4)
    with pytest.raises(ValueError, match=r"grads: .*same array as params"):
        lionk.step(x, x, lionk.init(x), lr=0.1)


def test_torch_adapter_refuses_views_and_aliased_gradients_through_the_core_function(monkeypatch):
    torch = pytest.importorskip("torch")
    from lionk.torch import LionK

    calls = []
    real = array_api.find_overlap
    monkeypatch.setattr(array_api, "find_overlap",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    base = torch.zeros(10, requires_grad=True)
    w = torch.nn.Parameter(torch.zeros(6))
    v = torch.nn.Parameter(w.detach()[2:])  # another Parameter over w's storage
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[0\]: .*shares memory "
                                         r"with param_groups\[0\]\['params'\]\[0\]"):
        LionK([{"params": [w]}, {"params": [v]}], lr=0.1)
    del base
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = LionK([{"params": [p]}, {"params": [q]}], lr=0.1)
    p.grad, q.grad = torch.ones(3), torch.ones(3)
    opt.step()
    before = (p.detach().clone(), q.detach().clone(), opt.state[p]["exp_avg"].clone())
    exp_avg_q = opt.state[q]["exp_avg"]
    for grad, other in ((q.detach(), r"param_groups\[1\]\['params'\]\[0\](?![.\[])"),
                        (exp_avg_q, r"state of param_groups\[1\]\['params'\]\[0\]\['exp_avg'\]")):
        p.grad = grad
        with pytest.raises(ValueError) as info:
            opt.step()
        msg = str(info.value)
        assert "param_groups[0]['params'][0].grad" in msg, msg
        assert re.search(other, msg), msg
        assert torch.equal(p, before[0]) and torch.equal(q, before[1])
        assert torch.equal(opt.state[p]["exp_avg"], before[2]) and opt.state[p]["step"] == 1
    assert calls  # the adapter used lionk.core.array_api's function


def test_jax_arrays_may_repeat_but_donated_buffers_may_not():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = jnp.ones(3)
    new, _ = lionk.step([x, x], [x, x], lionk.init([x, x]), lr=0.1)  # immutable: fine
    np.testing.assert_array_equal(np.asarray(new[0]), np.asarray(new[1]))
    run = lionk.jit_step(lr=0.1)
    with pytest.raises(ValueError, match=r"params\[1\]: .*same array as params\[0\].*donate"):
        run([x, x], [jnp.ones(3), jnp.ones(3)], lionk.init([jnp.ones(3), jnp.ones(3)]))
    with pytest.raises(ValueError, match=r"grads: .*same array as params"):
        run(x, x, lionk.init(x))
    assert not x.is_deleted()
    m = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"state.momentum: .*same array as grads"):
        run(jnp.ones(3), m, lionk.State(0, m, 0))
    assert not m.is_deleted()
    lionk.jit_step(lr=0.1, donate=False)(x, x, lionk.init(x))  # nothing donated: fine


def test_find_overlap_is_exact_on_the_host_and_sorted():
    base = np.zeros(100)
    arrays = [base[0:10], base[20:30], base[::-1][:5], base[10:20], base[5:6]]
    assert array_api.find_overlap(arrays, [True] * 5) == (0, 4)
    assert array_api.find_overlap(arrays[:4], [True] * 4) is None
    assert array_api.find_overlap([base[:10], base[:10]], [False, False]) is None
    assert array_api.find_overlap([base[::3], base[1::3], base[2::3]], [True] * 3) is None


# ---------------------------------------------------------------------------------------------
# Fuzz.

Pair = namedtuple("Pair", "w b")
KEYS = st.one_of(st.integers(0, 3), st.sampled_from(["a", "b", "z"]))


def leaf_specs(draw, depth):
    """A tree of leaf indices (ints) in random containers."""
    kind = draw(st.sampled_from(["leaf", "dict", "ordered", "default", "pair", "list", "tuple"]
                                if depth < 2 else ["leaf"]))
    if kind == "leaf":
        return ("leaf",)
    if kind == "pair":
        return ("pair", leaf_specs(draw, depth + 1), leaf_specs(draw, depth + 1))
    n = draw(st.integers(1, 3))
    if kind in ("dict", "ordered", "default"):
        keys = draw(st.lists(KEYS, min_size=n, max_size=n, unique=True))
        return (kind, [(k, leaf_specs(draw, depth + 1)) for k in keys])
    return (kind, [leaf_specs(draw, depth + 1) for _ in range(n)])


def build(spec, leaves):
    kind = spec[0]
    if kind == "leaf":
        return leaves.pop(0)
    if kind == "pair":
        return Pair(build(spec[1], leaves), build(spec[2], leaves))
    if kind in ("list", "tuple"):
        items = [build(s, leaves) for s in spec[1]]
        return items if kind == "list" else tuple(items)
    items = [(k, build(s, leaves)) for k, s in spec[1]]
    if kind == "ordered":
        return OrderedDict(items)
    if kind == "default":
        return defaultdict(list, items)
    return dict(items)


@st.composite
def cases(draw):
    spec = leaf_specs(draw, 0)
    leaves_n = len(flatten(build(spec, list(range(100))))[0])
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    sizes = draw(st.lists(st.integers(1, 9), min_size=leaves_n, max_size=leaves_n))
    seed = draw(st.integers(0, 2**16))
    alias = draw(st.sampled_from(["none", "none", "same", "overlap", "interleaved", "grad=param",
                                  "grad=other param", "grad shared"]))
    bad = draw(st.sampled_from(["none", "none", "none", "shape", "dtype", "not an array"]))
    which = draw(st.integers(0, 10**6))
    return spec, dtype, sizes, seed, alias, bad, which


def make_case(spec, dtype, sizes, seed, alias, bad, which):
    """Params, grads, and whether the step must fail (an aliasing that writes, a bad grad)."""
    rng = np.random.default_rng(seed)
    n = len(sizes)
    base = rng.standard_normal(3 * sum(sizes) + 4).astype(dtype)
    offsets = np.cumsum([0, *sizes])
    xs = [base[offsets[i]:offsets[i + 1]] for i in range(n)]
    gs = [rng.standard_normal(s).astype(dtype) for s in sizes]
    must_fail = False
    i = which % n
    j = (which // n) % n
    if alias == "same" and n > 1 and i != j:
        xs[j] = xs[i]
        must_fail = True
    elif alias == "overlap" and i < n - 1:  # leaf i+1 shifted onto leaf i's last element
        xs[i + 1] = base[offsets[i + 1] - 1:offsets[i + 2] - 1]
        must_fail = True
    elif alias == "interleaved":
        xs = [base[sum(sizes) + k: sum(sizes) + k + 2 * s: 2] if k == i else x
              for k, (x, s) in enumerate(zip(xs, sizes))]
    elif alias == "grad=param":
        gs[i] = xs[j]
        must_fail = True
    elif alias == "grad=other param" and sizes[i] == sizes[j]:
        gs[i] = xs[j][::-1]
        must_fail = True
    elif alias == "grad shared":
        same = [k for k in range(n) if sizes[k] == sizes[i]]
        for k in same:
            gs[k] = gs[i]
    if bad == "shape":
        gs[j] = np.zeros(sizes[j] + 1, dtype)
        must_fail = True
    elif bad == "dtype":
        gs[j] = gs[j].astype(np.float16)
        must_fail = True
    elif bad == "not an array":
        gs[j] = list(gs[j])
        must_fail = True
    return build(spec, list(xs)), build(spec, list(gs)), must_fail


def leaf_named(msg: str) -> bool:
    return any(f"{label}[" in msg or f"{label}." in msg or f"{label}:" in msg
               for label in ("params", "grads", "state.momentum"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_fuzz_a_step_fails_cleanly_naming_the_leaf_or_equals_the_pure_step(case):
    spec, dtype, sizes, seed, alias, bad, which = case
    for path in PATHS:
        params, grads, must_fail = make_case(spec, dtype, sizes, seed, alias, bad, which)
        try:
            opt = lionk.LionK(params, lr=0.05, weight_decay=0.5, execution=path, chunk_size=4)
        except ValueError as exc:  # params alias each other: refused at construction
            assert must_fail and leaf_named(str(exc)), str(exc)
            continue
        before = snapshot(opt)
        try:
            opt.step(grads)
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            assert leaf_named(msg), msg
            assert snapshot(opt) == before, f"{path}: a failed step changed something"
            contiguous = all(a.flags.c_contiguous for a in flatten(params)[0])
            assert must_fail or (path in ("chunked", "compiled") and not contiguous), msg
            continue
        assert not must_fail, f"{path}: expected an error for {alias}/{bad}"
        # the pure step on separate copies gives the same bits, on NumPy, torch and JAX
        fresh, fresh_grads, _ = make_case(spec, dtype, sizes, seed, alias, bad, which)
        xs, treedef, _ = flatten(fresh)
        copies = [x.copy() for x in xs]
        gl = [np.array(g, copy=True) for g in flatten(fresh_grads)[0]]
        want, _ = lionk.step(copies, gl, lionk.init(copies), lr=0.05, weight_decay=0.5)
        got = flatten(params)[0]
        assert [a.tobytes() for a in got] == [np.asarray(w).tobytes() for w in want], path
        assert type(opt.params) is type(params)
    _other_backends_agree(spec, dtype, sizes, seed, alias, bad, which)


def _other_backends_agree(spec, dtype, sizes, seed, alias, bad, which):
    params, grads, must_fail = make_case(spec, dtype, sizes, seed, alias, bad, which)
    if must_fail:
        return
    xs, treedef, _ = flatten(params)
    gs = [np.array(g, copy=True) for g in flatten(grads)[0]]
    xs = [x.copy() for x in xs]
    want, _ = lionk.step(treedef.unflatten(xs), treedef.unflatten(gs),
                         lionk.init(treedef.unflatten(xs)), lr=0.05, weight_decay=0.5)
    want_leaves = [np.asarray(a).tobytes() for a in flatten(want)[0]]
    torch = pytest.importorskip("torch")
    tx = [torch.from_numpy(x.copy()) for x in xs]
    tg = [torch.from_numpy(g.copy()) for g in gs]
    got, _ = lionk.step(tx, tg, lionk.init(tx), lr=0.05, weight_decay=0.5)
    assert [t.numpy().tobytes() for t in got] == want_leaves
    jax = pytest.importorskip("jax")
    jx = [jax.numpy.asarray(x) for x in xs]
    jg = [jax.numpy.asarray(g) for g in gs]
    got, _ = lionk.step(jx, jg, lionk.init(jx), lr=0.05, weight_decay=0.5)
    assert [np.asarray(a).tobytes() for a in got] == want_leaves
