"""``lionk.step`` on ``dask.array`` arrays: lazy, chunk by chunk, bitwise equal to NumPy.

array-api-compat gives dask arrays an array-API namespace, so the one step (``update_leaves``)
builds a dask graph: nothing is computed by ``lionk.step``, each output chunk of an elementwise
κ depends only on the same chunk of params, gradients and momentum, and the NumPy kernels that
finally run are the reference's, so exact κ are bitwise identical to NumPy.

* lazy + chunk-wise: proved by reading the inputs through a recorder (which slices were read);
* a ``dask.distributed.LocalCluster`` with 2 worker *processes* (``processes=True``): 20-step
  trajectories of every exact κ, bitwise after the 20 steps;
* the conformance checks on the ``dask`` backend with the synchronous scheduler (20-step
  trajectories compared at every step; a norm κ, whose norm is a sum of per-chunk sums, in the
  ulp tier; the suite's full 200-step row is opt-in: LIONK_CONFORMANCE_DASK=1).
"""

from __future__ import annotations

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

import lionk  # noqa: E402

from ._util import assert_bitwise_equal, textbook  # noqa: E402

EXACT = ["sign", "huber", "deadzone", "quadratic"]
STEPS = 20
SHAPE, CHUNKS = (24, 10), (12, 5)  # 2 × 2 chunks
KW = {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.5}


def draw(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    mag = rng.uniform(0.1, 1.5, size=shape)
    return np.where(rng.random(shape) < 0.5, -mag, mag).astype(dtype)


def grad(x, a):
    """f = Σ x⁴/4 − x²/2 + a·x: only correctly rounded + − ×, the same on numpy and dask."""
    return ((x * x) * x - x) + a


def kappa_of(spec):
    """The textbook κ (huber, deadzone, quadratic elementwise and exact; l2 at scale=1)."""
    return textbook(spec)


class Recorder:
    """An array-like that records which slices dask reads from it."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim = a, a.shape, a.dtype, a.ndim
        self.reads = []

    def __getitem__(self, idx):
        out = self.a[idx]
        if out.size:
            self.reads.append(tuple((s.start, s.stop) for s in idx))
        return out


def test_step_is_lazy_and_chunkwise():
    x0, g0, m0 = (draw(s, SHAPE, np.float32) for s in (1, 2, 3))
    # the default huber measures its length on the whole array (0.1·RMS(y)): not chunk-local
    for spec, kappa, local in (("sign", kappa_of("sign"), True),
                               ("huber", kappa_of("huber"), True),
                               ("l2:global", kappa_of("l2:global"), False),
                               ("huber default", lionk.kappa.get("huber"), False)):
        rec = [Recorder(a) for a in (x0, g0, m0)]
        x, g, m = (da.from_array(r, chunks=CHUNKS, asarray=True) for r in rec)
        computed = []
        with dask.callbacks.Callback(start=lambda dsk, computed=computed: computed.append(len(dsk))):
            nx, st = lionk.step(x, g, lionk.State(0, m, 0), kappa=kappa, **KW)
        assert computed == [], "lionk.step computed something"
        assert isinstance(nx, da.Array) and isinstance(st.momentum, da.Array)
        assert nx.chunks == x.chunks and st.momentum.chunks == x.chunks
        for r in rec:
            r.reads.clear()
        block = np.asarray(nx.blocks[1, 0].compute(scheduler="sync"))
        want = lionk.step(x0, g0, lionk.State(0, m0, 0), kappa=kappa, **KW)[0]
        if local:
            assert_bitwise_equal(block, want[12:, :5], spec)
        wanted = ((12, 24), (0, 5))
        if local:  # an elementwise κ: the block needs the same block of each input, no more
            assert all(r.reads == [wanted] for r in rec), [r.reads for r in rec]
        else:  # one norm over all chunks: every chunk of c is read
            assert len(set(rec[1].reads)) == 4


def test_nan_policy_on_lazy_arrays():
    x0, g0, m0 = (draw(s, SHAPE, np.float64) for s in (1, 2, 3))
    g0[3, 4] = np.nan
    x, g, m = (da.from_array(a, chunks=CHUNKS) for a in (x0, g0, m0))
    # "skip" runs without a Python branch (dask values are not concrete): selected with where
    nx, st = lionk.step(x, g, lionk.State(0, m, 0), nan_policy="skip", **KW)
    assert_bitwise_equal(np.asarray(nx), x0, "skipped x")
    assert int(st.skipped.compute()) == 1 and int(st.count.compute()) == 0
    with pytest.raises(ValueError, match="needs concrete gradients"):
        lionk.step(x, g, lionk.State(0, m, 0), nan_policy="raise", **KW)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def trajectories(specs, dtype, lazy, chunks=CHUNKS):
    """Per κ: [(x_t, m_t) for t in 0..STEPS], lazily on dask or eagerly on numpy."""
    out = {}
    x0, a0 = draw(11, SHAPE, dtype), draw(12, SHAPE, dtype)
    for spec in specs:
        if lazy:
            x, a = da.from_array(x0, chunks=chunks), da.from_array(a0, chunks=chunks)
        else:
            x, a = x0.copy(), a0
        st = lionk.init(x)
        traj = [(x, st.momentum)]
        for _ in range(STEPS):
            x, st = lionk.step(x, grad(x, a), st, kappa=kappa_of(spec), **KW)
            traj.append((x, st.momentum))
        out[spec] = traj
    return out


def test_bitwise_on_a_local_cluster_of_two_worker_processes(client):
    """Every exact κ in float32 and sign in float64, 20 steps built lazily and computed on the
    cluster in one go (dask fuses each chunk's 20-step chain into a few tasks), against NumPy.
    Leaves in two chunks, one per worker process. Per-step comparisons on the synchronous
    scheduler: test_conformance_checks_on_the_dask_backend."""
    from dask.distributed import get_task_stream

    cases = {"float32": EXACT, "float64": ["sign"]}
    lazy = {dt: {k: tr[-1] for k, tr in trajectories(specs, dt, True, chunks=(12, 10)).items()}
            for dt, specs in cases.items()}
    with get_task_stream(client) as ts:
        got = client.compute(lazy, sync=True)
    assert len({t["worker"] for t in ts.data}) == 2, "both workers should have run tasks"
    for dt, specs in cases.items():
        ref = trajectories(specs, dt, False)
        for spec in specs:
            (gx, gm), (rx, rm) = got[dt][spec], ref[spec][-1]
            assert_bitwise_equal(gx, rx, f"{spec} {dt} x after {STEPS} steps")
            assert_bitwise_equal(gm, rm, f"{spec} {dt} m after {STEPS} steps")


def test_conformance_checks_on_the_dask_backend():
    """The conformance suite's own checks on the ``dask`` backend, 20-step trajectories (its
    full 200-step row is opt-in: LIONK_CONFORMANCE_DASK=1)."""
    from conformance import checks, runner
    from conformance.backends import dask_backend, discover

    ref, dsk = discover(["numpy"])[0], dask_backend()
    assert dsk.name == "dask" and dsk.expected_exact_tier == "bitwise"
    for spec in ("sign",):  # free-running, every step compared, 4 problems
        bw = checks.check_bitwise(dsk, ref, runner.make_kappa(spec), "float32", 20)
        assert bw.ok, bw.detail
    ulp = checks.check_ulp(dsk, ref, runner.make_kappa("l2:global"), "float64", 20)
    assert ulp.ok, ulp.detail
