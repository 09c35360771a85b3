"""κ that train at Lion's settings: every built-in at its defaults, the fixed forms of
``lionk.kappa.normalized`` and the ``scaled`` combinator, checked on scikit-learn's bundled
datasets (an MLP, Lion's lr 3e-4 and weight decay 0.1)."""

from __future__ import annotations

import importlib.util
import math
import runpy
import warnings
from pathlib import Path

import numpy as np
import pytest

import lionk

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None

BUILTINS = ["sign", "huber", "deadzone", "relativistic", "quadratic", "l2", "lp",
            "relativistic-l2", "group-l2", "nuclear"]


# ---------------------------------------------------------------------------------------------
# The combinator and the convention, without data.


def test_scaled_is_s_times_k_with_its_conjugate_and_radius() -> None:
    rng = np.random.default_rng(0)
    y = rng.standard_normal(12)
    k = lionk.kappa.get("scaled", kappa=lionk.kappa.get("l2", scale=1.0), scale=3.0)
    lionk.kappa.validate(k)
    np.testing.assert_allclose(k.grad(y), 3.0 * y / np.linalg.norm(y), rtol=1e-15)
    assert float(k.value(y)) == pytest.approx(3.0 * np.linalg.norm(y), rel=1e-15)
    z = y * (5.0 / np.linalg.norm(y))  # ‖z‖ = 5 > s = 3: outside, distance 2
    assert float(k.domain_distance(z)) == pytest.approx(2.0, rel=1e-12)
    assert float(k.conjugate(z)) == math.inf
    assert float(k.conjugate(z * 0.5)) == 0.0
    hub = lionk.kappa.get("scaled", kappa=lionk.kappa.get("huber", delta=0.5), scale=2.0)
    lionk.kappa.validate(hub)  # K_s*(z) = s·K*(z/s): Fenchel-Young holds for the non-norm κ too
    np.testing.assert_array_equal(hub.grad(y), 2.0 * np.clip(y * 2.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="scope='global'"):
        lionk.kappa.get("scaled", kappa=lionk.kappa.get("l2", scope="global"))
    with pytest.raises(ValueError, match="scale"):
        lionk.kappa.get("scaled", scale=0.0)


@pytest.mark.parametrize("name", BUILTINS)
def test_default_and_normalized_gradient_have_sign_rms_at_any_gradient_scale(name: str) -> None:
    """The convention: at the gradients' scale, ∇K has per-element RMS about 1 (sign's), for the
    defaults (whatever that scale) and for the fixed form normalised to it."""
    rng = np.random.default_rng(1)
    for g_rms in (1e-4, 1e-2, 1.0):
        c = rng.standard_normal((64, 32)) * g_rms
        fixed = lionk.kappa.normalized(name, grad_rms=g_rms)
        lionk.kappa.validate(fixed)  # one fixed convex K: the registry's checks hold
        for k in (lionk.kappa.get(name), fixed):
            u = np.asarray(k.grad(c))
            rms = float(np.sqrt(np.mean(u * u)))
            assert 0.9 <= rms <= 1.4, (name, k, g_rms, rms)


def test_textbook_forms_are_a_parameter_away() -> None:
    """scale=1 and a number for the length give the unnormalised κ of theory.md §6."""
    y = np.random.default_rng(2).standard_normal((6, 5)) * 1e-2
    np.testing.assert_array_equal(lionk.kappa.get("l2", scale=1.0).grad(y), y / np.linalg.norm(y))
    np.testing.assert_array_equal(lionk.kappa.get("quadratic", scale=1.0).grad(y), y)
    np.testing.assert_array_equal(lionk.kappa.get("huber", delta=1.0).grad(y), np.clip(y, -1, 1))
    assert lionk.kappa.rms_scale(lionk.kappa.get("l2"), (64, 32)) == 1.0
    assert lionk.kappa.rms_scale(lionk.kappa.get("l2", scale=1.0), (64, 32)) == pytest.approx(
        math.sqrt(2048))
    # the defaults, written out in float64 (independent of the classes): l2 y·√n/‖y‖,
    # quadratic y/RMS(y), huber clip(y/(0.1·RMS(y))), deadzone sign(y)·1{|y| > 0.1·RMS(y)}
    rms = math.sqrt(float(np.mean(y * y)))
    np.testing.assert_allclose(lionk.kappa.get("l2").grad(y), y * math.sqrt(30) /
                               np.linalg.norm(y), rtol=1e-14)
    np.testing.assert_allclose(lionk.kappa.get("quadratic").grad(y), y / rms, rtol=1e-14)
    np.testing.assert_allclose(lionk.kappa.get("huber").grad(y), np.clip(y / (0.1 * rms), -1, 1),
                               rtol=1e-14)
    np.testing.assert_array_equal(lionk.kappa.get("deadzone").grad(y),
                                  np.sign(y) * (np.abs(y) > 0.1 * rms))
    np.testing.assert_allclose(lionk.kappa.get("relativistic").grad(y),
                               y / np.sqrt(y * y + (0.1 * rms) ** 2), rtol=1e-14)


def test_normalized_needs_the_gradient_scale_where_it_has_a_length() -> None:
    with pytest.raises(TypeError, match="grad_rms"):
        lionk.kappa.normalized("huber")
    assert lionk.kappa.normalized("huber", grad_rms=0.02, delta=0.5).params["delta"] == 0.5
    assert lionk.kappa.normalized("sign") == lionk.kappa.get("sign")
    assert lionk.kappa.normalized("nuclear").scale == "rms"


def test_where_the_auto_deadzone_jumps_moves_with_its_input() -> None:
    """The fact the conformance tie accounting reads: deadzone at e="auto" jumps at
    ±0.1·RMS(y) of this input (float64 by hand); a fixed e and sign at their fixed points."""
    y = np.random.default_rng(6).standard_normal((5, 4)) * 3e-3
    e = 0.1 * math.sqrt(float(np.mean(y * y)))
    lo, hi = lionk.kappa.get("deadzone").discontinuities_at(y)
    assert lo == pytest.approx(-e, rel=1e-14) and hi == pytest.approx(e, rel=1e-14)
    u = np.asarray(lionk.kappa.get("deadzone").grad(y))
    assert np.array_equal(u != 0, np.abs(y) > hi)  # the update is zero exactly inside ±e
    assert lionk.kappa.get("deadzone", e=0.2).discontinuities_at(y) == (-0.2, 0.2)
    assert lionk.kappa.get("sign").discontinuities_at(y) == (0.0,)


def test_minimize_reads_a_name_as_the_textbook_problem_and_refuses_an_auto_length() -> None:
    """minimize(kappa="l2", radius=r) is ‖x‖₂ ≤ r (the textbook form: radius states the scale);
    the normalised Kappa object gives the RMS ball; an "auto" length defines no problem."""
    rng = np.random.default_rng(5)
    A = rng.standard_normal((30, 10))
    b = A @ np.ones(10)

    def f(x):
        return 0.5 * float(np.sum((A @ x - b) ** 2))

    def jac(x):
        return A.T @ (A @ x - b)

    r = 0.5  # the unconstrained solution (ones) has ‖x‖₂ = √10 and RMS 1: both balls active
    by_name = lionk.minimize(f, np.zeros(10), jac=jac, kappa="l2", radius=r, maxiter=3000)
    assert by_name.success and np.linalg.norm(by_name.x) == pytest.approx(r, rel=1e-4)
    rms = lionk.minimize(f, np.zeros(10), jac=jac, kappa=lionk.kappa.get("l2"), radius=r,
                         maxiter=3000)
    assert rms.success and np.linalg.norm(rms.x) / math.sqrt(10) == pytest.approx(r, rel=1e-4)
    x0 = np.zeros(10)
    with pytest.raises(ValueError, match="delta=<a number>"):
        lionk.minimize(f, x0, jac=jac, kappa=lionk.kappa.get("huber"), radius=r)
    assert np.all(x0 == 0)


# ---------------------------------------------------------------------------------------------
# Real data.

# The training code is examples/every_kappa.py's (the example users run): its data split, its
# MLP, its first-batch gradient RMS and Lion's weight decay it trains with.
_EXAMPLE = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "every_kappa.py"),
                          run_name="example_every_kappa")
