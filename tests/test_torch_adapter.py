"""``lionk.torch.LionK``, the ``torch.optim.Optimizer`` adapter.

* Bitwise tier: the adapter's trajectory equals :func:`lionk.step` on the same tensors and a
  hand-written NumPy reference (tests/_util.py) bit for bit, for every exact κ.
* Ulp tier, teacher-forced against ``lion_pytorch.Lion`` on a real MLP.
* Param groups, closures, maximize, nan_policy, dtypes, every kind of lr scheduler, GradScaler.
* Checkpoints: torch's state_dict layout, exact resumption, dtype/device casting, and rejection
  of mismatched or foreign state dicts with nothing overwritten.
* Bad input: each a clear error naming the argument, and nothing changed.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import math
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lionk  # noqa: E402
from lionk.torch import LionK  # noqa: E402

from ._util import EXACT_KAPPAS, assert_bitwise_equal, np_reference_step, np_sign  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TDT = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
       "float64": torch.float64}
SHAPES = [(5, 3), (3,), (1,)]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The models here are tiny: one intra-op thread is faster, and it keeps the timings of this
    module stable when other processes load the CPUs (OpenMP threads spin-wait under contention).
    Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# helpers


def tnp(t):
    """A numpy copy of a float16/32/64 tensor (same dtype)."""
    return t.detach().cpu().numpy().copy()


def tbits(t):
    """A tensor's bit pattern as an int64 numpy array (any floating dtype, bfloat16 included)."""
    t = t.detach().cpu().contiguous()
    iv = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.view(iv).numpy().astype(np.int64)


def assert_tensor_bitwise(a, b, what=""):
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    diff = tbits(a) != tbits(b)
    if diff.any():
        raise AssertionError(f"{what}: {int(diff.sum())} of {diff.size} elements differ in their bits")


def make_params(dtype=torch.float32, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype))
            for s in shapes]


def make_grads(params, gen):
    """Gradients with a spread of magnitudes (drawn in float64, rounded once to the dtype)."""
    return [(torch.randn(p.shape, generator=gen, dtype=torch.float64)
             * 10.0 ** torch.randint(-2, 2, p.shape, generator=gen)).to(p.dtype) for p in params]


def snapshot(opt):
    """Everything an optimizer could change: params, state and groups (κ objects by name)."""
    def norm(v):
        if isinstance(v, lionk.kappa.Kappa):
            return ("Kappa", v.name, tuple(sorted(v.params.items())))
        return v
    groups = [{k: norm(v) for k, v in g.items() if k != "params"} for g in opt.param_groups]
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    state = {}
    for p, st in opt.state.items():
        state[id(p)] = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v)
                        for k, v in st.items()}
    return copy.deepcopy(groups), params, ids, state


def assert_unchanged(opt, snap, what="optimizer"):
    groups, params, ids, state = snapshot(opt)
    assert groups == snap[0], f"{what}: param_groups changed"
    assert ids == snap[2], f"{what}: params replaced"
    for k, (a, b) in enumerate(zip(params, snap[1])):
        assert_tensor_bitwise(a, b, f"{what}: param {k}")
    assert state.keys() == snap[3].keys(), f"{what}: state entries changed"
    for pid, st in state.items():
        assert st.keys() == snap[3][pid].keys()
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                assert_tensor_bitwise(v, snap[3][pid][k], f"{what}: state {k}")
            else:
                assert v == snap[3][pid][k], f"{what}: state {k}"


def mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(),
                               torch.nn.Linear(32, 2)).to(dtype)


def data(n=128, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 8, generator=g).to(dtype)
    y = (X[:, 0] * X[:, 1] > 0).long()
    return X, y


def loss_backward(model, X, y, idx=None):
    if idx is not None:
        X, y = X[idx], y[idx]
    loss = torch.nn.functional.cross_entropy(model(X), y)
    loss.backward()
    return loss


# ---------------------------------------------------------------------------------------------
# import


def test_lionk_torch_is_lazy() -> None:
    """``import lionk`` does not import torch; ``lionk.torch`` does, on first access."""
    code = ("import sys, lionk; assert 'torch' not in sys.modules; "
            "LionK = lionk.torch.LionK; assert 'torch' in sys.modules; "
            "import torch; assert issubclass(LionK, torch.optim.Optimizer)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# bitwise tier


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("kname", "kparams", "np_grad"), EXACT_KAPPAS,
                         ids=[k[0] for k in EXACT_KAPPAS])
def test_bitwise_equal_to_lionk_step_and_numpy(dtype, kname, kparams, np_grad) -> None:
    """50 steps with weight decay: params and exp_avg equal, bit for bit, (a) lionk.step on
    clones of the same tensors and (b) the hand-written NumPy reference, after every step."""
    kap = lionk.kappa.get(kname, **kparams)
    kw = dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.3)
    params = make_params(TDT[dtype])
    opt = LionK(params, kappa=kap, **kw)
    ref = [p.detach().clone() for p in params]
    st = lionk.init(ref)
    xn = [tnp(p) for p in params]
    mn = [np.zeros_like(x) for x in xn]
    gen = torch.Generator().manual_seed(1)
    for t in range(50):
        gs = make_grads(params, gen)
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        ref, st = lionk.step(ref, gs, st, kappa=kap, **kw)
        for k, (x, g) in enumerate(zip(xn, gs)):
            xn[k], mn[k] = np_reference_step(x, tnp(g), mn[k], lr=kw["lr"], betas=kw["betas"],
                                             wd=kw["weight_decay"], grad_k=np_grad)
        for k, p in enumerate(params):
            m = opt.state[p]["exp_avg"]
            assert opt.state[p]["step"] == t + 1
            assert_tensor_bitwise(p.grad, gs[k], "p.grad is not modified")
            assert_tensor_bitwise(p.detach(), ref[k], f"step {t} param {k} vs lionk.step")
            assert_tensor_bitwise(m, st.momentum[k], f"step {t} exp_avg {k} vs lionk.step")
            assert_bitwise_equal(tnp(p), xn[k], f"step {t} param {k} vs numpy")
            assert_bitwise_equal(tnp(m), mn[k], f"step {t} exp_avg {k} vs numpy")
    # the trajectory moved (a test of a no-op would pass too)
    assert not torch.equal(params[0].detach(), make_params(TDT[dtype])[0].detach())


