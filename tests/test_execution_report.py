"""No hidden process-wide switches: per-optimizer execution reports, bounded caches,
``lionk.clear_caches()`` and the thread pool shut down at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import lionk
from lionk.core import caches as _caches
from lionk.execution import kernels as _kernels
from lionk.execution import paths as _paths

from ._util import bits, textbook


def test_the_report_of_a_fresh_and_of_a_stepped_optimizer() -> None:
    x = np.zeros(100, np.float32)
    opt = lionk.LionK(x, lr=0.1, execution="eager")
    assert opt.execution_report() == {"requested": "eager", "path": None, "detail": "",
                                      "fallbacks": [], "steps": 0}
    opt.step(np.ones_like(x))
    opt.step(np.ones_like(x))
    assert opt.execution_report() == {"requested": "eager", "path": "eager", "detail": "",
                                      "fallbacks": [], "steps": 2}
    opt = lionk.LionK(np.zeros(100, np.float32), lr=0.1, execution="chunked", chunk_size=16)
    opt.step(np.ones(100, np.float32))
    assert opt.execution_report()["detail"] == "recorded program"


def test_a_torch_compile_failure_changes_that_optimizer_only(monkeypatch) -> None:
    """On main, one failure of torch.compile switched every optimizer of the process to
    another path for good (a module-level list); now it is recorded by the optimizer it
    happened to, and the next optimizer still compiles."""
    torch = pytest.importorskip("torch")
    # on CPU, with numba, "auto" runs the numba kernel; this is about torch.compile
    monkeypatch.setattr(_kernels, "numba_available", lambda: False)
    n = _paths.COMPILE_MIN_ELEMENTS
    compiled_calls = []

    def failing(groups):
        raise RuntimeError("no C++ compiler (simulated)")

    def working(groups):  # stands in for torch.compile: the eager step of every group
        compiled_calls.append(len(groups))
        for xs, gs, ms, h, kappa, *_ in groups:
            new_xs, new_ms = lionk.core.step.update_leaves(xs, gs, ms, h, kappa)
            for dst, src in zip([*xs, *ms], [*new_xs, *new_ms]):
                dst.copy_(src)

    a = torch.zeros(n)
    opt_a = lionk.LionK(a, lr=1e-3)
    monkeypatch.setattr(_paths, "_run_torch_compiled_groups", failing)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        opt_a.step(torch.ones(n))
    report = opt_a.execution_report()
    assert report["path"] in ("chunked", "eager")
    assert "torch.compile failed" in report["fallbacks"][0]
    assert "no C++ compiler (simulated)" in report["fallbacks"][0]
    assert torch.all(a == -1e-3)  # the step still ran (another way)

    monkeypatch.setattr(_paths, "_run_torch_compiled_groups", working)
    b = torch.zeros(n)
    opt_b = lionk.LionK(b, lr=1e-3)
    opt_b.step(torch.ones(n))
    assert opt_b.last_execution == "compiled" and compiled_calls == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no second attempt
        opt_a.step(torch.ones(n))
    assert opt_a.last_execution in ("chunked", "eager") and compiled_calls == [1]


def test_torch_optimizer_reports_per_param_group() -> None:
    torch = pytest.importorskip("torch")
    p1 = torch.nn.Parameter(torch.zeros(10))
    p2 = torch.nn.Parameter(torch.zeros(20))
    opt = lionk.torch.LionK([{"params": [p1]}, {"params": [p2], "lr": 0.5}], lr=0.1,
                            execution="chunked")
    p1.grad = torch.ones(10)
    p2.grad = torch.ones(20)
    opt.step()
    report = opt.execution_report()
    assert report["requested"] == "chunked"
    assert [g["path"] for g in report["groups"]] == ["chunked", "chunked"]
    assert all(g["steps"] == 1 for g in report["groups"])


def test_bounded_cache_is_least_recently_used() -> None:
    cache = _caches.BoundedCache("test", 2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2
    with pytest.raises(ValueError, match="maxsize"):
        _caches.BoundedCache("bad", 0)


def test_every_cache_is_bounded_and_the_recorded_steps_stay_within_it() -> None:
    from lionk.execution import tape

    sizes = _caches.caches()
    assert "execution.tape: recorded steps" in sizes
    assert all(maxsize >= 1 for _, maxsize in sizes.values())
    lionk.clear_caches()
    hyper = lionk.core.step.make_hyper(1e-3, (0.9, 0.99), 0.0)
    for i in range(tape.CACHE_SIZE + 5):  # more distinct user κ than the cache holds
        kap = lionk.kappa.Kappa(f"scaled{i}", grad=lambda y, s=1.0 + i: y * s, exact=True,
                                separable=True)
        assert tape.program_for(lionk.core.step.update_leaves, hyper, kap, "float32",
                                "float32") is not None
    assert len(tape._CACHE) == tape.CACHE_SIZE


def test_clear_caches_empties_every_cache_and_the_pool_and_steps_still_match() -> None:
    from lionk.execution import tape

    x = np.linspace(-1, 1, 50_000, dtype=np.float32)
    ref = x.copy()
    opt = lionk.LionK(x, lr=1e-3, weight_decay=0.1, execution="chunked", chunk_size=4096,
                      threads=2)
    eager = lionk.LionK(ref, lr=1e-3, weight_decay=0.1, execution="eager")
    g = np.cos(5 * ref)
    opt.step(g)
    eager.step(g)
    assert _paths._POOL is not None and len(tape._CACHE) > 0
    lionk.clear_caches()
    assert all(n == 0 for n, _ in _caches.caches().values())
    assert _paths._POOL is None
    opt.step(g)
    eager.step(g)
    assert np.array_equal(bits(x), bits(ref))
    assert opt.execution_report()["steps"] == 2  # the optimizer's own record is kept


def test_the_thread_pool_is_shut_down_at_exit() -> None:
    code = textwrap.dedent("""
        import atexit
        import numpy as np
        import lionk
        from lionk.execution import paths
        x = np.zeros(1 << 16, np.float32)
        lionk.LionK(x, lr=0.1, execution="chunked", chunk_size=1024, threads=2).step(
            np.ones_like(x))
        pool = paths._POOL
        assert pool is not None and len(pool._threads) > 0
        atexit._run_exitfuncs()
        assert paths._POOL is None and pool._shutdown
        assert not any(t.is_alive() for t in pool._threads)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_without_numba_installed_numpy_still_runs_and_says_why() -> None:
    """numba made unimportable (as on an install without the ``numba`` extra): "auto" runs the
    chunked path, bitwise equal to eager, and reports why; "compiled" refuses clearly."""
    code = textwrap.dedent("""
        import sys
        sys.modules["numba"] = None  # import numba now raises ImportError
        import numpy as np
        import lionk
        x = np.linspace(-1, 1, 1 << 18, dtype=np.float32)
        ref = x.copy()
        opt = lionk.LionK(x, lr=1e-3, weight_decay=0.1)
        opt.step(np.cos(3 * ref))
        lionk.LionK(ref, lr=1e-3, weight_decay=0.1, execution="eager").step(np.cos(3 * ref))
        report = opt.execution_report()
        assert report["path"] == "chunked", report
        assert "numba is not installed" in report["fallbacks"][0], report
        assert np.array_equal(x.view(np.uint32), ref.view(np.uint32))
        try:
            lionk.LionK(np.zeros(8, np.float32), execution="compiled").step(np.ones(8, np.float32))
        except ValueError as exc:
            assert "numba is not installed" in str(exc)
        else:
            raise AssertionError("compiled ran without numba")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# The record and the atomic paths together: the record is written with the step, never before.


def test_a_step_that_raises_records_nothing_on_the_numba_path() -> None:
    """np.seterr(all="raise") and an overflow in the last element: the numba kernel's dry run
    raises in the compute phase; nothing is written and the report does not count the step."""
    x = np.linspace(-1, 1, _paths.NUMPY_KERNEL_MIN_ELEMENTS, dtype=np.float32)
    opt = lionk.LionK(x, lr=0.9, kappa=textbook("quadratic"), execution="compiled")
    opt.step(np.ones_like(x))
    assert opt.execution_report()["steps"] == 1
    x[-1] = np.finfo(np.float32).max  # x - lr * (m = g) overflows in the last element
    before, m_before = x.copy(), opt.state.momentum.copy()
    g = np.ones_like(x)
    g[-1] = -np.finfo(np.float32).max
    with np.errstate(all="raise"), pytest.raises(FloatingPointError, match="overflow"):
        opt.step(g)
    assert np.array_equal(bits(x), bits(before))
    report = opt.execution_report()
    assert opt.state.count == 1 and np.array_equal(bits(opt.state.momentum), bits(m_before))
    assert report["steps"] == 1 and report["path"] == "compiled"
    assert report["detail"] == "numba kernel" and report["fallbacks"] == []


def test_auto_on_non_contiguous_numpy_arrays_falls_back_and_says_why() -> None:
    """"auto" picks the numba kernel by size; strided params have no flat view, so the step runs
    eagerly (bitwise) and the reason is in the report; "compiled" refuses naming the leaf."""
    n = 2 * _paths.NUMPY_KERNEL_MIN_ELEMENTS
    base, ref_base = np.zeros(2 * n, np.float32), np.zeros(2 * n, np.float32)
    x, ref = base[::2], ref_base[::2]
    g = np.cos(np.arange(n, dtype=np.float32))
    opt = lionk.LionK({"w": x}, lr=1e-3, weight_decay=0.1)
    opt.step({"w": g})
    lionk.LionK({"w": ref}, lr=1e-3, weight_decay=0.1, execution="eager").step({"w": g})
    assert np.array_equal(bits(base), bits(ref_base))
    report = opt.execution_report()
    assert report["path"] == "eager"
    assert report["fallbacks"] == ["compiled -> eager: the numba kernel needs C-contiguous arrays"]
    with pytest.raises(ValueError, match=r"params\['w'\].*C-contiguous"):
        lionk.LionK({"w": x}, lr=1e-3, execution="compiled").step({"w": g})


def test_numba_kernel_with_a_read_only_gradient_is_bitwise_equal_to_eager() -> None:
    """A read-only gradient is another argument type for numba: compiled in the compute phase
    (on empty pieces), and the step still equals eager bit for bit."""
    n = _paths.NUMPY_KERNEL_MIN_ELEMENTS + 3
    x = np.linspace(-1, 1, n, dtype=np.float64)
    ref = x.copy()
    g = np.sin(7 * x)
    g.flags.writeable = False
    opt = lionk.LionK(x, lr=1e-3, weight_decay=0.1, execution="compiled", threads=2)
    eager = lionk.LionK(ref, lr=1e-3, weight_decay=0.1, execution="eager")
    for _ in range(3):
        opt.step(g)
        eager.step(g)
    assert np.array_equal(bits(x), bits(ref))
    assert np.array_equal(bits(opt.state.momentum), bits(eager.state.momentum))
    assert opt.execution_report()["detail"] == "numba kernel"


def test_a_torch_compile_failure_is_recorded_for_every_group_of_the_call(monkeypatch) -> None:
    """Two param groups compiled in one torch.compile call: when it fails, both groups fall
    back (before anything is written), both records keep the reason and neither tries again."""
    torch = pytest.importorskip("torch")
    # on CPU, with numba, "auto" runs the numba kernel; this is about torch.compile
    monkeypatch.setattr(_kernels, "numba_available", lambda: False)
    n = _paths.COMPILE_MIN_ELEMENTS
    calls = []

    def failing(groups):
        calls.append(len(groups))
        raise RuntimeError("no C++ compiler (simulated)")

    monkeypatch.setattr(_paths, "_run_torch_compiled_groups", failing)
    p1, p2 = torch.nn.Parameter(torch.zeros(n)), torch.nn.Parameter(torch.zeros(n))
    opt = lionk.torch.LionK([{"params": [p1]}, {"params": [p2], "lr": 0.5}], lr=0.1)
    p1.grad, p2.grad = torch.ones(n), torch.ones(n)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        opt.step()
    assert calls == [2]
    assert torch.all(p1 == -0.1) and torch.all(p2 == -0.5)
    groups = opt.execution_report()["groups"]
    assert [g["path"] for g in groups] == ["chunked", "chunked"]
    assert all("no C++ compiler (simulated)" in g["fallbacks"][0] for g in groups)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
    assert calls == [2] and [g["steps"] for g in opt.execution_report()["groups"]] == [2, 2]
