"""Generic optimizer tests for ``lionk.torch.LionK`` over its option space (issue 15).

The checks of torch's own generic optimizer tests (``TestOptimRenewed`` in torch's
test/test_optim.py, driven by ``OptimizerInfo`` entries), written here from torch.optim's
documented contract and run over LionK's options the way an ``OptimizerInfo.optim_inputs_func``
enumerates them: each built-in elementwise κ and the norm κ ``l2``, ``maximize``, weight decay,
a tensor ``lr``, ``nan_policy``, ``state_dtype``, crossed with the execution paths ``"eager"``,
``"chunked"``, ``"packed"`` and ``"auto"`` (``"compiled"`` in one case: ``torch.compile`` is
slow). Each check compares LionK with an independent run of itself (a copy, a reload, contiguous
twins, another path) or with the loss it must decrease, so each can fail.

tests/test_torch_conventions.py holds the convention items themselves (torch's exception types and
wording, older state dicts, one-element tensor lr, pickling old objects); this module is the
option-space sweep.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest

torch = pytest.importorskip("torch")

import lionk.kappa  # noqa: E402
from lionk.torch import LionK  # noqa: E402

ELEMENTWISE = sorted(n for n in lionk.kappa.available()
                     if lionk.kappa.get(n).separable and n not in ("l1", "lion"))  # aliases of sign
CONFIGS: dict[str, dict] = {
    **{f"kappa={k}": {"kappa": k} for k in ELEMENTWISE},
    "kappa=l2": {"kappa": "l2"},
    "maximize": {"maximize": True},
    "weight_decay": {"weight_decay": 0.5},
    "l2,maximize,weight_decay": {"kappa": "l2", "maximize": True, "weight_decay": 0.05},
    "huber,weight_decay": {"kappa": lionk.kappa.get("huber", delta=0.05), "weight_decay": 0.5},
    "tensor_lr": {"lr": "tensor"},
    "nan_policy=skip": {"nan_policy": "skip"},
    "nan_policy=raise": {"nan_policy": "raise"},
    "state_dtype=float64": {"state_dtype": torch.float64},
    "betas=(0.8,0.95)": {"betas": (0.8, 0.95)},
}
EXECUTIONS = ["eager", "chunked", "packed", "auto"]
CASES = [pytest.param(name, ex, id=f"{name}-{ex}") for name in CONFIGS for ex in EXECUTIONS]
LR = 0.01


def options(name: str) -> dict:
    opts = dict(CONFIGS[name])
    if opts.get("lr") == "tensor":
        opts["lr"] = torch.tensor(LR)
    opts.setdefault("lr", LR)
    return opts


def exact(name: str) -> bool:
    kappa = CONFIGS[name].get("kappa", "sign")
    return (lionk.kappa.get(kappa) if isinstance(kappa, str) else kappa).exact


def make_params(dtype=torch.float32, seed: int = 0, contiguous: bool = True) -> list:
    """Three tensors (so "packed" has several to pack), in two groups' worth of shapes."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(6, 4), (6,), (3, 2, 2)]
    out = []
    for shape in shapes:
        t = torch.randn(*shape, 2, generator=gen, dtype=dtype)
        t = t[..., 0] if not contiguous else t[..., 0].contiguous()
        out.append(t.requires_grad_())
    return out


def set_grads(params, step: int, seed: int = 7) -> None:
    gen = torch.Generator().manual_seed(seed * 1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)


def run(params, opt, steps: int, start: int = 0) -> None:
    for s in range(start, start + steps):
        set_grads(params, s)
        opt.step()


def snapshot(params, opt) -> list:
    """Every param and every state entry, as bytes (bitwise comparison)."""
    out = [p.detach().numpy().tobytes() for p in params]
    for p in params:
        st = opt.state.get(p, {})
        out.append((st.get("step"), st["exp_avg"].numpy().tobytes() if "exp_avg" in st else None))
    out.append([g.get("skipped") for g in opt.param_groups])
    return out


def build(name: str, execution: str, dtype=torch.float32, seed: int = 0, contiguous=True):
    params = make_params(dtype, seed, contiguous)
    opt = LionK([{"params": params[:2]}, {"params": params[2:]}], execution=execution,
                **options(name))
    return params, opt


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name,execution", CASES)
def test_copy_then_step_equals_the_original_step(name, execution, how):
    params, opt = build(name, execution)
    run(params, opt, 2)
    if how == "deepcopy":
        params2, opt2 = copy.deepcopy((params, opt))
    else:
        params2, opt2 = pickle.loads(pickle.dumps((params, opt)))
    assert snapshot(params2, opt2) == snapshot(params, opt)
    before = snapshot(params, opt)
    run(params, opt, 2, start=2)
    run(params2, opt2, 2, start=2)
    assert snapshot(params, opt) != before           # the steps did something
    assert snapshot(params2, opt2) == snapshot(params, opt)
    assert opt2.last_execution == opt.last_execution
    assert {k for k in vars(opt2) if not k.startswith("_")} == \
        {k for k in vars(opt) if not k.startswith("_")}   # torch's deepcopy_copies_all_public_attrs