@pytest.mark.parametrize(("dtype", "state_dtype"), [("float16", None), ("bfloat16", None),
                                                    ("bfloat16", "float32"), ("float32", "float64")])
def test_half_precision_and_state_dtype_match_lionk_step(dtype, state_dtype) -> None:
    """float16/bfloat16 params, optionally with a wider momentum: exp_avg has state_dtype and the
    trajectory equals lionk.step with init(state_dtype=...) bit for bit (one implementation)."""
    sdt = TDT[state_dtype] if state_dtype else None
    params = make_params(TDT[dtype])
    opt = LionK(params, lr=0.01, weight_decay=0.3, state_dtype=state_dtype)
    ref = [p.detach().clone() for p in params]
    st = lionk.init(ref, state_dtype=sdt)
    gen = torch.Generator().manual_seed(2)
    for t in range(20):
        gs = make_grads(params, gen)
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        ref, st = lionk.step(ref, gs, st, lr=0.01, weight_decay=0.3)
        for k, p in enumerate(params):
            m = opt.state[p]["exp_avg"]
            assert p.dtype == TDT[dtype] and m.dtype == (sdt or TDT[dtype])
            assert_tensor_bitwise(p.detach(), ref[k], f"step {t} param {k}")
            assert_tensor_bitwise(m, st.momentum[k], f"step {t} exp_avg {k}")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_reaches_the_box_edge(dtype) -> None:
    """Semantic tier: f(x) = ‖x − 2‖², λ = 1: Lion converges to the box edge x = 1/λ = 1.

    In half precision each step rounds x by up to about one ulp ≤ eps (for |x| < 2) while the
    decay pulls it back by lr·wd·|x − 1|, so x settles within eps/(lr·wd) of the edge (fp16:
    0.0195, bf16: 0.156 here; measured 0.009 and 0.02)."""
    lr, wd = 0.05, 1.0
    x = torch.nn.Parameter(torch.tensor([5.0, -3.0, 0.0, 0.5], dtype=TDT[dtype]))
    opt = LionK([x], lr=lr, weight_decay=wd, state_dtype="float32")
    for _ in range(400):
        opt.zero_grad()
        ((x.float() - 2.0) ** 2).sum().backward()
        opt.step()
    tol = torch.finfo(TDT[dtype]).eps / (lr * wd)
    assert torch.all((x.detach().float() - 1.0).abs() <= tol), (x, tol)
    assert opt.state[x]["exp_avg"].dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# ulp tier against lion_pytorch


def test_teacher_forced_against_lion_pytorch() -> None:
    """100 steps of a 2-layer MLP. lion_pytorch.Lion runs free; before each step its params and
    exp_avg are copied into LionK and both take one step with the same gradients.

    Expected differences, from the operations each library uses:

    * params: ``lr * sign(c)`` is exact (±lr or 0) and both compute ``fl(fl((1 - lr*wd) * x) -
      lr*u)``, so params must be bitwise equal except at sign ties (below): k = 0.
    * exp_avg: lion_pytorch computes ``fl(fl(b2*m) + (1-b2)*g)`` with one rounding (fused
      ``add_(alpha=)``), lionk ``fl(fl(b2*m) + fl((1-b2)*g))``. The difference is at most
      ½ ulp of (1-b2)*g plus ½ ulp of each result, i.e. ≤ 1.5 ulp of S = max(|m'|, |b2*m|,
      |(1-b2)*g|). (Measured relative to m' alone it is unbounded under cancellation.)
    * ties: elements whose exact c = b1*m + (1-b1)*g is within 2 ulp of S_c = max(|b1*m|,
      |(1-b1)*g|) of 0, where the two roundings of c may give different signs. Counted; they
      must be a tiny fraction.
    """
    lion_pytorch = pytest.importorskip("lion_pytorch")
    kw = dict(lr=3e-3, betas=(0.9, 0.99), weight_decay=0.5)
    b1, b2 = kw["betas"]
    A, B = mlp(0), mlp(0)
    oa = lion_pytorch.Lion(A.parameters(), **kw)
    ob = LionK(B.parameters(), **kw)
    X, y = data(256)
    gen = torch.Generator().manual_seed(3)
    f32 = np.float32
    sp = lambda a: np.spacing(np.abs(a).astype(np.float32)).astype(np.float64)  # noqa: E731
    max_ulp_x = max_ulp_m = 0.0
    ties = total = 0
    for t in range(100):
        oa.zero_grad()
        loss_backward(A, X, y, torch.randint(0, 256, (64,), generator=gen))
        pre = []
        with torch.no_grad():
            for pa, pb in zip(A.parameters(), B.parameters()):
                pb.copy_(pa)
                pb.grad = pa.grad.clone()
                m = oa.state[pa]["exp_avg"].clone() if t else torch.zeros_like(pa)
                if t:
                    ob.state[pb]["exp_avg"].copy_(m)
                pre.append((pa.grad.numpy().astype(np.float64), m.numpy().astype(np.float64)))
        oa.step()
        ob.step()
        for (g, m), pa, pb in zip(pre, A.parameters(), B.parameters()):
            bm, gc = float(f32(b1)) * m, float(f32(1 - b1)) * g  # exact in float64
            tie = np.abs(bm + gc) <= 2 * sp(np.maximum(np.abs(bm), np.abs(gc)))
            ties += int(tie.sum())
            total += tie.size
            xa, xb = tnp(pa).astype(np.float64), tnp(pb).astype(np.float64)
            ux = np.abs(xa - xb)[~tie] / sp(xa[~tie])
            ma = oa.state[pa]["exp_avg"].numpy().astype(np.float64)
            mb = ob.state[pb]["exp_avg"].numpy().astype(np.float64)
            S = np.maximum.reduce([np.abs(ma), np.abs(float(f32(b2)) * m),
                                   np.abs(float(f32(1 - b2)) * g)])
            um = np.abs(ma - mb) / sp(S)
            max_ulp_x = max(max_ulp_x, float(ux.max(initial=0.0)))
            max_ulp_m = max(max_ulp_m, float(um.max()))
            assert ux.max(initial=0.0) == 0.0, f"step {t}: params differ off the sign ties"
            assert um.max() <= 1.5, f"step {t}: exp_avg differs by {um.max()} ulp of S"
    assert ties <= 1e-3 * total, f"{ties} sign ties of {total} elements"
    # the comparison is not vacuous: lion_pytorch's fused forms do round differently
    assert max_ulp_m > 0.0
    print(f"lion_pytorch teacher-forced: max ulp params {max_ulp_x}, exp_avg {max_ulp_m} "
          f"(of S), ties {ties}/{total}")