_data, _train, WD = _EXAMPLE["make_data"], _EXAMPLE["train"], _EXAMPLE["WD"]


@pytest.fixture(scope="module")
def torch_one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


FIXED = ["huber", "deadzone", "relativistic", "relativistic-l2", "quadratic"]  # auto at defaults


@pytest.mark.skipif(not (HAVE_TORCH and HAVE_SKLEARN), reason="needs torch and scikit-learn")
@pytest.mark.parametrize("dataset", ["digits", "breast_cancer"])
def test_every_kappa_at_its_defaults_trains_like_sign_at_lions_settings(
        dataset: str, torch_one_thread: None) -> None:
    """Issue 13's bar: every built-in κ at its defaults within 2 accuracy points of sign (or
    better), its induced constraint holding after training (the κ's own distance). Measured
    (600 steps): digits sign 0.976, the others 0.973-0.987; breast_cancer sign 0.965, the
    others 0.965-0.979 (wine, not in the test: sign 0.933, the others 0.933-0.956)."""
    data = _data(dataset)
    ref, _, _ = _train(data, lambda g: "sign")
    assert ref >= (0.95 if dataset == "digits" else 0.93)
    for name in BUILTINS[1:]:
        with warnings.catch_warnings():
            warnings.simplefilter("error", lionk.StallWarning)  # a default never stalls here
            acc, params, _ = _train(data, lambda g, name=name: name)
        assert acc >= ref - 0.02, (dataset, name, acc, ref)
        assert lionk.lyapunov.constraint_violation(params, weight_decay=WD, kappa=name) == 0.0


