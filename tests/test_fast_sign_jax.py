"""The JAX fast exact sign (lionk.core.array_api.native_exact_sign): ``where(y == 0, 0, sign(y))``,
used eagerly and inside a user's ``jax.jit`` only after a byte-for-byte probe against the
nested-where reference passed, eager and jitted, for the dtype and platform."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
ml_dtypes = pytest.importorskip("ml_dtypes")

from lionk.core import array_api  # noqa: E402
from lionk.core.kappa import _where_sign, exact_sign  # noqa: E402

DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32,
          "float64": np.float64}


def _values(np_dtype) -> np.ndarray:
    """Special values (signed zeros, ±inf, NaNs with payloads of both signs, tiny, huge,
    subnormals) and random ordinary ones."""
    fi = ml_dtypes.finfo(np_dtype)
    special = np.array([0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, float(fi.tiny),
                        -float(fi.tiny), float(fi.max), -float(fi.max),
                        float(fi.smallest_normal) / 4, -float(fi.smallest_normal) / 4,
                        float(fi.smallest_normal) / 2 ** 5, 1.0, -1.0, 2.5e-3, -7.0],
                       dtype=np.float64).astype(np_dtype)
    uint = np.dtype(f"u{special.itemsize}")
    nans = np.array([math.nan, -math.nan], dtype=np_dtype).view(uint)
    payloads = np.concatenate([nans | np.array(k, uint) for k in (2, 5, 0x3F)]).view(np_dtype)
    rnd = np.random.default_rng(0).standard_normal(500).astype(np_dtype)
    return np.concatenate([special, payloads, rnd])


def _bits(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view(np.dtype(f"u{a.itemsize}"))


@pytest.fixture
def fresh_probes():
    """Empty probe cache before and after (the probes are per process)."""
    saved = dict(array_api._SIGN_PROBES)
    array_api._SIGN_PROBES.clear()
    yield array_api._SIGN_PROBES
    array_api._SIGN_PROBES.clear()
    array_api._SIGN_PROBES.update(saved)


def _assert_exact_sign_semantics(y: np.ndarray, got: np.ndarray) -> None:
    """Independent of the reference: NaN stays NaN, zeros (and subnormals, which JAX's CPU
    client flushes to zero, or not) give +0 or the sign, ordinary values give ±1."""
    y64, g64 = y.astype(np.float64), got.astype(np.float64)
    assert np.array_equal(np.isnan(g64), np.isnan(y64))
    zero = y64 == 0
    assert np.all(g64[zero] == 0) and not np.any(np.signbit(g64[zero]))
    normal = np.isfinite(y64) & (np.abs(y64) >= float(ml_dtypes.finfo(y.dtype).smallest_normal))
    normal |= np.isinf(y64)
    assert np.array_equal(g64[normal], np.sign(y64[normal]))
    sub = np.isfinite(y64) & ~zero & ~normal
    assert np.all((g64[sub] == 0) & ~np.signbit(g64[sub]) | (g64[sub] == np.sign(y64[sub])))


@pytest.mark.parametrize("name", list(DTYPES))
def test_jax_fast_sign_is_bitwise_the_reference(name, fresh_probes) -> None:
    values = _values(DTYPES[name])
    y = jnp.asarray(values)
    assert y.dtype == values.dtype
    eager = exact_sign(y)
    assert fresh_probes == {("jax-eager", name, "cpu"): True}  # eager: the eager probe only
    jitted = jax.jit(exact_sign)(y)
    assert fresh_probes[("jax", name, "cpu")] is True  # traced: the jitted probe
    assert np.array_equal(_bits(eager), _bits(_where_sign(y)))
    assert np.array_equal(_bits(jitted), _bits(jax.jit(_where_sign)(y)))
    _assert_exact_sign_semantics(values, np.asarray(eager))
    _assert_exact_sign_semantics(values, np.asarray(jitted))


@pytest.mark.parametrize("name", ["float32", "bfloat16"])
def test_jax_fast_sign_inside_a_larger_jitted_step(name, fresh_probes) -> None:
    """Fused with the arithmetic around it (as in a step: c = b1*m + (1-b1)*g; lr*sign(c)),
    the fast form gives the reference's bytes; the probe runs while the jit is traced."""
    dt = DTYPES[name]
    m = jnp.asarray(_values(dt))
    g = jnp.asarray(np.random.default_rng(1).standard_normal(m.shape[0]).astype(dt))
    g = g.at[:8].set(0.0)

    def step(sign):
        def f(m, g):
            c = 0.9 * m + 0.1 * g
            return 1e-3 * sign(c), sign(c)
        return jax.jit(f)

    got = step(exact_sign)(m, g)
    assert fresh_probes[("jax", name, "cpu")] is True
    ref = step(_where_sign)(m, g)
    for a, b in zip(got, ref):
        assert np.array_equal(_bits(a), _bits(b))


def test_the_fast_form_is_what_runs_under_jit(fresh_probes) -> None:
    """Once verified, the traced program holds one comparison, one sign and one select (not
    the reference's three comparisons and three selects)."""
    y = jnp.zeros(8, jnp.float32)
    eqns = [e.primitive.name for e in jax.make_jaxpr(exact_sign)(y).jaxpr.eqns]
    assert "sign" in eqns and eqns.count("gt") == 0 and eqns.count("lt") == 0
    assert fresh_probes[("jax", "float32", "cpu")] is True


def test_failed_probe_falls_back_to_the_reference(monkeypatch, fresh_probes) -> None:
    """A JAX sign that disagrees on one probe value (here NaN -> 0, as raw torch.sign) is never
    used, eagerly or under jit."""
    real_sign = jnp.sign
    monkeypatch.setattr(jnp, "sign", lambda t: jnp.where(jnp.isnan(t), 0.0, real_sign(t)))
    y = jnp.asarray([-0.0, 1.0, -2.0, math.nan], jnp.float32)
    eager = exact_sign(y)
    assert array_api.sign_probe_results()[("jax-eager", "float32", "cpu")] is False
    jitted = jax.jit(exact_sign)(y)
    assert array_api.sign_probe_results()[("jax", "float32", "cpu")] is False
    for got in (eager, jitted):
        assert np.array_equal(_bits(got), _bits(_where_sign(y)))
        assert math.isnan(float(got[3])) and not np.signbit(np.asarray(got)[0])
    assert "sign" not in [e.primitive.name for e in jax.make_jaxpr(exact_sign)(y).jaxpr.eqns]


def test_sign_plus_zero_is_not_exact_under_jit() -> None:
    """Why the fast form is a select and not ``sign(y) + 0.0``: XLA folds the ``+ 0.0`` away
    under jit and −0 comes back (eager JAX keeps it). If this starts to fail, XLA changed."""
    y = jnp.asarray([-0.0, 0.0, 1.0], jnp.float32)
    eager = jnp.sign(y) + 0.0
    jitted = jax.jit(lambda t: jnp.sign(t) + 0.0)(y)
    assert not np.signbit(np.asarray(eager)[0])
    assert np.signbit(np.asarray(jitted)[0])
