"""lionk.StallWarning: a run whose updates stay orders of magnitude below lr is reported once,
with the numbers and a fix; sign/Lion at normal settings never is."""

from __future__ import annotations

import importlib.util
import re
import warnings

import numpy as np
import pytest

import lionk
from lionk.execution.stall import StallCheck, due, measure

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_OPTAX = importlib.util.find_spec("optax") is not None


def _grads(rng: np.random.Generator, x: np.ndarray, scale: float) -> np.ndarray:
    """A noisy quadratic's gradient at the scale ``scale``."""
    return scale * ((x - 0.5) + rng.standard_normal(x.shape))


def _stall_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, lionk.StallWarning)]


def test_schedule_and_category() -> None:
    assert [n for n in range(1, 5001) if due(n)] == [10, 100, 1000, 2000, 3000, 4000, 5000]
    assert issubclass(lionk.StallWarning, lionk.LionKWarning)


def test_sign_never_warns_over_2000_steps() -> None:
    rng = np.random.default_rng(0)
    x = {"w": np.zeros((32, 16)), "b": np.zeros(16)}
    opt = lionk.LionK(x, lr=1e-3, weight_decay=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", lionk.StallWarning)
        for _ in range(2000):
            opt.step({k: _grads(rng, v, 1e-2) for k, v in x.items()})
    assert opt._lionk_stall.steps == 2000 and not opt._lionk_stall.fired


def test_huber_far_above_the_gradients_warns_once_with_the_numbers() -> None:
    rng = np.random.default_rng(1)
    x = np.zeros(1000)
    opt = lionk.LionK(x, lr=1e-3, kappa=lionk.kappa.get("huber", delta=1.0))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for i in range(1, 1101):
            opt.step(_grads(rng, x, 1e-4))
            if i == 99:
                assert not _stall_warnings(record)  # one low check (step 10) is not enough
    msgs = _stall_warnings(record)
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert "after 100 steps" in msg and "Kappa('huber', delta=1.0)" in msg
    ratio, g = (float(v) for v in re.search(
        r"RMS has been ([0-9.e+-]+)·lr .* the gradients' RMS is ~([0-9.e+-]+)",
        msg).groups())
    # ∇K(m) = m/δ: the ratio is the momentum's RMS (the gradients' mean 0.5e-4 plus their
    # averaged noise), the gradients' RMS ≈ 1e-4·√(1 + 0.25)
    m_rms = float(np.sqrt(np.mean(opt.state.momentum ** 2)))
    assert 1e-5 < ratio < 1e-4 and ratio == pytest.approx(m_rms, rel=0.5)
    assert g == pytest.approx(1e-4 * np.sqrt(1.25), rel=0.1)
    assert "delta='auto'" in msg and "lionk.kappa.normalized('huber', grad_rms=" in msg
    assert record[[issubclass(w.category, lionk.StallWarning) for w in record].index(True)
                  ].filename == __file__  # points at the user's opt.step call


def test_the_suggested_fix_moves() -> None:
    """normalized('huber', grad_rms=...) with the number of the message: no warning."""
    rng = np.random.default_rng(1)
    x = np.zeros(1000)
    opt = lionk.LionK(x, lr=1e-3, kappa=lionk.kappa.normalized("huber", grad_rms=1e-4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", lionk.StallWarning)
        for _ in range(1000):
            opt.step(_grads(rng, x, 1e-4))


def test_silenced_by_the_category_filter() -> None:
    rng = np.random.default_rng(2)
    x = np.zeros(100)
    opt = lionk.LionK(x, lr=1e-3, kappa=lionk.kappa.get("huber", delta=1.0))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=lionk.StallWarning)
        for _ in range(200):
            opt.step(_grads(rng, x, 1e-4))
    assert not _stall_warnings(record) and opt._lionk_stall.fired


def test_no_extra_kappa_call_on_ordinary_steps() -> None:
    """The check evaluates ∇K only at the due steps (10 and 100 here): 150 steps + 2 calls."""
    calls = []
    huber = lionk.kappa.get("huber", delta=1.0)

    def grad(y):  # type: ignore[no-untyped-def]
        calls.append(1)
        return huber.grad(y)

    k = lionk.kappa.Kappa("counting", grad=grad, value=huber.value, conjugate=huber.conjugate)
    x = np.zeros(10)
    opt = lionk.LionK(x, lr=1e-3, kappa=k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lionk.StallWarning)
        for _ in range(150):
            opt.step(np.full(10, 1e-3))
    assert len(calls) == 152


def test_zero_momentum_and_per_leaf_kappa() -> None:
    """Leaves without gradient (m = 0) are not a stall; a per-leaf κ is measured κ by κ and the
    message names the one that stalls."""
    assert measure(lionk.kappa.get("huber", delta=1.0), [np.zeros(5)]) is None
    assert measure(lionk.kappa.get("huber"), [np.zeros(5)]) is None
    rng = np.random.default_rng(3)
    x = {"w": np.zeros((20, 30)), "b": np.zeros(30), "frozen": np.zeros(7)}
    opt = lionk.LionK(x, lr=1e-3, kappa={"matrices": "nuclear",
                                         "other": lionk.kappa.get("huber", delta=1.0)})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(100):
            g = {k: _grads(rng, v, 1e-4) for k, v in x.items()}
            g["frozen"] = np.zeros(7)
            opt.step(g)
    (msg,) = _stall_warnings(record)
    assert "Kappa('huber', delta=1.0)" in msg and "nuclear" not in msg


def test_stall_check_directly() -> None:
    c = StallCheck(threshold=0.5)
    k = lionk.kappa.get("huber", delta=1.0)
    for _ in range(9):
        c.after_step(lambda: pytest.fail("called on a step that is not due"))  # type: ignore[arg-type,return-value]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(91):
            c.after_step(lambda: [(k, [np.full(4, 0.1)])])
    assert len(_stall_warnings(record)) == 1
    broken = StallCheck()
    for _ in range(100):  # a κ that raises: the check is skipped, the step goes on
        broken.after_step(lambda: [(k, ["not an array"])])  # type: ignore[list-item]
    assert not broken.fired


@pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed")
def test_torch_front_end() -> None:
    import torch

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(64, 8))
    b = torch.nn.Parameter(torch.zeros(8))
    opt = lionk.torch.LionK([{"params": [w]},
                             {"params": [b], "kappa": lionk.kappa.get("huber", delta=1.0)}],
                            lr=1e-3)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(1000):
            w.grad = 1e-2 * torch.randn(64, 8)
            b.grad = 1e-4 * torch.randn(8)
            opt.step()
    (w_msg,) = [w for w in record if issubclass(w.category, lionk.StallWarning)]
    assert "Kappa('huber', delta=1.0)" in str(w_msg.message)
    assert "Kappa('sign')" not in str(w_msg.message)
    assert w_msg.filename == __file__

    opt = lionk.torch.LionK([w, b], lr=1e-3)  # sign everywhere, typical gradients
    with warnings.catch_warnings():
        warnings.simplefilter("error", lionk.StallWarning)
        for _ in range(2000):
            w.grad = 1e-2 * torch.randn(64, 8)
            b.grad = 1e-3 * torch.randn(8)
            opt.step()


@pytest.mark.skipif(not HAVE_OPTAX, reason="optax is not installed")
def test_optax_stall_monitor() -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from lionk.optax import lion_k, stall_monitor

    for kappa, scale, expect in (("sign", 1e-2, 0), ("huber", 1e-4, 0),
                                 (lionk.kappa.get("huber", delta=1.0), 1e-4, 1)):
        tx = optax.chain(optax.clip_by_global_norm(1.0), lion_k(1e-3, kappa=kappa))
        params = {"w": jnp.zeros((16, 8))}
        state = tx.init(params)
        update = jax.jit(tx.update)
        monitor = stall_monitor(kappa)
        rng = np.random.default_rng(4)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            for _ in range(200):
                g = {"w": jnp.asarray(scale * (1 + rng.standard_normal((16, 8))))}
                u, state = update(g, state, params)
                params = optax.apply_updates(params, u)
                monitor(state)
        assert len(_stall_warnings(record)) == expect, kappa
