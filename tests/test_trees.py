"""lionk.tree: one tree convention (optree), whatever else the process has imported.

Regression tests for the trust issue's first case: leaf order used to depend on whether JAX was
imported (an ``OrderedDict`` was flattened sorted without JAX and in insertion order with it), so
a state dict saved in one process could swap the momenta of same-shaped leaves in another.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lionk
from lionk.tree import flatten, tree_map, unflatten

Point = collections.namedtuple("Point", "x y")

_ORDER_SCRIPT = textwrap.dedent(
    """
    import collections, json, sys
    if sys.argv[1] == "jax":
        import jax  # noqa: F401  (imported before lionk flattens anything)
    import numpy as np
    import lionk
    t = collections.OrderedDict([("b", np.zeros(2)), ("a", np.ones(2))])
    d = collections.defaultdict(list, [("b", np.zeros(1)), ("a", np.ones(1))])
    out = {"ordered": lionk.tree.leaf_paths(t), "default": lionk.tree.leaf_paths(d),
           "jax": "jax" in sys.modules}
    print(json.dumps(out))
    """
)


def _paths_in_fresh_process(with_jax: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", _ORDER_SCRIPT, "jax" if with_jax else "none"],
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_leaf_order_does_not_depend_on_jax_being_imported() -> None:
    pytest.importorskip("jax")
    without, with_jax = _paths_in_fresh_process(False), _paths_in_fresh_process(True)
    assert not without["jax"] and with_jax["jax"]
    assert without["ordered"] == with_jax["ordered"] == ["['b']", "['a']"]  # insertion order
    assert without["default"] == with_jax["default"] == ["['a']", "['b']"]  # sorted keys


def test_order_matches_jax_tree_util_on_plain_containers() -> None:
    jax = pytest.importorskip("jax")
    tree = {"z": [np.zeros(1), Point(np.ones(1), None)],
            "o": collections.OrderedDict([("q", np.ones(2)), ("p", np.zeros(3))]),
            "d": collections.defaultdict(int, {"k": np.ones(4), "c": np.ones(5)})}
    mine = flatten(tree)[0]
    theirs = jax.tree_util.tree_leaves(tree)
    assert [id(a) for a in mine] == [id(a) for a in theirs]


def test_containers_come_back_as_the_type_that_went_in() -> None:
    od = collections.OrderedDict([("b", np.full(2, 1.0)), ("a", np.full(2, 2.0))])
    dd = collections.defaultdict(list, {"w": np.ones(3)})
    tree = {"od": od, "dd": dd, "pt": Point(np.ones(1), np.zeros(1)), "none": None}
    new, state = lionk.step(tree, tree_map(np.ones_like, tree), lionk.init(tree), lr=0.1)
    for t in (new, state.momentum):
        assert type(t["od"]) is collections.OrderedDict and list(t["od"]) == ["b", "a"]
        assert type(t["dd"]) is collections.defaultdict and t["dd"].default_factory is list
        assert type(t["pt"]) is Point and t["none"] is None
    assert new["od"]["b"][0] == np.float64(1.0) - 0.1  # the update went to the right leaf


def test_mixed_int_and_str_keys_are_a_valid_tree() -> None:
    tree = {1: np.ones(2), "a": np.zeros(2), 0: np.full(2, 3.0)}
    leaves, treedef, paths = flatten(tree)
    assert paths == ["[0]", "[1]", "['a']"]  # ints before strings, each sorted
    assert unflatten(treedef, leaves) == tree or all(
        np.array_equal(unflatten(treedef, leaves)[k], tree[k]) for k in tree)
    new, _ = lionk.step(tree, {k: v.copy() for k, v in tree.items()}, lionk.init(tree), lr=0.1)
    assert set(new) == {0, 1, "a"}


def test_jax_registered_nodes_are_nodes_not_leaves() -> None:
    jax = pytest.importorskip("jax")
    import dataclasses

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Layer:
        w: object
        b: object

    layer = Layer(jax.numpy.ones(2), jax.numpy.zeros(3))
    leaves, treedef, paths = flatten({"layer": layer})
    assert paths == ["['layer'].w", "['layer'].b"]
    assert isinstance(unflatten(treedef, leaves)["layer"], Layer)
    new, state = lionk.step({"layer": layer}, {"layer": layer}, lionk.init({"layer": layer}),
                            lr=0.5)
    assert isinstance(new["layer"], Layer) and isinstance(state.momentum["layer"], Layer)


def test_unflatten_with_the_wrong_number_of_leaves_raises() -> None:
    _, treedef, _ = flatten([np.ones(1), np.ones(1)])
    with pytest.raises(ValueError, match="expected 2 leaves, received 1"):
        unflatten(treedef, [np.ones(1)])