@pytest.mark.parametrize("name,execution", CASES)
def test_state_dict_round_trip_resumes_exactly(name, execution):
    params, opt = build(name, execution)
    run(params, opt, 3)
    saved = copy.deepcopy(opt.state_dict())
    buf = io.BytesIO()
    torch.save(saved, buf)
    params2 = [p.detach().clone().requires_grad_() for p in params]
    opt2 = LionK([{"params": params2[:2]}, {"params": params2[2:]}], lr=0.5, kappa="quadratic",
                 execution=execution)                 # other options: the dict must bring them
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert snapshot(params2, opt2) == snapshot(params, opt)
    run(params, opt, 3, start=3)
    run(params2, opt2, 3, start=3)
    assert snapshot(params2, opt2) == snapshot(params, opt)
    # torch's test_state_dict_deterministic: equal (not identical) params give equal dicts
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert a["state"][k]["step"] == b["state"][k]["step"]
        assert torch.equal(a["state"][k]["exp_avg"], b["state"][k]["exp_avg"])


@pytest.mark.parametrize("name,execution", CASES)
def test_params_without_grad_are_left_alone(name, execution):
    params, opt = build(name, execution)
    frozen = params[1].detach().clone()
    others = [params[0].detach().clone(), params[2].detach().clone()]
    for s in range(2):
        set_grads(params, s)
        params[1].grad = None
        opt.step()
    assert torch.equal(params[1].detach(), frozen)
    assert params[1] not in opt.state
    assert not torch.equal(params[0].detach(), others[0])
    assert not torch.equal(params[2].detach(), others[1])
    # no grads at all (torch's test_step_is_noop_when_params_have_no_grad): nothing changes
    params3, opt3 = build(name, execution, seed=3)
    before = snapshot(params3, opt3)
    assert opt3.step(lambda: 1.0) == 1.0
    assert snapshot(params3, opt3) == before and len(opt3.state) == 0


@pytest.mark.parametrize("name,execution", CASES)
def test_non_contiguous_params_equal_their_contiguous_twins(name, execution):
    """torch's generic test steps ``randn(10, 5, 2)[..., 0]`` params; the update is written into
    the view (the base tensor changes) and equals the one of contiguous copies, bitwise."""
    views, opt = build(name, execution, contiguous=False)
    assert not any(p.is_contiguous() for p in views[:1])
    twins = [p.detach().clone().contiguous().requires_grad_() for p in views]
    opt2 = LionK([{"params": twins[:2]}, {"params": twins[2:]}], execution=execution,
                 **options(name))
    start = views[0].detach().clone()
    run(views, opt, 3)
    run(twins, opt2, 3)
    assert not torch.equal(views[0].detach(), start)
    assert views[0]._base is not None           # a view into a larger tensor, written in place
    for v, t in zip(views, twins):
        assert torch.equal(v.detach(), t.detach())
        assert torch.equal(opt.state[v]["exp_avg"], opt2.state[t]["exp_avg"])


@pytest.mark.parametrize("name,execution", CASES)
def test_step_lr_drives_the_learning_rate(name, execution):
    """StepLR halves lr every 2 steps; LionK reads the scheduled lr at every step: the run equals
    one whose lr is set by hand to the values the schedule gives."""
    params, opt = build(name, execution)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    params2, opt2 = build(name, execution)
    seen = []
    for s in range(5):
        lr_now = float(opt.param_groups[0]["lr"])
        seen.append(lr_now)
        for g in opt2.param_groups:
            g["lr"] = lr_now
        set_grads(params, s)
        set_grads(params2, s)
        opt.step()
        opt2.step()
        sched.step()
    assert seen == pytest.approx([LR, LR, LR / 2, LR / 2, LR / 4], rel=1e-6)
    assert snapshot(params, opt) == snapshot(params2, opt2)
    # and not the same as a constant lr
    params3, opt3 = build(name, execution)
    run(params3, opt3, 5)
    assert [p.detach().numpy().tobytes() for p in params3] != \
        [p.detach().numpy().tobytes() for p in params]


def quadratic(params, targets, weights):
    return sum((w * (p - t) ** 2).sum() for p, t, w in zip(params, targets, weights))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name,execution", CASES)