@pytest.mark.skipif(not (HAVE_TORCH and HAVE_SKLEARN), reason="needs torch and scikit-learn")
@pytest.mark.parametrize("dataset", ["digits", "breast_cancer"])
def test_fixed_normalized_kappa_trains_like_sign_at_lions_settings(
        dataset: str, torch_one_thread: None) -> None:
    """The fixed forms (``normalized(name, grad_rms=first batch)``, a certificate) of the κ
    whose defaults re-measure a length: within 2 points of sign, except quadratic (momentum
    SGD: its step shrinks with the gradient after the first batch set its scale; measured 2.4
    points below on digits, allowed 3: its default, ``scale="auto"``, meets the bar)."""
    data = _data(dataset)
    ref, _, _ = _train(data, lambda g: "sign")
    for name in FIXED:
        acc, params, _ = _train(data, lambda g, name=name: lionk.kappa.normalized(name, grad_rms=g))
        assert acc >= ref - (0.03 if name == "quadratic" else 0.02), (dataset, name, acc, ref)
        kap = lionk.kappa.normalized(name, grad_rms=1.0)  # (the constraint does not use δ)
        assert lionk.lyapunov.constraint_violation(params, weight_decay=WD, kappa=kap) == 0.0


@pytest.mark.skipif(not (HAVE_TORCH and HAVE_SKLEARN), reason="needs torch and scikit-learn")
def test_textbook_forms_do_not_train_at_lions_settings(torch_one_thread: None) -> None:
    """The problem the convention solves (issue 13): at lr 3e-4, huber's δ = 1 and l2's 1/√n
    step leave the MLP near chance on digits (measured 0.107 and 0.253 against sign's 0.976)."""
    data = _data("digits")
    ref, _, _ = _train(data, lambda g: "sign")
    for kap in (lionk.kappa.get("huber", delta=1.0), lionk.kappa.get("l2", scale=1.0)):
        acc, _, _ = _train(data, lambda g, kap=kap: kap)
        assert acc <= ref - 0.3, (kap, acc, ref)
