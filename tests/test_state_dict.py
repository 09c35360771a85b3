"""``lionk.LionK.state_dict()``: momenta keyed by leaf path (issue 10, case 1), lionk 0.1's
positional dicts, forward compatibility, malformed ``hyperparams``, and the two ``LionK``
classes' state dicts kept apart (issue 11, item 10).

Each test failed on the positional format (a list of momenta in leaf order), except those whose
docstring says "guard". Every refused dict leaves the optimizer bitwise as it was.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import lionk

from ._util import assert_bitwise_equal


def _trained(params, steps=3, seed=0, **kw):
    """A LionK on ``params`` after a few steps (momenta of distinct values)."""
    rng = np.random.default_rng(seed)
    opt = lionk.LionK(params, lr=0.01, weight_decay=0.1, **kw)
    for _ in range(steps):
        opt.step(type(params)((k, rng.standard_normal(v.shape).astype(v.dtype)) for k, v in params.items()))
    return opt


def _snap(opt):
    ms, _, paths = lionk.tree.flatten(opt.state.momentum)
    return ({p: np.array(m, copy=True) for p, m in zip(paths, ms)}, int(opt.state.count),
            int(opt.state.skipped), opt.lr, opt.betas, opt.weight_decay, opt.nan_policy, opt.kappa)


def _assert_same(opt, snap, label):
    ms, count, skipped, lr, betas, wd, nan_policy, kap = snap
    now_ms, _, paths = lionk.tree.flatten(opt.state.momentum)
    for p, m in zip(paths, now_ms):
        assert_bitwise_equal(np.asarray(m), ms[p], f"{label}: momentum{p}")
    assert (int(opt.state.count), int(opt.state.skipped)) == (count, skipped), label
    assert (opt.lr, opt.betas, opt.weight_decay, opt.nan_policy, opt.kappa) == \
        (lr, betas, wd, nan_policy, kap), label


def _raises(exc, *fragments, fn):
    with pytest.raises(exc) as ei:
        fn()
    msg = str(ei.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


def _params(order=("w", "b", "v")):
    shapes = {"w": (2, 3), "b": (3,), "v": (3,)}
    return OrderedDict((k, np.zeros(shapes[k], np.float32)) for k in order)


# ---------------------------------------------------------------------------------------------
# Keyed by path.


def test_state_dict_keys_are_leaf_paths() -> None:
    """momentum is {leaf path: copy}; format and version mark the class and layout."""
    params = {"layer1": {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)},
              "out": [np.zeros(3, np.float32)]}
    opt = lionk.LionK(params, lr=0.01)
    opt.step({"layer1": {"w": np.ones((2, 2), np.float32), "b": -np.ones(2, np.float32)},
              "out": [np.full(3, 0.5, np.float32)]})
    sd = opt.state_dict()
    assert sd["format"] == "lionk.LionK" and sd["version"] == 2
    assert list(sd["momentum"]) == lionk.tree.leaf_paths(params) == \
        ["['layer1']['b']", "['layer1']['w']", "['out'][0]"]
    np.testing.assert_array_equal(sd["momentum"]["['layer1']['b']"], np.full(2, -0.01, np.float32))
    assert sd["momentum"]["['out'][0]"] is not opt.state.momentum["out"][0]  # a copy


def test_load_matches_momenta_by_path_not_position() -> None:
    """Two OrderedDicts with the same names in another insertion order (so another leaf order):
    each momentum goes to the param of its name. Positionally, the same-shaped 'b' and 'v'
    were swapped silently."""
    first = _trained(_params(("w", "b", "v")))
    sd = first.state_dict()
    second = lionk.LionK(_params(("v", "w", "b")), lr=0.01, weight_decay=0.1)
    second.load_state_dict(sd)
    for k in ("w", "b", "v"):
        assert_bitwise_equal(second.state.momentum[k], first.state.momentum[k], f"momentum[{k}]")
    assert second.state.count == first.state.count == 3


def test_round_trip_continues_bitwise() -> None:
    """Save after 3 steps, load into a fresh optimizer on copies of the params: the next steps
    are bitwise those of the uninterrupted run."""
    rng = np.random.default_rng(4)
    grads = [OrderedDict((k, rng.standard_normal(v.shape).astype(np.float32)) for k, v in _params().items())
             for _ in range(6)]
    full_p = _params()
    full = lionk.LionK(full_p, lr=0.02, betas=(0.8, 0.95), weight_decay=0.3, kappa="huber")
    for g in grads[:3]:
        full.step(g)
    sd = full.state_dict()
    resumed_p = OrderedDict((k, v.copy()) for k, v in full_p.items())
    resumed = lionk.LionK(resumed_p, lr=0.5)
    resumed.load_state_dict(sd)
    for g in grads[3:]:
        full.step(g)
        resumed.step(g)
    for k in full_p:
        assert_bitwise_equal(resumed_p[k], full_p[k], f"params[{k}]")
        assert_bitwise_equal(resumed.state.momentum[k], full.state.momentum[k], f"momentum[{k}]")


@pytest.mark.parametrize(("mutate", "exc", "fragments"), [
    (lambda m: m.pop("['b']"), ValueError, ["missing", "params['b']"]),
    (lambda m: m.__setitem__("['x']", np.zeros(3, np.float32)), ValueError, ["['x']", "no param has this path"]),
    (lambda m: m.__setitem__("['b']", np.zeros(4, np.float32)), ValueError, ["['b']", "(3,)", "(4,)"]),
    (lambda m: m.__setitem__("['b']", np.zeros(3, np.float64)), TypeError, ["['b']", "float32", "float64"]),
    (lambda m: m.__setitem__("['b']", [0.0, 0.0, 0.0]), TypeError, ["['b']", "expected an array"]),
])
def test_path_mismatch_refused_naming_the_path(mutate, exc, fragments) -> None:
    """A missing path, an unknown path, or an array of the wrong shape/dtype/type under a path:
    refused naming that path; nothing changes (validated before anything is written)."""
    opt = _trained(_params())
    other = _trained(_params(), seed=9)
    sd = other.state_dict()
    mutate(sd["momentum"])
    snap = _snap(opt)
    _raises(exc, *fragments, fn=lambda: opt.load_state_dict(sd))
    _assert_same(opt, snap, "refused")


# ---------------------------------------------------------------------------------------------
# lionk 0.1's positional format.


def _positional(opt, order=None):
    """A lionk 0.1 state dict of ``opt`` (momenta in a list; no format/version keys)."""
    sd = opt.state_dict()
    paths = list(sd["momentum"]) if order is None else order
    return {"count": sd["count"], "skipped": sd["skipped"],
            "momentum": [sd["momentum"][p] for p in paths], "hyperparams": sd["hyperparams"]}


def test_positional_plain_dict_loads() -> None:
    """Guard: a list saved for a plain dict tree (whose order never depended on JAX) loads."""
    params = {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}
    first = _trained(params)
    second = lionk.LionK({k: v.copy() for k, v in params.items()}, lr=0.01)
    second.load_state_dict(_positional(first))
    for k in params:
        assert_bitwise_equal(second.state.momentum[k], first.state.momentum[k], k)


def test_positional_ambiguous_ordered_dict_refused() -> None:
    """An OrderedDict out of sorted order whose same-shaped leaves could be in either of lionk
    0.1's orders (sorted without JAX, insertion order with JAX): refused with a message saying
    why and what to do; nothing changes. (Was loaded by position, possibly swapped.)"""
    first = _trained(_params(("v", "b", "w")))  # b and v both (3,): sorted b, v, w fits too
    opt = _trained(_params(("v", "b", "w")), seed=5)
    snap = _snap(opt)
    msg = _raises(ValueError, "ambiguous", "OrderedDict", fn=lambda: opt.load_state_dict(_positional(first)))
    assert "leaf_paths" in msg
    _assert_same(opt, snap, "ambiguous")


def test_positional_sorted_order_loads_when_only_it_fits() -> None:
    """An OrderedDict ('v' (4,), 'a' (2,)) saved by lionk 0.1 without JAX (sorted: a, v): only
    the sorted order fits the shapes, so the list loads into the right leaves. (Failed before:
    the list was matched in insertion order and refused on the shape.)"""
    params = OrderedDict([("v", np.zeros(4, np.float32)), ("a", np.zeros(2, np.float32))])
    first = _trained(params)
    sd = _positional(first, order=["['a']", "['v']"])
    second = lionk.LionK(OrderedDict((k, v.copy()) for k, v in params.items()), lr=0.01)
    second.load_state_dict(sd)
    for k in params:
        assert_bitwise_equal(second.state.momentum[k], first.state.momentum[k], k)
    # and the insertion order (lionk 0.1 with JAX, or this version's keys as a list) loads too
    third = lionk.LionK(OrderedDict((k, v.copy()) for k, v in params.items()), lr=0.01)
    third.load_state_dict(_positional(first))
    for k in params:
        assert_bitwise_equal(third.state.momentum[k], first.state.momentum[k], k)


def test_positional_wrong_length_refused() -> None:
    """Guard: a list of another length: ValueError with both counts; nothing changes."""
    opt = _trained(_params())
    sd = _positional(opt)
    sd["momentum"] = sd["momentum"][:-1]
    snap = _snap(opt)
    _raises(ValueError, "expected 3 arrays", "received 2", fn=lambda: opt.load_state_dict(sd))
    _assert_same(opt, snap, "short list")


# ---------------------------------------------------------------------------------------------
# Forward compatibility.


def test_added_and_missing_options_load() -> None:
    """A dict of this version with an option a later version may add (unknown keys in
    hyperparams and at the top level) loads; one without the optional nan_policy / kappa /
    skipped / format / version (an older writer) loads with the current values filled in."""
    first = _trained(_params(), kappa="huber", nan_policy="skip")
    sd = first.state_dict()
    sd["hyperparams"]["trust_region"] = 0.5
    sd["ema"] = {"decay": 0.999}
    opt = lionk.LionK(_params(), lr=0.1)
    opt.load_state_dict(sd)
    assert opt.kappa == first.kappa and opt.nan_policy == "skip" and opt.lr == 0.01
    older = first.state_dict()
    for k in ("nan_policy", "kappa"):
        del older["hyperparams"][k]
    for k in ("skipped", "format", "version"):
        del older[k]
    opt2 = lionk.LionK(_params(), lr=0.1, kappa="sign", nan_policy="raise")
    opt2.load_state_dict(older)
    assert opt2.kappa.name == "sign" and opt2.nan_policy == "raise" and opt2.state.skipped == 0
    assert opt2.lr == 0.01 and opt2.weight_decay == 0.1
    for k in first.params:
        assert_bitwise_equal(opt2.state.momentum[k], first.state.momentum[k], k)


# ---------------------------------------------------------------------------------------------
# Malformed hyperparams: a clear error, nothing changed.


MALFORMED = [
    ("hyperparams a list", lambda hp: [0.01, (0.9, 0.99), 0.1], TypeError,
     ["state_dict['hyperparams']", "dict", "list"]),
    ("missing lr", lambda hp: {k: v for k, v in hp.items() if k != "lr"}, KeyError,
     ["state_dict['hyperparams']", "'lr'"]),
    ("lr a string", lambda hp: {**hp, "lr": "0.01"}, TypeError, ["state_dict['hyperparams']", "lr", "'0.01'"]),
    ("betas a string", lambda hp: {**hp, "betas": "00"}, TypeError, ["state_dict['hyperparams']", "betas"]),
    ("kappa unknown name", lambda hp: {**hp, "kappa": "nope"}, KeyError,
     ["state_dict['hyperparams']['kappa']", "nope"]),
    ("kappa a number", lambda hp: {**hp, "kappa": 5}, TypeError, ["state_dict['hyperparams']['kappa']", "5"]),
    ("kappa spec with a bad name", lambda hp: {**hp, "kappa": {"name": 3, "params": {}}}, TypeError,
     ["state_dict['hyperparams']['kappa']"]),
    ("kappa params of a str", lambda hp: {**hp, "kappa": {"name": "huber", "params": {"delta": "1"}}},
     TypeError, ["state_dict['hyperparams']['kappa']", "delta"]),
    ("nan_policy", lambda hp: {**hp, "nan_policy": "ignore"}, ValueError,
     ["state_dict['hyperparams']['nan_policy']", "'ignore'"]),
]


@pytest.mark.parametrize(("label", "mutate", "exc", "fragments"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_hyperparams(label, mutate, exc, fragments) -> None:
    """A malformed hyperparams entry (a list, no lr, a string lr or betas, an unknown or
    non-spec κ, bad κ parameters, an unknown nan_policy): an exception naming
    state_dict['hyperparams'] and the key; momenta, counters and hyper-parameters unchanged.
    (Before: AttributeError/"string indices must be integers"/bare KeyError('lr'), or the string
    lr was accepted.)"""
    opt = _trained(_params())
    sd = _trained(_params(), seed=3, steps=5).state_dict()
    sd["hyperparams"] = mutate(sd["hyperparams"])
    snap = _snap(opt)
    _raises(exc, *fragments, fn=lambda: opt.load_state_dict(sd))
    _assert_same(opt, snap, label)


def test_kappa_as_a_registered_name_loads() -> None:
    """hyperparams['kappa'] may be a registered name (as torch's param groups allow): 'huber'
    loads as huber (failed with "string indices must be integers")."""
    sd = _trained(_params()).state_dict()
    sd["hyperparams"]["kappa"] = "huber"
    opt = lionk.LionK(_params(), lr=0.01)
    opt.load_state_dict(sd)
    assert opt.kappa == lionk.kappa.get("huber")


@pytest.mark.parametrize(("key", "value", "exc"), [
    ("count", 1.5, TypeError), ("count", "3", TypeError), ("count", -1, ValueError),
    ("skipped", -2, ValueError), ("skipped", True, TypeError), ("format", "lionk.Other", ValueError),
    ("version", 0, ValueError), ("momentum", 7, TypeError),
])
def test_bad_counters_and_markers(key, value, exc) -> None:
    """count / skipped / format / version / momentum of the wrong type or value: an exception
    naming state_dict['<key>']; nothing changes."""
    opt = _trained(_params())
    sd = {**_trained(_params(), seed=2).state_dict(), key: value}
    snap = _snap(opt)
    _raises(exc, f"state_dict['{key}']", fn=lambda: opt.load_state_dict(sd))
    _assert_same(opt, snap, key)


# ---------------------------------------------------------------------------------------------
# The two LionK classes.


def test_torch_state_dict_into_array_lionk() -> None:
    """A lionk.torch.LionK (torch.optim) state dict given to lionk.LionK.load_state_dict: a
    ValueError saying where it came from and which method loads it (was a KeyError listing
    missing keys); nothing changes."""
    torch = pytest.importorskip("torch")
    import lionk.torch as lt

    p = torch.nn.Parameter(torch.ones(3))
    topt = lt.LionK([p], lr=0.01)
    p.grad = torch.ones(3)
    topt.step()
    opt = _trained(_params())
    snap = _snap(opt)
    _raises(ValueError, "lionk.torch.LionK", "param_groups", fn=lambda: opt.load_state_dict(topt.state_dict()))
    _assert_same(opt, snap, "torch dict")


def test_array_state_dict_into_torch_lionk() -> None:
    """Guard: a lionk.LionK state dict given to lionk.torch.LionK: ValueError naming lionk.LionK."""
    torch = pytest.importorskip("torch")
    import lionk.torch as lt

    topt = lt.LionK([torch.nn.Parameter(torch.ones(3))], lr=0.01)
    sd = _trained(_params()).state_dict()
    _raises(ValueError, "lionk.LionK", fn=lambda: topt.load_state_dict(sd))