def test_goes_the_right_direction_on_a_convex_quadratic(name, execution, dtype):
    """torch's test_forloop_goes_right_direction, on a convex quadratic with its minimum inside
    the weight-decay box: 30 steps decrease the loss (increase it with maximize)."""
    params, opt = build(name, execution, dtype=dtype)
    gen = torch.Generator().manual_seed(11)
    targets = [0.5 * torch.randn(p.shape, generator=gen, dtype=dtype) for p in params]
    weights = [torch.rand(p.shape, generator=gen, dtype=dtype) + 0.5 for p in params]
    opt.param_groups[0]["lr"] = opt.param_groups[1]["lr"] = 0.05

    def closure():
        opt.zero_grad()
        loss = quadratic(params, targets, weights)
        loss.backward()
        return loss

    first = closure().item()
    for _ in range(30):
        opt.step(closure)
    last = closure().item()
    if CONFIGS[name].get("maximize"):
        assert last > first * 1.1
    else:
        assert last < first * 0.9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_execution_paths_agree(name, dtype):
    """torch's foreach-vs-forloop parity, for LionK's paths: bitwise for an exact κ (the same
    correctly rounded elementwise operations on every path), to a few ulp otherwise."""
    runs = {}
    for execution in EXECUTIONS:
        params, opt = build(name, execution, dtype=dtype)
        run(params, opt, 4)
        runs[execution] = (snapshot(params, opt), params, opt)
    ref_snap, ref_params, ref_opt = runs["eager"]
    assert ref_opt.last_execution == ["eager", "eager"]
    for execution in EXECUTIONS[1:]:
        snap, params, opt = runs[execution]
        if exact(name):
            assert snap == ref_snap, execution
        else:
            eps = torch.finfo(dtype).eps
            for a, b in zip(params, ref_params):
                torch.testing.assert_close(a.detach(), b.detach(), rtol=8 * eps, atol=8 * eps)
    separable = exact(name) or CONFIGS[name].get("kappa") == "relativistic"
    assert runs["chunked"][2].last_execution == ["chunked" if separable else "eager"] * 2
    assert runs["packed"][2].last_execution == ["packed" if separable else "eager"] * 2


def test_compiled_path_matches_eager():
    """One cheap torch.compile case: the "compiled" path is in the ulp tier (FMA contraction
    allowed), so it equals eager to a few ulp and takes the same signs."""
    pytest.importorskip("torch._dynamo")
    out = {}
    for execution in ("eager", "compiled"):
        params, opt = build("weight_decay", execution)
        run(params, opt, 2)
        out[execution] = (params, opt)
    assert out["compiled"][1].last_execution == ["compiled", "compiled"]
    for a, b in zip(out["compiled"][0], out["eager"][0]):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=4e-7, atol=1e-7)


@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("policy", ["propagate", "skip", "raise"])
def test_nan_policy_on_every_path(policy, execution):
    """A NaN gradient in the second group: "propagate" writes NaN there, "skip" leaves that
    group unchanged and counts it, "raise" raises and changes nothing in any group."""
    params, opt = build("kappa=sign", execution)
    opt.param_groups[0]["nan_policy"] = opt.param_groups[1]["nan_policy"] = policy
    run(params, opt, 1)
    before = snapshot(params, opt)
    set_grads(params, 5)
    params[2].grad[0, 0, 0] = float("nan")
    if policy == "raise":
        with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[0\]\.grad"):
            opt.step()
        assert snapshot(params, opt) == before
        return
    opt.step()
    assert not torch.equal(params[0].detach(), torch.frombuffer(bytearray(before[0]),
                                                                 dtype=torch.float32).view(6, 4))
    if policy == "skip":
        assert [g["skipped"] for g in opt.param_groups] == [0, 1]
        assert params[2].detach().numpy().tobytes() == before[2]
        assert opt.state[params[2]]["step"] == 1
    else:
        assert torch.isnan(params[2].detach()).any()
        assert opt.state[params[2]]["step"] == 2


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_state_dtype_sets_the_momentum_dtype_on_every_path(execution):
    params, opt = build("state_dtype=float64", execution)
    run(params, opt, 2)
    assert all(opt.state[p]["exp_avg"].dtype == torch.float64 for p in params)
    assert all(p.dtype == torch.float32 for p in params)
    # docs/api.md: the step mixes dtypes by torch's promotion rules, casting m' to the momentum's
    # dtype: (1 - b2) * g is a float32 product, b2 * m a float64 one, their sum float64
    grads = []
    for s in range(2):
        set_grads(params, s)
        grads.append(params[0].grad)
    b2 = 0.99
    m = torch.zeros(params[0].shape, dtype=torch.float64)
    for g in grads:
        m = b2 * m + ((1 - b2) * g).double()
    assert torch.equal(opt.state[params[0]]["exp_avg"], m)