# ---------------------------------------------------------------------------------------------
# param groups, closure, maximize, grad None


def test_param_groups_use_their_own_hyperparameters() -> None:
    """Each group is one lionk.step call with its own lr, betas, weight_decay, κ and maximize."""
    pa, pb = make_params(seed=4), make_params(seed=5)
    huber = lionk.kappa.get("huber", delta=0.5)
    opt = LionK([{"params": pa},
                 {"params": pb, "lr": 3e-3, "betas": (0.8, 0.95), "weight_decay": 0.0,
                  "kappa": huber, "maximize": True}],
                lr=1e-2, weight_decay=0.2)
    ra, rb = [p.detach().clone() for p in pa], [p.detach().clone() for p in pb]
    sa, sb = lionk.init(ra), lionk.init(rb)
    gen = torch.Generator().manual_seed(6)
    for t in range(10):
        ga, gb = make_grads(pa, gen), make_grads(pb, gen)
        for p, g in zip(pa + pb, ga + gb):
            p.grad = g.clone()
        opt.step()
        ra, sa = lionk.step(ra, ga, sa, lr=1e-2, weight_decay=0.2)
        rb, sb = lionk.step(rb, [-g for g in gb], sb, lr=3e-3, betas=(0.8, 0.95), kappa=huber)
        for p, r in zip(pa + pb, ra + rb):
            assert_tensor_bitwise(p.detach(), r, f"step {t}")
        for p, g in zip(pb, gb):  # maximize used a negated copy: p.grad is untouched
            assert_tensor_bitwise(p.grad, g, "p.grad")


def test_global_scope_kappa_spans_one_param_group() -> None:
    """l2 with scope='global': one norm over each group's params (not over all groups)."""
    kap = lionk.kappa.get("l2", scope="global", scale=1.0)
    pa, pb = make_params(seed=7), make_params(seed=8, shapes=[(4,), (2, 2)])
    opt = LionK([{"params": pa}, {"params": pb}], lr=0.05, kappa=kap)
    both = LionK([p2 for p2 in (torch.nn.Parameter(p.detach().clone()) for p in pa + pb)],
                 lr=0.05, kappa=kap)
    ra, rb = [p.detach().clone() for p in pa], [p.detach().clone() for p in pb]
    gen = torch.Generator().manual_seed(9)
    ga, gb = make_grads(pa, gen), make_grads(pb, gen)
    for p, g in zip(pa + pb, ga + gb):
        p.grad = g.clone()
    for p, g in zip(both.param_groups[0]["params"], ga + gb):
        p.grad = g.clone()
    opt.step()
    both.step()
    ra, _ = lionk.step(ra, ga, lionk.init(ra), lr=0.05, kappa=kap)
    rb, _ = lionk.step(rb, gb, lionk.init(rb), lr=0.05, kappa=kap)
    for p, r in zip(pa + pb, ra + rb):
        assert_tensor_bitwise(p.detach(), r, "group-wise global norm")
    # per group, the update has ℓ2 norm lr (one ball per group) ...
    for ps, r0 in ((pa, make_params(seed=7)), (pb, make_params(seed=8, shapes=[(4,), (2, 2)]))):
        d = torch.cat([(p.detach() - q.detach()).double().ravel() for p, q in zip(ps, r0)])
        assert math.isclose(float(d.norm()), 0.05, rel_tol=1e-5)
    # ... while one group holding everything has one norm: different updates
    assert not all(torch.equal(p.detach(), q.detach())
                   for p, q in zip(pa + pb, both.param_groups[0]["params"]))


def test_params_without_grad_are_skipped_and_state_is_lazy() -> None:
    params = make_params(seed=10)
    opt = LionK(params, lr=0.01)
    assert len(opt.state) == 0
    before = [p.detach().clone() for p in params]
    params[0].grad = torch.ones_like(params[0])
    params[2].grad = -torch.ones_like(params[2])
    opt.step()
    assert set(map(id, opt.state)) == {id(params[0]), id(params[2])}
    assert_tensor_bitwise(params[1].detach(), before[1], "param without grad")
    for p in (params[0], params[2]):
        st = opt.state[p]
        assert set(st) == {"step", "exp_avg"} and st["step"] == 1 and type(st["step"]) is int
        assert st["exp_avg"].dtype == p.dtype and st["exp_avg"].shape == p.shape
        assert torch.equal(st["exp_avg"], (1 - 0.99) * p.grad)  # zeros at creation, then one step
    params[1].grad = torch.ones_like(params[1])
    opt.step()
    assert opt.state[params[1]]["step"] == 1 and opt.state[params[0]]["step"] == 2


