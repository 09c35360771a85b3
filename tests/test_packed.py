"""The packed torch path (lionk.execution.packed): many small tensors stepped as one flat
array per (dtype, device) group — bitwise the eager path, nothing written when it raises."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lionk  # noqa: E402
import lionk.torch as lt  # noqa: E402
from lionk.core.step import coefficients, update_leaves  # noqa: E402
from lionk.execution.paths import run_inplace  # noqa: E402

from ._util import textbook  # noqa: E402


def _leaves(seed: int):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2), (1,), (11,)]
    dtypes = [torch.float32, torch.float32, torch.float64, torch.bfloat16, torch.float32]
    xs = [torch.randn(s, generator=g, dtype=torch.float64).to(d) for s, d in zip(shapes, dtypes)]
    gs = [torch.randn(s, generator=g, dtype=torch.float64).to(d) for s, d in zip(shapes, dtypes)]
    ms = [torch.randn(s, generator=g, dtype=torch.float64).to(d) for s, d in zip(shapes, dtypes)]
    gs[0][1, 2] = float("nan")
    gs[1][0] = -0.0
    return xs, gs, ms


@pytest.mark.parametrize("kappa", ["sign", "huber", "relativistic", "deadzone"])
def test_packed_is_bitwise_the_eager_step(kappa) -> None:
    """The textbook forms: elementwise (the defaults of the others measure RMS(y) per array)."""
    xs, gs, ms = _leaves(0)
    h = coefficients(0.01, 0.9, 0.99, 0.1)
    k = textbook(kappa)
    ref_x, ref_m = update_leaves(xs, gs, ms, h, k)  # the pure step, nothing written
    xs2, ms2 = [x.clone() for x in xs], [m.clone() for m in ms]
    assert run_inplace(xs2, gs, ms2, h, k, execution="packed") == "packed"
    for got, ref in zip((*xs2, *ms2), (*ref_x, *ref_m)):
        assert got.dtype == ref.dtype
        assert torch.equal(got.view(torch.uint8), ref.contiguous().view(torch.uint8))


def test_packed_refuses_the_default_huber_and_writes_nothing() -> None:
    """The default huber measures δ = 0.1·RMS(y) on each array: not elementwise, so one flat
    array per dtype would mix the arrays' lengths."""
    xs, gs, ms = _leaves(0)
    before = [a.clone() for a in (*xs, *ms)]
    h = coefficients(0.01, 0.9, 0.99, 0.1)
    with pytest.raises(ValueError, match="separable"):
        run_inplace(xs, gs, ms, h, lionk.kappa.get("huber"), execution="packed")
    for a, b in zip((*xs, *ms), before):
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def test_auto_picks_packed_for_a_small_model_and_writes_non_contiguous_params() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    extra = torch.nn.Parameter(torch.randn(10, 5, 2)[..., 0])  # non-contiguous, as torch's tests use
    params = [*model.parameters(), extra]
    for p in params:
        p.grad = torch.randn_like(p)
    copies = [p.detach().clone() for p in params]
    opt = lt.LionK(params, lr=0.01, weight_decay=0.1)
    opt.step()
    assert opt.last_execution == ["packed"]
    ref = lt.LionK([torch.nn.Parameter(c) for c in copies], lr=0.01, weight_decay=0.1,
                   execution="eager")
    for r, p in zip(ref.param_groups[0]["params"], params):
        r.grad = p.grad
    ref.step()
    for r, p in zip(ref.param_groups[0]["params"], params):
        assert torch.equal(r, p)
        assert torch.equal(ref.state[r]["exp_avg"], opt.state[p]["exp_avg"])


def test_packed_raising_writes_nothing(monkeypatch) -> None:
    xs, gs, ms = _leaves(1)
    before = [a.clone() for a in (*xs, *ms)]
    h = coefficients(0.01, 0.9, 0.99, 0.1)
    k = lionk.kappa.get("sign")
    calls = {"n": 0}
    import lionk.execution.packed as packed

    real = packed.update_leaves

    def fail_on_second_group(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise FloatingPointError("injected")
        return real(*a, **kw)

    monkeypatch.setattr(packed, "update_leaves", fail_on_second_group)
    with pytest.raises(FloatingPointError):
        run_inplace(xs, gs, ms, h, k, execution="packed")
    for a, b in zip((*xs, *ms), before):
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    np.testing.assert_equal(calls["n"], 2)
