"""Property-based tests (hypothesis) over shapes, memory layouts, dtypes, backends and κ.

Shapes include 0-d, empty (0,) and (3, 0), 1-D and 2-D; layouts include numpy strided views
and Fortran order and torch transposed/strided views; dtypes float16, bfloat16 (torch, jax),
float32 and float64. Values are drawn by a seeded numpy generator away from subnormals.
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lionk

from ._util import EXACT_KAPPAS, assert_bitwise_equal, np_reference_step, textbook
from .conftest import BACKEND_NAMES, get_backend, np_dtype

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHAPES = [(), (0,), (3, 0), (1,), (7,), (3, 4), (2, 5)]
ALL_KAPPAS = [  # the defaults ({} and the norm κ's scale="rms") and fixed textbook forms
    ("sign", {}), ("huber", {"delta": 0.3}), ("huber", {}), ("quadratic", {}),
    ("quadratic", {"scale": 1.0}), ("deadzone", {"e": 0.1}), ("deadzone", {}),
    ("l2", {}), ("l2", {"scope": "global"}), ("lp", {"p": 3.0}), ("relativistic", {"delta": 0.5}),
    ("relativistic-l2", {"delta": 0.5, "scope": "global"}),
]
EXACT_GRADS = {name: fn for name, _, fn in EXACT_KAPPAS}
EXACT_PARAMS = {name: p for name, p, _ in EXACT_KAPPAS}


def _layouts(bname: str, shape: tuple) -> list[str]:
    if len(shape) == 0:
        return ["contiguous"]
    if bname == "numpy":
        return ["contiguous", "strided", "fortran"]
    if bname == "torch":
        return ["contiguous", "strided"] + (["transposed"] if len(shape) == 2 else [])
    return ["contiguous"]


def _place(be, a: np.ndarray, layout: str):
    """A backend array with the values of ``a`` in the requested memory layout."""
    if layout == "contiguous":
        return be.asarray(a)
    if be.name == "numpy":
        if layout == "fortran":
            return np.asfortranarray(a.copy())
        big = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
        big[::2] = a
        out = big[::2]
        assert not out.flags.c_contiguous or a.size <= 1 or a.shape[0] <= 1
        return out
    import torch

    if layout == "transposed":
        return be.asarray(np.ascontiguousarray(a.T)).t()
    big = torch.zeros((2 * a.shape[0],) + a.shape[1:], dtype=be.asarray(a[:0]).dtype)
    big[::2] = be.asarray(a)
    return big[::2]


def _values(rng, shape, dtype, scale=1.0):
    """Normal values scaled, rounded to ``dtype``, with |v| ≥ 1e-3 or exactly 0 (no subnormals
    even in float16 after one step)."""
    v = rng.standard_normal(shape) * scale
    v = np.where(np.abs(v) < 1e-3, 0.0, v)
    return v.astype(np_dtype(dtype))


@st.composite
def configs(draw):
    bname = draw(st.sampled_from(BACKEND_NAMES))
    be = get_backend(bname)
    dtype = draw(st.sampled_from(be.dtypes))
    shape = draw(st.sampled_from(SHAPES))
    layout = draw(st.sampled_from(_layouts(bname, shape)))
    kappa = draw(st.sampled_from(ALL_KAPPAS))
    seed = draw(st.integers(0, 2**31 - 1))
    lr = draw(st.sampled_from([1e-3, 0.01, 0.1]))
    wd = draw(st.sampled_from([0.0, 0.1, 1.0]))
    b1 = draw(st.sampled_from([0.0, 0.9, 0.95]))
    b2 = draw(st.sampled_from([0.95, 0.99]))
    return be, dtype, shape, layout, kappa, seed, lr, wd, (b1, b2)


@SETTINGS
@given(configs())
def test_step_any_shape_layout_dtype(cfg) -> None:
    """No crash; params and momentum keep shape, dtype and device; finite inputs give finite
    outputs; for exact κ in float32/float64 the result equals the numpy reference bitwise
    whatever the memory layout."""
    be, dtype, shape, layout, (kname, kparams), seed, lr, wd, betas = cfg
    rng = np.random.default_rng(seed)
    x = _values(rng, shape, dtype)
    g = _values(rng, shape, dtype)
    m = _values(rng, shape, dtype, 0.1)
    xb = _place(be, x, layout)
    gb = _place(be, g, layout)
    mb = _place(be, m, "contiguous")
    kappa = lionk.kappa.get(kname, **kparams)
    x2, s2 = lionk.step({"p": xb}, {"p": gb}, lionk.State(2, {"p": mb}, 0), lr=lr, betas=betas,
                        weight_decay=wd, kappa=kappa)
    out, mout = x2["p"], s2.momentum["p"]
    for arr in (out, mout):
        assert tuple(arr.shape) == shape
        assert arr.dtype == be.dtype(dtype)
        assert array_api_compat.device(arr) == array_api_compat.device(xb)
    out_np, m_np = be.to_numpy(out), be.to_numpy(mout)
    assert np.all(np.isfinite(out_np.astype(np.float64)))
    assert np.all(np.isfinite(m_np.astype(np.float64)))
    assert s2.count == 3
    # the exact κ of the references are textbook forms (quadratic's default is not exact)
    if (kname in EXACT_GRADS and dtype in ("float32", "float64")
            and kappa == textbook(kname, **EXACT_PARAMS[kname])):
        xr, mr = np_reference_step(x, g, m, lr=lr, betas=betas, wd=wd, grad_k=EXACT_GRADS[kname])
        assert_bitwise_equal(out_np, xr, "params")
        assert_bitwise_equal(m_np, mr, "momentum")


@settings(max_examples=30, deadline=None)
@given(shape=st.sampled_from(SHAPES), device=st.sampled_from(["CPU_DEVICE", "device1", "device2"]),
       kappa=st.sampled_from(ALL_KAPPAS), seed=st.integers(0, 2**31 - 1))
def test_device_preserved_array_api_strict(shape, device, kappa, seed) -> None:
    """On array-api-strict devices, init and step create everything on the params' device
    (any mixing would raise inside array-api-strict)."""
    xs = pytest.importorskip("array_api_strict")
    dev = xs.Device(device)
    rng = np.random.default_rng(seed)
    x = xs.asarray(rng.standard_normal(shape), device=dev)
    g = xs.asarray(rng.standard_normal(shape), device=dev)
    state = lionk.init(x)
    assert state.momentum.device == dev
    x2, s2 = lionk.step(x, g, state, lr=0.01, weight_decay=0.5, kappa=lionk.kappa.get(kappa[0], **kappa[1]))
    assert x2.device == dev and s2.momentum.device == dev


# ---------------------------------------------------------------------------------------------
# Box invariance of Lion (theory.md §3): λx inside the ℓ∞ unit ball stays there.


@st.composite
def box_configs(draw):
    bname = draw(st.sampled_from(BACKEND_NAMES))
    be = get_backend(bname)
    dtype = draw(st.sampled_from(be.dtypes))
    wd = draw(st.floats(0.05, 8.0))
    lr = draw(st.floats(1e-3, 0.9)) / wd  # lr·λ < 0.9 < 1
    return be, dtype, lr, wd, draw(st.integers(0, 2**31 - 1))


def _box_start(rng, n, radius, dtype):
    """Points in the box |x_i| ≤ radius, including some exactly on the faces ±radius (as
    rounded down into the box in ``dtype``)."""
    x = rng.uniform(-1.0, 1.0, n) * radius
    x[:4] = [radius, -radius, 0.0, radius * 0.999]
    xd = x.astype(np_dtype(dtype))
    too_big = np.abs(xd.astype(np.float64)) > radius
    # a face value that rounded outward in a narrow dtype is nudged back inside
    xd[too_big] = np.nextafter(xd[too_big], np.zeros_like(xd[too_big]))
    return xd


@SETTINGS
@given(box_configs())
def test_sign_box_invariance(cfg) -> None:
    """If ‖x‖_∞ ≤ 1/λ, one Lion step keeps ‖x'‖_∞ ≤ (1/λ)(1 + 4·eps), for any momentum and
    gradient. In exact arithmetic |x'| ≤ (1 − ελ)|x| + ε ≤ 1/λ; in the dtype, rounding
    1 − ε·λ and ε (≤ eps/2 relative each), the product and the difference (≤ eps/2 of
    ≤ 1/λ each) add at most 2·eps/λ; 4·eps leaves a factor 2 of margin."""
    be, dtype, lr, wd, seed = cfg
    rng = np.random.default_rng(seed)
    radius = 1.0 / wd
    n = 16
    x = _box_start(rng, n, radius, dtype)
    g = (rng.standard_normal(n) * 10).astype(np_dtype(dtype))
    m = (rng.standard_normal(n) * 10).astype(np_dtype(dtype))
    x2, _ = lionk.step(be.asarray(x), be.asarray(g), lionk.State(0, be.asarray(m), 0), lr=lr,
                       weight_decay=wd, kappa="sign")
    eps = 2.0**-7 if dtype == "bfloat16" else float(np.finfo(dtype).eps)
    got = np.max(np.abs(be.to_numpy(x2).astype(np.float64)))
    assert got <= radius * (1 + 4 * eps)


@settings(max_examples=50, deadline=None)
@given(bname=st.sampled_from(BACKEND_NAMES), k_wd=st.integers(-3, 3), k=st.integers(1, 7),
       seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 20))
def test_sign_box_exact_with_powers_of_two(bname, k_wd, k, seed, steps) -> None:
    """With λ = 2^a and lr·λ = 2^-k (k ≤ 7, so 1 − lr·λ is exact even in bfloat16), the box
    |x| ≤ 1/λ is preserved EXACTLY over many steps in every dtype: (1 − lr·λ)·(1/λ) + lr = 1/λ
    is exact and correctly rounded operations are monotone, so no rounding can leave it."""
    be = get_backend(bname)
    wd = 2.0**k_wd
    lr = 2.0**-k / wd
    radius = 1.0 / wd
    rng = np.random.default_rng(seed)
    for dtype in be.dtypes:
        x = be.asarray(_box_start(rng, 16, radius, dtype))
        state = lionk.init(x)
        for _ in range(steps):
            g = be.asarray((rng.standard_normal(16) * 5).astype(np_dtype(dtype)))
            x, state = lionk.step(x, g, state, lr=lr, betas=(0.5, 0.9), weight_decay=wd, kappa="sign")
            assert np.max(np.abs(be.to_numpy(x).astype(np.float64))) <= radius, dtype


@settings(max_examples=40, deadline=None)
@given(kappa=st.sampled_from(ALL_KAPPAS), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_kappa_grad_is_odd_and_in_domain(kappa, seed, scale) -> None:
    """Every built-in ∇K is odd (∇K(−y) = −∇K(y), exactly: the step's convention relies on
    it, theory.md §1) and lands in dom K* up to rounding: distance ≤ 16 eps for the textbook
    form (dom K* a ball of radius 1), 16 eps·R for the default, whose ball has radius R (the norm
    κ at scale="rms", quadratic's "auto" as l2's: √n for ℓ2, n^(1/q) for lp; n = 9 here)."""
    name, params = kappa
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(9) * scale
    eps = float(np.finfo(np.float64).eps)
    for k, radius in ((textbook(name, **params), 1.0),
                      (lionk.kappa.get(name, **params), _default_radius(name, params, 9))):
        g, gm = np.asarray(k.grad(y)), np.asarray(k.grad(-y))
        np.testing.assert_array_equal(gm, -g)
        assert float(k.domain_distance(g)) <= 16 * eps * radius, k
        if "auto" in (k.params.get("delta"), k.params.get("e")):  # a length re-measured
            # at every step: no fixed K (quadratic's scale="auto" has l2's K at "rms")
            with pytest.raises(NotImplementedError):
                k.value(y)
        else:
            assert not math.isnan(float(k.value(y)))


def _default_radius(name: str, params: dict, n: int) -> float:
    """The radius of dom K* of ``get(name, **params)`` on n elements, by hand."""
    if "scale" in params:  # set explicitly here: the textbook scale 1
        return 1.0
    if name in ("l2", "relativistic-l2", "quadratic"):
        return math.sqrt(n)
    if name == "lp":
        p = params["p"]
        return n ** ((p - 1.0) / p)  # n^(1/q), q = p/(p − 1)
    return 1.0