def test_closure_runs_with_grad_enabled_and_returns_its_loss() -> None:
    model = mlp(11)
    X, y = data()
    opt = LionK(model.parameters(), lr=1e-3)
    calls = []

    def closure():
        opt.zero_grad()
        calls.append(torch.is_grad_enabled())
        return loss_backward(model, X, y)

    with torch.no_grad():  # the closure still gets gradients
        loss = opt.step(closure)
    assert calls == [True] and isinstance(loss, torch.Tensor) and loss.ndim == 0
    assert all(opt.state[p]["step"] == 1 for p in model.parameters())
    assert opt.step() is None


def test_tensor_lr_equals_float_lr() -> None:
    pa, pb = make_params(seed=12), make_params(seed=12)
    oa = LionK(pa, lr=0.01)
    ob = LionK(pb, lr=torch.tensor(0.01))
    for p, q in zip(pa, pb):
        p.grad = torch.full_like(p, 0.5)
        q.grad = torch.full_like(q, 0.5)
    oa.step()
    ob.step()
    for p, q in zip(pa, pb):
        assert_tensor_bitwise(p.detach(), q.detach(), "tensor lr")


# ---------------------------------------------------------------------------------------------
# nan_policy


def _nan_setup(policy0, policy1):
    pa, pb = make_params(seed=13), make_params(seed=14)
    opt = LionK([{"params": pa, "nan_policy": policy0}, {"params": pb, "nan_policy": policy1}],
                lr=0.01)
    for p in pa + pb:
        p.grad = torch.ones_like(p)
    opt.step()  # state exists
    for p in pa + pb:
        p.grad = torch.full_like(p, -0.5)
    pb[1].grad[0] = float("nan")
    return opt, pa, pb


def test_nan_policy_raise_names_the_param_and_changes_nothing() -> None:
    opt, pa, pb = _nan_setup("propagate", "raise")
    snap = snapshot(opt)
    grads = [p.grad.clone() for p in pa + pb]
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[1\]\.grad: expected "
                                         r"finite values \(nan_policy='raise'\); received 1 non-finite"):
        opt.step()
    assert_unchanged(opt, snap)  # group 0 (propagate, finite) was not written either
    for p, g in zip(pa + pb, grads):
        assert_tensor_bitwise(p.grad, g, "p.grad")


def test_nan_policy_skip_leaves_the_group_and_counts() -> None:
    opt, pa, pb = _nan_setup("propagate", "skip")
    before_b = [p.detach().clone() for p in pb]
    mom_b = [opt.state[p]["exp_avg"].clone() for p in pb]
    before_a = [p.detach().clone() for p in pa]
    opt.step()
    assert opt.param_groups[1]["skipped"] == 1 and opt.param_groups[0]["skipped"] == 0
    for p, x, m in zip(pb, before_b, mom_b):
        assert_tensor_bitwise(p.detach(), x, "skipped param")
        assert_tensor_bitwise(opt.state[p]["exp_avg"], m, "skipped exp_avg")
        assert opt.state[p]["step"] == 1
    for p, x in zip(pa, before_a):  # the other group stepped
        assert not torch.equal(p.detach(), x) and opt.state[p]["step"] == 2
    assert opt.state_dict()["param_groups"][1]["skipped"] == 1


def test_nan_policy_propagate_computes_with_nan() -> None:
    opt, pa, pb = _nan_setup("propagate", "propagate")
    opt.step()
    assert pb[1].shape == (3,)
    assert torch.isnan(pb[1].detach()[0]) and torch.isnan(opt.state[pb[1]]["exp_avg"][0])
    assert torch.isfinite(pb[1].detach()[1:]).all() and torch.isfinite(pb[0].detach()).all()
    assert opt.param_groups[1]["skipped"] == 0 and opt.state[pb[1]]["step"] == 2


# ---------------------------------------------------------------------------------------------
# lr schedulers


def _schedulers():
    lr_sch = torch.optim.lr_scheduler
    return {
        "StepLR": lambda o: lr_sch.StepLR(o, step_size=3, gamma=0.5),
        "CosineAnnealingLR": lambda o: lr_sch.CosineAnnealingLR(o, T_max=10),  # hits lr = 0
        "OneCycleLR": lambda o: lr_sch.OneCycleLR(o, max_lr=0.05, total_steps=30,
                                                  cycle_momentum=False),
        "OneCycleLR-momentum": lambda o: lr_sch.OneCycleLR(o, max_lr=0.05, total_steps=30,
                                                           cycle_momentum=True),
        "LambdaLR-warmup": lambda o: lr_sch.LambdaLR(o, lambda s: min(1.0, s / 5)),  # starts at 0
    }


