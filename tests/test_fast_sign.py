"""The torch fast sign seam (lionk.core.array_api.native_exact_sign): used only after a
byte-for-byte probe against the nested-where reference passes, and bitwise equal to it."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lionk.core import array_api  # noqa: E402
from lionk.core.kappa import _where_sign, exact_sign  # noqa: E402

INT_OF = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
          torch.float64: torch.int64}


def _values(dtype: torch.dtype) -> torch.Tensor:
    fi = torch.finfo(dtype)
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, fi.tiny,
                            -fi.tiny, fi.smallest_normal / 4, -fi.smallest_normal / 4],
                           dtype=torch.float64).to(dtype)
    nans = (torch.tensor([math.nan, -math.nan], dtype=dtype).view(INT_OF[dtype]) | 3).view(dtype)
    rnd = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return torch.cat([special, nans, rnd.to(dtype)])


@pytest.mark.parametrize("dtype", list(INT_OF), ids=str)
def test_torch_fast_sign_is_bitwise_the_reference(dtype) -> None:
    y = _values(dtype)
    array_api._SIGN_PROBES.clear()
    got = exact_sign(y)
    assert array_api.sign_probe_results()[("torch", str(dtype), "cpu")] is True
    assert torch.equal(got.view(INT_OF[dtype]), _where_sign(y).view(INT_OF[dtype]))
    # the reference itself: NaN (payload kept) -> NaN, ±0 -> +0, else ±1
    ref = _where_sign(y)
    assert torch.equal(torch.isnan(ref), torch.isnan(y))
    assert not torch.signbit(ref[(y == 0)]).any()


def test_failed_probe_falls_back_to_the_reference(monkeypatch) -> None:
    """A backend sign that disagrees on one probe value is never used."""
    real_sign = torch.sign

    def wrong_sign(t):  # keeps −0 as JAX does
        s = real_sign(t)
        return torch.where(t == 0, t, s)

    array_api._SIGN_PROBES.clear()
    monkeypatch.setattr(torch, "sign", wrong_sign)
    y = torch.tensor([-0.0, 1.0, -2.0, math.nan])
    got = exact_sign(y)
    assert array_api.sign_probe_results()[("torch", "torch.float32", "cpu")] is False
    np.testing.assert_array_equal(got.view(torch.int32).numpy(),
                                  _where_sign(y).view(torch.int32).numpy())
    assert not torch.signbit(got[0])
    array_api._SIGN_PROBES.clear()


def test_subclasses_and_compiled_code_use_the_reference() -> None:
    """Tensor subclasses (DTensor, user subclasses) are not probed."""
    class Sub(torch.Tensor):
        pass

    y = torch.tensor([-0.0, 1.0]).as_subclass(Sub)
    assert array_api.native_exact_sign(y, _where_sign) is None
