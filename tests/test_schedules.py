"""Coefficients are run-time arguments: a learning-rate schedule records the step once.

The recorded program (chunked NumPy) and the kernels (numba, CuPy's C body) depend on the κ, the
dtypes and the step function, not on lr, betas or weight_decay: one record per (κ, dtypes,
structure). A 1,000-step cosine schedule must record once and give, step by step, the bytes of
the eager step with the same schedule. (Its cost against a fixed lr is a benchmark row, not a
test: ``python -m benchmarks --only schedule``.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import lionk
from lionk.execution import kernels as _kernels
from lionk.execution import tape as _tape

from ._util import bits, textbook

STEPS = 1000


def cosine(t: int, base: float = 1e-2, steps: int = STEPS) -> float:
    """The usual cosine decay from ``base`` towards zero over ``steps`` steps."""
    return 0.5 * base * (1.0 + math.cos(math.pi * t / steps))


def _count_records(monkeypatch) -> list[int]:
    calls = [0]
    real = _tape.record

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(_tape, "record", counting)
    lionk.clear_caches()  # start from nothing recorded
    return calls


def _schedule_run(execution, n=5000, kappa=None, **kw):
    kappa = textbook("huber") if kappa is None else kappa
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, n).astype(np.float32)
    a = rng.uniform(-1, 1, n).astype(np.float32)
    opt = lionk.LionK(x, lr=cosine(0), weight_decay=0.5, kappa=kappa, execution=execution, **kw)
    for t in range(STEPS):
        opt.lr = cosine(t)
        opt.step(((x * x) * x - x) + a)
    return x, opt


@pytest.mark.parametrize("execution,kw", [
    ("chunked", {"chunk_size": 1024, "threads": 2}),
    pytest.param("compiled", {"threads": 1},
                 marks=pytest.mark.skipif(not _kernels.numba_available(),
                                          reason="numba not installed")),
])
def test_a_cosine_schedule_records_once_and_matches_eager(monkeypatch, execution, kw) -> None:
    calls = _count_records(monkeypatch)
    got, opt = _schedule_run(execution, **kw)
    assert opt.last_execution == execution
    # one record per (kappa, dtypes): the step is recorded twice when first seen (with two
    # coefficient sets, to show the record does not depend on them), never again
    assert calls[0] == 2, calls[0]
    assert opt.execution_report()["steps"] == STEPS
    ref, _ = _schedule_run("eager")
    assert np.array_equal(bits(got), bits(ref))


def test_a_new_weight_decay_and_betas_reuse_the_record(monkeypatch) -> None:
    calls = _count_records(monkeypatch)
    x = np.linspace(-1, 1, 4096, dtype=np.float32)
    ref = x.copy()
    opt = lionk.LionK(x, lr=1e-3, execution="chunked", chunk_size=512)
    eager = lionk.LionK(ref, lr=1e-3, execution="eager")
    for t, (b1, b2, wd) in enumerate([(0.9, 0.99, 0.0), (0.5, 0.9, 0.1), (0.0, 0.0, 2.0),
                                      (0.95, 0.999, 0.3)]):
        for o in (opt, eager):
            o.betas, o.weight_decay, o.lr = (b1, b2), wd, 1e-3 * (t + 1)
            o.step(np.sin(3.0 * ref) + 0.1)
    assert calls[0] == 2
    assert np.array_equal(bits(x), bits(ref))
    assert np.array_equal(bits(opt.state.momentum), bits(eager.state.momentum))


def test_the_cupy_kernel_body_is_one_per_kappa_and_dtypes(monkeypatch) -> None:
    from lionk.core.step import make_hyper, update_leaves

    calls = _count_records(monkeypatch)
    kap = textbook("deadzone")
    bodies = {_kernels.kernel_source(update_leaves, make_hyper(cosine(t), (0.9, 0.99), 0.1), kap,
                                    "float32", "float32").body for t in range(0, STEPS, 50)}
    assert len(bodies) == 1 and calls[0] == 2