@pytest.mark.parametrize("name", list(_schedulers()))
def test_every_step_uses_the_schedulers_lr(name) -> None:
    """30 steps under a scheduler; each step equals the NumPy reference with the lr (and b1)
    the scheduler set for it, bit for bit — lr = 0 (warm-up, cosine) included."""
    params = make_params(seed=15)
    opt = LionK(params, lr=0.02, weight_decay=0.5)
    sched = _schedulers()[name](opt)
    xn = [tnp(p) for p in params]
    mn = [np.zeros_like(x) for x in xn]
    gen = torch.Generator().manual_seed(16)
    lrs, b1s = [], []
    for t in range(30):
        gs = make_grads(params, gen)
        for p, g in zip(params, gs):
            p.grad = g.clone()
        lr, betas = opt.param_groups[0]["lr"], opt.param_groups[0]["betas"]
        lrs.append(lr)
        b1s.append(betas[0])
        opt.step()
        sched.step()
        for k, g in enumerate(gs):
            xn[k], mn[k] = np_reference_step(xn[k], tnp(g), mn[k], lr=lr, betas=betas, wd=0.5,
                                             grad_k=np_sign)
            assert_bitwise_equal(tnp(params[k]), xn[k], f"{name} step {t} lr={lr} param {k}")
            assert_bitwise_equal(tnp(opt.state[params[k]]["exp_avg"]), mn[k],
                                 f"{name} step {t} exp_avg {k}")
    assert len(set(lrs)) >= 5, lrs  # the schedule did change the lr
    if name in ("CosineAnnealingLR", "LambdaLR-warmup"):
        assert 0.0 in lrs  # the lr = 0 path ran
    if name == "OneCycleLR-momentum":
        assert len(set(b1s)) >= 5


def test_zero_lr_keeps_params_updates_momentum_and_still_validates() -> None:
    """lr = 0 (set by a scheduler) is accepted at step and load time whatever the weight decay;
    params stay bitwise, the momentum follows m' = b2*m + (1-b2)*g; other values still raise."""
    params = make_params(seed=29)
    opt = LionK(params, lr=0.01, weight_decay=50.0 * 0.01)
    opt.param_groups[0]["lr"] = 0.0
    opt.param_groups[0]["weight_decay"] = 50.0  # lr*wd < 1 cannot fail at lr = 0
    before = [p.detach().clone() for p in params]
    gs = [torch.full_like(p, 0.25) for p in params]
    for p, g in zip(params, gs):
        p.grad = g.clone()
    opt.step()
    for p, x, g in zip(params, before, gs):
        assert_tensor_bitwise(p.detach(), x, "param at lr = 0")
        assert_bitwise_equal(tnp(opt.state[p]["exp_avg"]),
                             (1.0 - 0.99) * tnp(g), "momentum at lr = 0")
    fresh = LionK(make_params(seed=29), lr=0.01)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.param_groups[0]["lr"] == 0.0
    opt.param_groups[0]["weight_decay"] = -1.0
    snap = snapshot(opt)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: weight_decay: expected a finite number >= 0; received -1.0"):
        opt.step()
    assert_unchanged(opt, snap)


# ---------------------------------------------------------------------------------------------
# GradScaler


