"""``lionk.torch.LionK`` follows torch.optim's conventions (issue 15, items 1-4 and 9).

Written from torch's documented behaviour (and its generic optimizer tests' expectations, e.g.
``TestOptimRenewed.test_deepcopy_copies_all_public_attrs``, ``test_can_load_older_state_dict``,
``test_tensor_lr``, non-contiguous params ``randn(10, 5, 2)[..., 0]``); where torch raises, the
same exception type is compared against a torch optimizer's own, live. docs/torch.md lists the
deliberate differences.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest

torch = pytest.importorskip("torch")

from lionk.torch import LionK  # noqa: E402

OPTIONS = [
    dict(),
    dict(kappa="huber", weight_decay=0.1),
    dict(kappa="l2", maximize=True),
    dict(nan_policy="skip", state_dtype=torch.float64),
]
EXECUTIONS = ["eager", "chunked", "auto"]


def model(seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    return net.to(dtype)


def train(net, opt, steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 5, generator=gen, dtype=next(net.parameters()).dtype)
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()


def params_bytes(net) -> list[bytes]:
    return [p.detach().numpy().tobytes() for p in net.parameters()]


@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_or_pickled_optimizer_steps_like_the_original(how, options, execution):
    """Item 1: torch's __getstate__ keeps only defaults/state/param_groups; LionK's own
    options (execution, communication, ...) must survive deepcopy and pickle (main:
    AttributeError: ... no attribute 'communication')."""
    net = model()
    opt = LionK(net.parameters(), lr=1e-2, execution=execution, **options)
    train(net, opt, 2)
    if how == "deepcopy":
        net2, opt2 = copy.deepcopy((net, opt))
    else:
        buf = io.BytesIO()
        pickle.dump((net, opt), buf)
        net2, opt2 = pickle.loads(buf.getvalue())
    assert (opt2.execution, opt2.communication, opt2.vote_packing) == (execution, None, "int8")
    train(net, opt, 3, seed=5)
    train(net2, opt2, 3, seed=5)
    assert params_bytes(net2) == params_bytes(net)
    assert opt2.last_execution == opt.last_execution


def test_an_object_pickled_before_an_option_existed_gets_its_default():
    net = model()
    opt = LionK(net.parameters(), lr=1e-2)
    train(net, opt, 1)
    state = opt.__getstate__()
    for key in ("execution", "communication", "process_group", "vote_packing"):
        del state[key]
    for group in state["param_groups"]:
        del group["nan_policy"], group["skipped"]
    old = LionK.__new__(LionK)
    old.__setstate__(state)
    assert old.execution == "auto" and old.param_groups[0]["nan_policy"] == "propagate"
    train(net, old, 1)
    assert old.state[next(net.parameters())]["step"] == 2


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_a_one_element_tensor_lr_is_accepted_and_equals_the_float(shape):
    """Item 2: torch accepts any one-element tensor lr (main refused (1,) and (1, 1))."""
    nets = [model(), model()]
    opts = [LionK(nets[0].parameters(), lr=torch.full(shape, 0.01)),
            LionK(nets[1].parameters(), lr=0.01)]
    for net, opt in zip(nets, opts):
        train(net, opt, 3)
    assert params_bytes(nets[0]) == params_bytes(nets[1])
    sched = torch.optim.lr_scheduler.StepLR(opts[0], step_size=1, gamma=0.5)
    train(nets[0], opts[0], 1)
    sched.step()
    train(nets[0], opts[0], 1)
    assert float(opts[0].param_groups[0]["lr"]) == pytest.approx(0.005, rel=1e-6)


def _error(fn) -> BaseException:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("expected an exception")


def _two_groups_same_param(cls):
    p = torch.nn.Parameter(torch.randn(3))
    return cls([{"params": [p]}, {"params": [p]}], lr=0.01)


def _mixed_named(cls):
    a, b = torch.nn.Parameter(torch.randn(2)), torch.nn.Parameter(torch.randn(2))
    return cls([("a", a), b], lr=0.01)


def _mixed_named_groups(cls):
    a, b = torch.nn.Parameter(torch.randn(2)), torch.nn.Parameter(torch.randn(2))
    return cls([{"params": [("a", a)]}, {"params": [b]}], lr=0.01)


CASES = {
    "single tensor": lambda cls: cls(torch.nn.Parameter(torch.randn(3)), lr=0.01),
    "same param in two groups": _two_groups_same_param,
    "two-element lr tensor": lambda cls: cls([torch.nn.Parameter(torch.randn(3))],
                                             lr=torch.tensor([0.1, 0.2])),
    "mixed named and unnamed params": _mixed_named,
    "mixed named and unnamed groups": _mixed_named_groups,
    "negative lr": lambda cls: cls([torch.nn.Parameter(torch.randn(3))], lr=-0.1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_errors_have_torch_s_exception_types(case):
    """Item 4: the exception type torch.optim.Adam raises for the same input."""
    ours = _error(lambda: CASES[case](LionK))
    theirs = _error(lambda: CASES[case](torch.optim.Adam))
    assert type(ours) is type(theirs), (ours, theirs)


def test_two_element_lr_message_says_what_torch_says():
    exc = _error(lambda: CASES["two-element lr tensor"](LionK))
    assert "lr" in str(exc) and "1-element" in str(exc) and "(2,)" in str(exc)


# the regexes of torch's get_error_inputs_for_all_optims (torch.testing._internal.common_optimizers)
TORCH_WORDING = {
    "single tensor": "params argument given to the optimizer should be an iterable of Tensors or dicts",
    "same param in two groups": "some parameters appear in more than one parameter group",
    "two-element lr tensor": "Tensor lr must be 1-element",
    "mixed named and unnamed params": "all optimizer params should be with/without names. Some param "
                                      "names are missing",
    "mixed named and unnamed groups": "all optimizer param groups should be with/without names",
}


@pytest.mark.parametrize("case", sorted(TORCH_WORDING))
def test_error_messages_contain_torch_s_wording(case):
    """A user searching torch's message finds lionk's (torch's generic test_errors matches these
    regexes; the single-tensor and mixed-names messages lacked them before)."""
    assert TORCH_WORDING[case] in str(_error(lambda: CASES[case](LionK)))
    assert TORCH_WORDING[case] in str(_error(lambda: CASES[case](torch.optim.Adam)))


@pytest.mark.parametrize("execution", EXECUTIONS)
def test_non_contiguous_params_step_on_every_execution(execution):
    """Item 3: randn(10, 5, 2)[..., 0] params, as torch's generic test uses (main:
    execution='chunked' raised a message blaming the kappa); equals the eager optimizer."""
    out = {}
    for path in ("eager", execution):
        torch.manual_seed(0)
        ps = [torch.randn(10, 5, 2)[..., 0].requires_grad_() for _ in range(2)]
        assert not ps[0].is_contiguous()
        opt = LionK([{"params": [ps[0]]}, {"params": [ps[1]], "kappa": "huber"}], lr=0.1)
        opt.execution = path
        for p in ps:
            p.grad = torch.randn(p.shape)
        opt.step()
        out[path] = [p.detach().clone() for p in ps]
    for a, b in zip(out["eager"], out[execution]):
        assert torch.equal(a, b)


FLAGS_ADDED_LATER = ("foreach", "differentiable", "maximize", "capturable",  # torch's list
                     "nan_policy", "state_dtype", "skipped")


@pytest.mark.parametrize("options", OPTIONS[:2], ids=["default", "huber"])
def test_can_load_older_state_dict(options):
    """Item 9, torch's test_can_load_older_state_dict: a state dict without the options added
    later loads (they take their defaults) and training continues exactly (main: ValueError
    missing keys)."""
    net = model()
    opt = LionK(net.parameters(), lr=1e-2, **options)
    train(net, opt, 3)
    old = copy.deepcopy(opt.state_dict())
    for group in old["param_groups"]:
        for flag in FLAGS_ADDED_LATER:
            group.pop(flag, None)
    net2 = copy.deepcopy(net)
    opt2 = LionK(net2.parameters(), lr=0.5, kappa="quadratic")
    opt2.load_state_dict(old)
    assert opt2.param_groups[0]["maximize"] is False
    assert opt2.param_groups[0]["kappa"] == opt.param_groups[0]["kappa"] or isinstance(
        opt.param_groups[0]["kappa"], str)
    train(net, opt, 2, seed=9)
    train(net2, opt2, 2, seed=9)
    assert params_bytes(net2) == params_bytes(net)


def test_a_foreign_state_dict_is_still_refused():
    net = model()
    opt = LionK(net.parameters(), lr=1e-2)
    foreign = torch.optim.SGD(net.parameters(), lr=0.1).state_dict()
    with pytest.raises(ValueError, match=r"missing keys \['betas', 'weight_decay', 'kappa'\]|"
                                         r"missing keys \['betas', 'kappa'\]"):
        opt.load_state_dict(foreign)
