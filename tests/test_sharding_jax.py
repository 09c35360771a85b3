"""``lionk.step`` under ``jax.jit`` on sharded params (``NamedSharding`` over 4 host CPU devices).

``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before jax is imported, so the
runs happen in a fresh interpreter (:func:`conformance.distributed.check_jax_sharding`): a 2 × 2 mesh,
the matrix leaf sharded along both axes, the vector leaf over all four devices.

* With ``--xla_cpu_max_isa=SSE4_2`` (no FMA contraction): exact κ bitwise identical to NumPy and
  to the unsharded jitted run over 20 free-running steps; norm κ (per tensor and global, whose
  norm XLA reduces across devices) in the ulp tier.
* Without it: every κ in the ulp tier (teacher-forced, ≤ 8 ulps of the terms' magnitudes).
* Params and momentum keep the params' sharding at every step.
"""

from __future__ import annotations

import pytest

pytest.importorskip("jax")

from conformance.distributed import check_jax_sharding  # noqa: E402


@pytest.fixture(scope="module")
def sse42_rows():
    return check_jax_sharding(devices=4, steps=20, sse42=True)


def test_exact_kappa_bitwise_under_sse42(sse42_rows):
    exact = [r for r in sse42_rows if r["kappa"] in ("sign", "huber")]
    assert len(exact) == 4  # 2 κ × float32/float64
    for r in exact:
        assert r["expected"] == "bitwise" and r["tier"] == "bitwise", r
        assert r["bitwise_vs_unsharded"], r
        assert r["max_ulp"] == 0.0


def test_norm_kappa_ulp_with_cross_device_norm(sse42_rows):
    norm = [r for r in sse42_rows if r["kappa"].startswith("l2")]
    assert {r["kappa"] for r in norm} == {"l2", "l2:global"}
    for r in norm:
        assert r["expected"] == "ulp" and r["tier"] in ("ulp", "bitwise"), r
        assert r["max_ulp"] <= 8
        # free-running 20 steps vs the unsharded jit: the per-device partial sums only change
        # the last bits (a norm over one device's block alone would be off by O(1))
        assert r["ulp_vs_unsharded"] < 64, r


def test_shardings_preserved(sse42_rows):
    for r in sse42_rows:
        assert r["sharding_preserved"], r
        assert r["specs"] == {"b": "P(('x', 'y'),)", "w": "P('x', 'y')"}, r
        assert r["momentum_specs"] == r["specs"], r


def test_fma_contraction_is_ulp_tier():
    rows = check_jax_sharding(devices=4, steps=20, sse42=False, kappas=("sign", "l2:global"),
                              dtypes=("float32",))
    for r in rows:
        assert r["expected"] == "ulp" and r["tier"] in ("ulp", "bitwise"), r
        assert r["sharding_preserved"], r