def test_grad_scaler_steps_exactly_and_skips_inf() -> None:
    """GradScaler on CPU: with power-of-two scales the unscaled gradients are exact, so the
    scaled run equals an unscaled one bit for bit; an inf gradient makes the scaler skip the
    step (params and state untouched) and halve the scale."""
    A, B = mlp(17), mlp(17)
    X, y = data()
    oa, ob = LionK(A.parameters(), lr=1e-3, weight_decay=0.1), LionK(B.parameters(), lr=1e-3,
                                                                     weight_decay=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    gen = torch.Generator().manual_seed(18)

    def scaled_step(inject_inf=False):
        oa.zero_grad()
        idx = torch.randint(0, len(X), (32,), generator=gen)
        loss = torch.nn.functional.cross_entropy(A(X[idx]), y[idx])
        scaler.scale(loss).backward()
        if inject_inf:
            next(A.parameters()).grad[0, 0] = float("inf")
        scaler.step(oa)
        scaler.update()
        return idx

    for t in range(5):
        idx = scaled_step()
        ob.zero_grad()
        loss_backward(B, X, y, idx)
        ob.step()
        for pa, pb in zip(A.parameters(), B.parameters()):
            assert_tensor_bitwise(pa.detach(), pb.detach(), f"scaled step {t}")
            assert_tensor_bitwise(oa.state[pa]["exp_avg"], ob.state[pb]["exp_avg"], f"exp_avg {t}")
    snap = snapshot(oa)
    scale = scaler.get_scale()
    scaled_step(inject_inf=True)
    assert_unchanged(oa, snap, "after an inf gradient")
    assert scaler.get_scale() == scale / 2
    scaled_step()
    assert all(oa.state[p]["step"] == 6 for p in A.parameters())


# ---------------------------------------------------------------------------------------------
# checkpoints


@pytest.mark.parametrize("via", ["memory", "torch.save"])
def test_state_dict_round_trip_resumes_exactly(via) -> None:
    """Save after 30 steps, build a fresh model and optimizer, load both, then 20 steps in
    lockstep with the uninterrupted run: bitwise equal after every step."""
    X, y = data()
    A = mlp(19)
    oa = LionK([{"params": [A[0].weight, A[2].weight], "weight_decay": 0.3},
                {"params": [A[0].bias, A[2].bias], "kappa": lionk.kappa.get("huber", delta=0.1)}],
               lr=2e-3)
    gen = torch.Generator().manual_seed(20)
    batches = [torch.randint(0, len(X), (32,), generator=gen) for _ in range(50)]
    for t in range(30):
        oa.zero_grad()
        loss_backward(A, X, y, batches[t])
        oa.step()
    msd, osd = A.state_dict(), oa.state_dict()
    if via == "torch.save":
        buf = io.BytesIO()
        torch.save({"model": msd, "opt": osd}, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=True)
        msd, osd = loaded["model"], loaded["opt"]
    B = mlp(99)  # different init: everything must come from the checkpoint
    ob = LionK([{"params": [B[0].weight, B[2].weight]}, {"params": [B[0].bias, B[2].bias]}],
               lr=0.5)
    B.load_state_dict(msd)
    ob.load_state_dict(osd)
    assert ob.param_groups[0]["lr"] == 2e-3 and ob.param_groups[0]["weight_decay"] == 0.3
    assert ob.param_groups[1]["kappa"].name == "huber"
    for p in B.parameters():
        assert ob.state[p]["step"] == 30 and type(ob.state[p]["step"]) is int
    for pa, pb in zip(A.parameters(), B.parameters()):  # loaded momentum is a copy
        assert ob.state[pb]["exp_avg"].data_ptr() != oa.state[pa]["exp_avg"].data_ptr()
    for t in range(30, 50):
        for model, opt in ((A, oa), (B, ob)):
            opt.zero_grad()
            loss_backward(model, X, y, batches[t])
            opt.step()
        for pa, pb in zip(A.parameters(), B.parameters()):
            assert_tensor_bitwise(pa.detach(), pb.detach(), f"resumed step {t}")
            assert_tensor_bitwise(oa.state[pa]["exp_avg"], ob.state[pb]["exp_avg"], f"exp_avg {t}")


def test_load_casts_exp_avg_to_param_dtype_unless_state_dtype() -> None:
    """torch's convention: floating state takes the param's dtype (and device) — unless the
    group has a state_dtype, which is kept (a float32 momentum for bfloat16 params survives)."""
    p32 = make_params(seed=21)
    o32 = LionK(p32, lr=0.01)
    for p in p32:
        p.grad = torch.randn(p.shape, dtype=p.dtype)
    o32.step()
    p64 = make_params(torch.float64, seed=21)
    o64 = LionK(p64, lr=0.01)
    o64.load_state_dict(o32.state_dict())
    for p, q in zip(p32, p64):
        assert o64.state[q]["exp_avg"].dtype == torch.float64
        assert torch.equal(o64.state[q]["exp_avg"], o32.state[p]["exp_avg"].double())

    pbf = make_params(torch.bfloat16, seed=22)
    obf = LionK(pbf, lr=0.01, state_dtype=torch.float32)
    for p in pbf:
        p.grad = torch.randn(p.shape).to(torch.bfloat16)
    obf.step()
    sd = obf.state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    qbf = make_params(torch.bfloat16, seed=23)
    oq = LionK(qbf, lr=0.01)  # built without state_dtype: the checkpoint's groups win
    oq.load_state_dict(torch.load(buf, weights_only=True))
    assert oq.param_groups[0]["state_dtype"] == torch.float32
    for p, q in zip(pbf, qbf):
        m = oq.state[q]["exp_avg"]
        assert m.dtype == torch.float32
        assert_tensor_bitwise(m, obf.state[p]["exp_avg"], "float32 momentum kept")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_moves_state_to_the_params_device_and_steps_there() -> None:
    """A CPU checkpoint loaded onto CUDA params: exp_avg moves to the device; a sign step there
    equals the CPU step bit for bit (every operation correctly rounded, no contraction)."""
    cpu = make_params(seed=24)
    oc = LionK(cpu, lr=0.01, weight_decay=0.2)
    gen = torch.Generator().manual_seed(25)
    gs = make_grads(cpu, gen)
    for p, g in zip(cpu, gs):
        p.grad = g.clone()
    oc.step()
    dev = [torch.nn.Parameter(p.detach().cuda()) for p in cpu]
    od = LionK(dev, lr=0.01, weight_decay=0.2)
    od.load_state_dict(oc.state_dict())
    for q in dev:
        assert od.state[q]["exp_avg"].device == q.device
    for step in range(10):
        gs = make_grads(cpu, gen)
        for p, q, g in zip(cpu, dev, gs):
            p.grad = g.clone()
            q.grad = g.cuda()
        oc.step()
        od.step()
        for p, q in zip(cpu, dev):
            assert_tensor_bitwise(q.detach().cpu(), p.detach(), f"cuda step {step}")
            assert_tensor_bitwise(od.state[q]["exp_avg"].cpu(), oc.state[p]["exp_avg"], "exp_avg")


class _Cubic(lionk.kappa.Kappa):
    """An unregistered user κ (∇K = y³, K = y⁴/4) for the checkpoint test."""

    def __init__(self):
        super().__init__("cubic-test", params={"scale": 1.0})

    def grad(self, y):
        return y * y * y


def test_kappa_objects_are_saved_as_plain_data() -> None:
    params = make_params(seed=26)
    cubic = _Cubic()
    opt = LionK([{"params": params[:1], "kappa": lionk.kappa.get("deadzone", e=0.2)},
                 {"params": params[1:], "kappa": cubic}], lr=0.01)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["kappa"] == {"name": "deadzone", "params": {"e": 0.2}}
    assert sd["param_groups"][1]["kappa"] == {"name": "cubic-test", "params": {"scale": 1.0}}
    assert opt.param_groups[1]["kappa"] is cubic  # the live group keeps the object
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    # the same optimizer set-up (holding the unregistered κ) loads it ...
    q = make_params(seed=26)
    cubic2 = _Cubic()
    o2 = LionK([{"params": q[:1]}, {"params": q[1:], "kappa": cubic2}], lr=0.01)
    o2.load_state_dict(sd)
    assert o2.param_groups[0]["kappa"].name == "deadzone"
    assert o2.param_groups[0]["kappa"].params == {"e": 0.2}
    assert o2.param_groups[1]["kappa"] is cubic2
    # ... one that cannot rebuild it refuses, naming the κ, and changes nothing
    r = make_params(seed=26)
    o3 = LionK([{"params": r[:1]}, {"params": r[1:]}], lr=0.01)
    snap = snapshot(o3)
    with pytest.raises(KeyError, match=r"param_groups'\]\[1\]: kappa: cannot rebuild kappa 'cubic-test'"):
        o3.load_state_dict(sd)
    assert_unchanged(o3, snap)


# ---------------------------------------------------------------------------------------------
# bad input: clear errors, nothing changed


def _trained_opt(seed=27, **kw):
    params = make_params(seed=seed)
    opt = LionK([{"params": params[:2]}, {"params": params[2:], "lr": 0.02}], lr=0.01, **kw)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt, params


def _bad_state_dicts():
    def wrong_shape(sd):
        sd["state"][0]["exp_avg"] = torch.zeros(3, 5)
    def fewer_groups(sd):
        del sd["param_groups"][1]
    def group_size(sd):
        sd["param_groups"][0]["params"].append(7)
    def lion_pytorch_format(sd):
        for g in sd["param_groups"]:
            for k in ("kappa", "maximize", "nan_policy", "state_dtype", "skipped"):
                del g[k]
        for st in sd["state"].values():
            del st["step"]
    def array_format(sd):
        sd.clear()
        sd.update({"count": 1, "momentum": [torch.zeros(5, 3)], "skipped": 0})
    def bad_lr(sd):
        sd["param_groups"][1]["lr"] = -1.0
    def unknown_id(sd):
        sd["state"][42] = {"step": 1, "exp_avg": torch.zeros(1)}
    def bad_step(sd):
        sd["state"][1]["step"] = -3
    def exp_avg_not_tensor(sd):
        sd["state"][1]["exp_avg"] = [0.0, 0.0, 0.0]
    def complex_exp_avg(sd):
        sd["state"][1]["exp_avg"] = torch.zeros(3, dtype=torch.complex64)
    return {
        "wrong_shape": (wrong_shape, ValueError,
                        r"state_dict\['state'\]\[0\]\['exp_avg'\]: expected shape \(5, 3\) \(the "
                        r"shape of its param, param_groups\[0\]\['params'\]\[0\]\); received \(3, 5\)"),
        "fewer_groups": (fewer_groups, ValueError,
                         r"state_dict\['param_groups'\]: expected 2 param groups .*received 1"),
        "group_size": (group_size, ValueError,
                       r"state_dict\['param_groups'\]\[0\]\['params'\]: expected 2 entries .*received 3"),
        "lion_pytorch_format": (lion_pytorch_format, ValueError,
                                r"missing keys \['kappa'\]"),
        "array_format": (array_format, ValueError,
                         r"expected keys \['param_groups', 'state'\].*lionk.LionK state dict for arrays"),
        "bad_lr": (bad_lr, ValueError,
                   r"state_dict\['param_groups'\]\[1\]: lr: expected a finite number >= 0; received -1.0"),
        "unknown_id": (unknown_id, ValueError, r"state_dict\['state'\]\[42\]: expected the id of a param"),
        "bad_step": (bad_step, ValueError, r"state_dict\['state'\]\[1\]\['step'\]: expected an int >= 0; received -3"),
        "exp_avg_not_tensor": (exp_avg_not_tensor, TypeError, r"\['exp_avg'\]: expected a tensor; received list"),
        "complex_exp_avg": (complex_exp_avg, TypeError, r"expected a real floating tensor .*received torch.complex64"),
    }


@pytest.mark.parametrize("case", list(_bad_state_dicts()))
def test_mismatched_state_dict_is_rejected_and_nothing_overwritten(case) -> None:
    mutate, exc, pattern = _bad_state_dicts()[case]
    source, _ = _trained_opt(seed=28)
    for p in (p for g in source.param_groups for p in g["params"]):
        p.grad = torch.full_like(p, -2.0)
    source.step()
    sd = copy.deepcopy(source.state_dict())
    mutate(sd)
    opt, _ = _trained_opt()
    snap = snapshot(opt)
    with pytest.raises(exc, match=pattern):
        opt.load_state_dict(sd)
    assert_unchanged(opt, snap)
    # a correct state dict still loads afterwards
    opt.load_state_dict(source.state_dict())
    assert opt.param_groups[1]["lr"] == 0.02


def test_state_dict_is_not_a_dict() -> None:
    opt, _ = _trained_opt()
    with pytest.raises(TypeError, match=r"state_dict: expected a dict .*received list"):
        opt.load_state_dict([1, 2])


_INVALID = [
    (dict(lr=0.0), ValueError, r"lr: expected a finite number > 0; received 0.0"),
    (dict(lr=-1e-3), ValueError, r"lr: expected a finite number > 0; received -0.001"),
    (dict(lr=float("nan")), ValueError, r"lr: expected a finite number > 0; received nan"),
    (dict(lr="fast"), TypeError, r"lr: expected a real number; received 'fast'"),
    (dict(betas=(1.0, 0.99)), ValueError, r"betas\[0\]: expected a value in \[0, 1\); received 1.0"),
    (dict(betas=(0.9,)), TypeError, r"betas: expected a pair \(b1, b2\); received \(0.9,\)"),
    (dict(weight_decay=-0.1), ValueError, r"weight_decay: expected a finite number >= 0; received -0.1"),
    (dict(lr=0.1, weight_decay=10.0), ValueError, r"lr\*weight_decay: expected < 1"),
    (dict(kappa="nope"), KeyError, r"kappa: unknown kappa 'nope'; available: "),
    (dict(nan_policy="ignore"), ValueError, r"nan_policy: expected one of \('propagate', 'raise', 'skip'\); received 'ignore'"),
    (dict(maximize="yes"), TypeError, r"maximize: expected a bool; received 'yes'"),
    (dict(state_dtype=torch.int32), ValueError, r"state_dtype: expected a real floating dtype .*received torch.int32"),
    (dict(state_dtype="float7"), ValueError, r"state_dtype: expected None, a torch floating dtype or its name .*received 'float7'"),
]


@pytest.mark.parametrize(("kw", "exc", "pattern"), _INVALID, ids=[str(k[0]) for k in _INVALID])
def test_invalid_hyperparameters_raise_at_construction_and_in_add_param_group(kw, exc, pattern) -> None:
    with pytest.raises(exc, match=pattern):
        LionK(make_params(), **kw)
    opt, params = _trained_opt()
    snap = snapshot(opt)
    extra = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(exc, match=r"param_groups\[2\]: " + pattern):
        opt.add_param_group({"params": [extra], **kw})
    assert_unchanged(opt, snap)
    assert len(opt.param_groups) == 2


def test_b1_greater_than_b2_warns() -> None:
    with pytest.warns(lionk.LionKWarning, match="b1=0.99 > b2=0.9"):
        LionK(make_params(), betas=(0.99, 0.9))


def test_bad_param_groups() -> None:
    p = make_params()
    with pytest.raises(ValueError, match=r"params: expected a non-empty iterable .*received an empty one"):
        LionK([])
    with pytest.raises(ValueError, match=r"params: expected a non-empty iterable"):
        LionK(iter([]))
    with pytest.raises(TypeError, match=r"params: .*received a single tensor \(wrap it in a list"):
        LionK(p[0])
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[1\]: expected a torch.Tensor .*received builtins.float"):
        LionK([p[0], 1.0])
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[0\]: expected each tensor in one param group only; received a tensor already in param_groups\[0\]\['params'\]\[1\]"):
        LionK([{"params": p[:2]}, {"params": [p[1], p[2]]}])
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[2\]: expected each tensor once; received the tensor already at param_groups\[0\]\['params'\]\[0\]"):
        LionK([p[0], p[1], p[0]])
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]: expected an ordered collection"):
        LionK([{"params": set(p)}])
    with pytest.raises(TypeError, match=r"param_groups\[1\]: expected a dict with a 'params' entry; received Parameter"):
        LionK([{"params": p[:1]}, p[1]])
    nonleaf = torch.nn.Parameter(torch.ones(2)) * 2.0
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\]: expected a leaf tensor"):
        LionK([nonleaf])
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\]: expected a real floating tensor .*received torch.int64"):
        LionK([torch.zeros(3, dtype=torch.int64)])
    # add_param_group rejects and leaves the optimizer unchanged
    opt = LionK([p[0]], lr=0.01)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[0\]: expected each tensor in one param group only"):
        opt.add_param_group({"params": [p[0]]})
    assert len(opt.param_groups) == 1
    # empty groups are allowed (a no-op); named parameters work
    opt = LionK([{"params": []}, {"params": p[:1]}], lr=0.01)
    p[0].grad = torch.ones_like(p[0])
    opt.step()
    assert opt.state[p[0]]["step"] == 1
    model = mlp()
    opt = LionK(model.named_parameters(), lr=0.01)
    assert opt.param_groups[0]["param_names"][0] == "0.weight"
    loss_backward(model, *data())
    opt.step()
    assert opt.state_dict()["param_groups"][0]["param_names"] == [n for n, _ in model.named_parameters()]


