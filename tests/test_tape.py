"""lionk.execution.tape: the step recorded once and replayed on NumPy chunks with ``out=`` buffers.

The replay must be the eager step, bit for bit, and must never be used when it is not: these
tests compare it with eager ``update_leaves`` on data with NaN, ±inf, ±0 and subnormals, check
that the program writes straight into x and m (no copies), that an unrecordable step or a wrong
program falls back to the per-chunk eager path, and that aliasing is respected.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import lionk
from lionk import kappa as K
from lionk.core.step import make_hyper, update_leaves
from lionk.execution import tape as _tape

from ._util import bits, textbook

# run in their textbook forms: elementwise (the defaults of the others measure RMS(y) per array)
SEPARABLE = ["sign", "huber", "deadzone", "quadratic", "relativistic"]
H = make_hyper(1e-3, (0.9, 0.99), 0.1)


def _data(n: int, dtype, mdtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 0.1, -0.1, 1.0])
    def vec(k):
        v = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 3, size=n)
        v[rng.integers(0, n, size=min(n, 40))] = rng.choice(special, size=min(n, 40))
        return v
    with np.errstate(all="ignore"):
        return vec(0).astype(dtype), vec(1).astype(dtype), vec(2).astype(mdtype)


def _replay(program, x, g, m, h=H):
    x, m = x.copy(), m.copy()
    with np.errstate(all="ignore"):
        program.bind(h).run(x, g, m, *program.buffers(x.shape[0]))
    return x, m


def _eager(update, x, g, m, h=H, kappa="sign"):
    with np.errstate(all="ignore"):
        (nx,), (nm,) = update([x], [g], [m], h, K.resolve(kappa))
    return np.asarray(nx), np.asarray(nm)


@pytest.mark.parametrize("kappa", SEPARABLE)
@pytest.mark.parametrize("dtype,mdtype", [("float32", "float32"), ("float64", "float64"),
                                          ("float16", "float16"), ("float32", "float16")])
def test_builtin_separable_kappas_are_recorded_and_replay_bitwise(kappa, dtype, mdtype) -> None:
    kap = textbook(kappa)
    program = _tape.program_for(update_leaves, H, kap, dtype, mdtype)
    assert program is not None, _tape.why_not(update_leaves, H, kap, dtype, mdtype)
    x, g, m = _data(5000, dtype, mdtype, seed=hash(kappa) % 1000)
    got_x, got_m = _replay(program, x, g, m)
    want_x, want_m = _eager(update_leaves, x, g, m, kappa=kap)
    assert np.array_equal(bits(got_x), bits(want_x))
    assert np.array_equal(bits(got_m), bits(want_m))


def test_the_default_huber_is_not_recorded() -> None:
    """Its δ = 0.1·RMS(y) is a sum over the whole array: no chunk-by-chunk program."""
    kap = K.resolve("huber")
    assert _tape.program_for(update_leaves, H, kap, "float32", "float32") is None
    assert "not elementwise" in _tape.why_not(update_leaves, H, kap, "float32", "float32")


def test_the_sign_program_writes_into_x_and_m_and_copies_nothing() -> None:
    program = _tape.program_for(update_leaves, H, K.resolve("sign"), "float32", "float32")
    src = program.source
    assert "out=x)" in src and "out=m)" in src, src
    assert "[...] =" not in src and " = " not in src.split(":", 1)[1], src  # no fresh arrays
    assert len(program.buffer_dtypes) == 2, src  # two chunk-sized scratch buffers
    # the coefficients are arguments, passed to the ufuncs in the published order
    assert "multiply(c_b1, m" in src and "multiply(c_one_minus_b1, g" in src
    assert "0.9" not in src and "0.001" not in src


def test_a_new_learning_rate_reuses_the_program_and_replays_bitwise() -> None:
    kap = textbook("huber")
    h1 = make_hyper(1e-3, (0.9, 0.99), 0.0)
    h2 = make_hyper(2e-3, (0.8, 0.95), 0.3)
    p1 = _tape.program_for(update_leaves, h1, kap, "float32", "float32")
    p2 = _tape.program_for(update_leaves, h2, kap, "float32", "float32")
    assert p1 is p2
    x, g, m = _data(3000, "float32", "float32", seed=12)
    for h in (h1, h2):
        got_x, got_m = _replay(p1, x, g, m, h)
        want_x, want_m = _eager(update_leaves, x, g, m, h=h, kappa=kap)
        assert np.array_equal(bits(got_x), bits(want_x))
        assert np.array_equal(bits(got_m), bits(want_m))


def test_a_step_whose_operations_depend_on_the_coefficients_is_not_recorded() -> None:
    """A coefficient turned into another constant (here lr*2, computed in Python) would be
    baked into the program: the two recordings differ, and the step is refused."""
    def update(xs, gs, ms, h, kappa):
        return [xs[0] - (h.lr * 2.0) * gs[0]], [ms[0] * h.b2]

    kap = K.resolve("sign")
    assert _tape.program_for(update, H, kap, "float32", "float32") is None
    assert "depends on the coefficient values" in _tape.why_not(update, H, kap, "float32",
                                                                "float32")


def test_a_value_dependent_step_is_not_recorded_and_chunked_still_matches() -> None:
    def grad(y):
        xp = lionk.core.array_api.array_namespace(y)
        scale = 2.0 if float(xp.max(xp.abs(y))) > 1.0 else 1.0  # depends on the values
        return xp.clip(y * scale, -1.0, 1.0)

    kap = K.Kappa("valuedep", grad=grad, exact=True, separable=True)
    assert _tape.program_for(update_leaves, H, kap, "float32", "float32") is None
    assert "not elementwise" in _tape.why_not(update_leaves, H, kap, "float32", "float32")
    x, g, m = _data(3000, "float32", "float32", seed=5)
    x, g, m = (np.nan_to_num(a) for a in (x, g, m))
    ref = lionk.LionK(x.copy(), lr=1e-3, kappa=kap, execution="eager")
    got = lionk.LionK(x.copy(), lr=1e-3, kappa=kap, execution="chunked", chunk_size=256)
    ref.step(g)
    got.step(g)
    assert got.last_execution == "chunked"
    assert np.array_equal(bits(ref.params), bits(got.params))


def test_a_user_kappa_built_from_namespace_functions_is_recorded() -> None:
    def grad(y):
        xp = lionk.core.array_api.array_namespace(y)
        return xp.where(xp.abs(y) > 0.5, xp.clip(y, -1.0, 1.0), y * 2.0)

    kap = K.Kappa("soft", grad=grad, exact=True, separable=True)
    program = _tape.program_for(update_leaves, H, kap, "float64", "float64")
    assert program is not None, _tape.why_not(update_leaves, H, kap, "float64", "float64")
    x, g, m = _data(4000, "float64", "float64", seed=9)
    got_x, got_m = _replay(program, x, g, m)
    want_x, want_m = _eager(update_leaves, x, g, m, kappa=kap)
    assert np.array_equal(bits(got_x), bits(want_x))
    assert np.array_equal(bits(got_m), bits(want_m))


def test_a_program_that_differs_from_the_eager_step_is_refused(monkeypatch, request) -> None:
    """The probe check is what makes replay safe: break the generated code (subtract -> add)
    and the program must be refused, and the chunked path must still give the eager result."""
    real = _tape._compile

    def broken(tape, inputs, outputs, hyper=None):
        program = real(tape, inputs, outputs, hyper)
        src = program.source.replace("subtract(", "add(")
        scope = {"add": np.add, "multiply": np.multiply, "sign": np.sign, "subtract": np.subtract}
        exec(compile(src, "<broken>", "exec"), scope)
        return _tape.Program(src, scope["lionk_program"], program.buffer_dtypes)

    monkeypatch.setattr(_tape, "_compile", broken)
    _tape._CACHE.clear()
    request.addfinalizer(_tape._CACHE.clear)
    kap = K.resolve("sign")
    assert _tape.program_for(update_leaves, H, kap, "float32", "float32") is None
    assert "differ from the eager step" in _tape.why_not(update_leaves, H, kap, "float32", "float32")
    x, g, _ = _data(2000, "float32", "float32", seed=2)
    x, g = np.nan_to_num(x), np.nan_to_num(g)
    ref = lionk.LionK(x.copy(), lr=1e-3, weight_decay=0.1, execution="eager")
    got = lionk.LionK(x.copy(), lr=1e-3, weight_decay=0.1, execution="chunked", chunk_size=300)
    for _ in range(3):
        ref.step(g)
        got.step(g)
    assert np.array_equal(bits(ref.params), bits(got.params))


def test_an_output_is_not_written_early_over_an_input_read_later() -> None:
    """An update whose new x is computed before x is read again (directly and through a
    view made by a non-ufunc function): the program must not write x in place too early."""
    def update(xs, gs, ms, h, kappa):
        xp = lionk.core.array_api.array_namespace(xs[0])
        x, g, m = xs[0], gs[0], ms[0]
        nx = x * 2.0
        view = xp.reshape(x, (-1,))  # may share memory with x
        nm = (m + x) + view * 0.5 + g
        return [nx], [nm]

    program = _tape.program_for(update, H, K.resolve("sign"), "float32", "float32")
    assert program is not None, _tape.why_not(update, H, K.resolve("sign"), "float32", "float32")
    assert "out=x)" not in program.source  # x is read after nx exists: copied at the end
    x, g, m = _data(1000, "float32", "float32", seed=4)
    got_x, got_m = _replay(program, x, g, m)
    want_x, want_m = _eager(update, x, g, m)
    assert np.array_equal(bits(got_x), bits(want_x))
    assert np.array_equal(bits(got_m), bits(want_m))


def test_python_control_flow_on_values_is_not_recorded() -> None:
    def update(xs, gs, ms, h, kappa):
        return [xs[0] * (2.0 if gs[0] > 0 else 1.0)], [ms[0] * 1.0]

    assert _tape.program_for(update, H, K.resolve("sign"), "float32", "float32") is None
    assert "control flow" in _tape.why_not(update, H, K.resolve("sign"), "float32", "float32")


def test_reductions_are_not_recorded() -> None:
    def update(xs, gs, ms, h, kappa):
        xp = lionk.core.array_api.array_namespace(xs[0])
        s = xp.sum(gs[0])
        return [xs[0] - s], [ms[0] * 1.0]

    assert _tape.program_for(update, H, K.resolve("sign"), "float32", "float32") is None
    assert "not elementwise" in _tape.why_not(update, H, K.resolve("sign"), "float32", "float32")


def test_probes_hold_the_special_values() -> None:
    x, g, m = _tape.probes(np.dtype("float32"), np.dtype("float32"))
    for v in (x, g, m):
        assert np.isnan(v).any() and np.isposinf(v).any() and np.isneginf(v).any()
        assert (v == 0).any() and np.signbit(v[v == 0]).any()
        tiny = np.abs(v[np.isfinite(v) & (v != 0)]).min()
        assert tiny < np.finfo(np.float32).tiny  # a subnormal
    assert not math.isclose(float(np.nansum(x)), float(np.nansum(g)))