def test_complex_params_raise_a_clear_type_error() -> None:
    z = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\]: expected a real floating tensor .*received torch.complex64. LionK does not support complex parameters"):
        LionK([z])


def test_sparse_gradients_raise_and_nothing_changes() -> None:
    emb = torch.nn.Embedding(10, 3, sparse=True)
    lin = torch.nn.Linear(3, 1)
    opt = LionK([{"params": lin.parameters()}, {"params": emb.parameters()}], lr=0.01)
    lin(emb(torch.tensor([1, 2, 3]))).sum().backward()
    assert emb.weight.grad.is_sparse
    snap = snapshot(opt)
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['params'\]\[0\]\.grad: expected a dense tensor \(layout torch.strided\); received layout torch.sparse_coo. LionK does not support sparse gradients"):
        opt.step()
    assert_unchanged(opt, snap)
    assert len(opt.state) == 0


def test_corrupted_state_is_caught_before_anything_is_written() -> None:
    opt, params = _trained_opt()
    opt.state[params[2]]["exp_avg"] = torch.zeros(4)
    for p in params:
        p.grad = torch.ones_like(p)
    snap = snapshot(opt)
    with pytest.raises(ValueError, match=r"state of param_groups\[1\]\['params'\]\[0\]\['exp_avg'\]: expected shape \(1,\) \(the param's\); received \(4,\)"):
        opt.step()
    assert_unchanged(opt, snap)


def test_invalid_lr_set_between_steps_raises_with_the_group() -> None:
    opt, params = _trained_opt()
    opt.param_groups[1]["lr"] = -0.5
    snap = snapshot(opt)
    with pytest.raises(ValueError, match=r"param_groups\[1\]: lr: expected a finite number >= 0; received -0.5"):
        opt.step()
    assert_unchanged(opt, snap)


# ---------------------------------------------------------------------------------------------
# the example


def test_torch_mlp_example_trains(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    ex = runpy.run_path(str(ROOT / "examples" / "torch_mlp.py"), run_name="example_torch_mlp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the example is warning-free
        res = ex["main"]()
    assert res["final_loss"] < 0.3 * res["initial_loss"], res
    assert res["final_accuracy"] >= 0.95 and res["initial_accuracy"] < 0.7
    assert len(res["losses"]) == 300 and all(math.isfinite(v) for v in res["losses"])
    assert res["max_abs_weight"] <= res["radius"]
    if importlib.util.find_spec("matplotlib") is not None:  # pinned in requirements/dev.txt
        png = tmp_path / "torch_mlp_loss.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
