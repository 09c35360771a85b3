"""Trees of arrays: one convention for all of lionk, on `optree`_.

A tree is one array, or nested containers of trees: ``dict`` (and ``OrderedDict``,
``defaultdict``), ``list``, ``tuple``, ``namedtuple``, dataclass-free containers registered with
optree, and — when JAX is imported — any node registered with ``jax.tree_util`` (flax structs,
optax states, ...). ``None`` is an empty subtree. :func:`lionk.step`, :class:`lionk.LionK`, its
``state_dict`` and the checkpoints all flatten through :func:`flatten`, so leaf order never
depends on what else the process has imported:

* ``dict`` and ``defaultdict``: keys sorted (ints before strings when both appear);
* ``OrderedDict``: insertion order (as JAX does; ``model.state_dict()`` is one);
* sequences and namedtuples: their own order.

These are also JAX's rules for the same containers, so a tree flattens to the same leaves with
or without JAX. Containers come back as the type that went in (an ``OrderedDict`` stays one, a
``defaultdict`` keeps its factory).

Every leaf carries a path string such as ``['layer1']['w']`` or ``[0].x``, used in error
messages and as the key of each momentum in state dicts and checkpoints.

.. _optree: https://github.com/metaopt/optree
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

import optree

__all__ = ["TreeDef", "flatten", "flatten_leaves", "unflatten", "tree_map", "leaf_paths", "NAMESPACE"]

TreeDef = optree.PyTreeSpec
"""The structure of a tree without its leaves (``num_leaves``, ``unflatten(leaves)``); two trees
match when their TreeDefs are equal."""

NAMESPACE = "lionk"
"""optree namespace of the node types lionk registers (JAX pytree nodes found in a tree)."""

_SCALARS = (int, float, complex, bool, str, bytes)
_JAX_NODES: set[type] = set()


class _JaxEntry(optree.PyTreeEntry):
    """A child of a JAX-registered node; its entry is the child's ``jax.tree_util.keystr``."""

    def __call__(self, obj: Any) -> Any:  # pragma: no cover - accessors are only codified
        raise NotImplementedError("children of JAX nodes are reached through jax.tree_util")

    def codify(self, /, node: str = "") -> str:
        return f"{node}{self.entry}"


def _jax_flatten(node: Any) -> tuple[list[Any], Any, list[str]]:
    jtu = sys.modules["jax"].tree_util
    with_path, treedef = jtu.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    return [c for _, c in with_path], treedef, [jtu.keystr(p) for p, _ in with_path]


def _jax_unflatten(treedef: Any, children: Any) -> Any:
    return treedef.unflatten(list(children))


def _register_jax_nodes(leaves: Sequence[Any]) -> bool:
    """Register with optree (namespace ``lionk``) the types among ``leaves`` that JAX treats as
    pytree nodes; True when one was new (the tree must then be flattened again)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return False
    jtu = jax.tree_util
    new = False
    for leaf in leaves:
        tp = type(leaf)
        if tp in _JAX_NODES or isinstance(leaf, _SCALARS) or hasattr(leaf, "__array_namespace__") \
                or hasattr(leaf, "__array__") or hasattr(leaf, "shape"):
            continue
        children = jtu.tree_leaves(leaf)
        if len(children) == 1 and children[0] is leaf:  # a leaf for JAX too
            continue
        # (a JAX node without children, such as optax's tree_map_params placeholder, is a node:
        # ``treedef_is_leaf`` would call it a leaf, its tree having a single node)
        optree.register_pytree_node(tp, _jax_flatten, _jax_unflatten, path_entry_type=_JaxEntry,
                                    namespace=NAMESPACE)
        _JAX_NODES.add(tp)
        new = True
    return new


def flatten(tree: Any) -> tuple[list[Any], TreeDef, list[str]]:
    """``(leaves, treedef, paths)`` of a tree; ``paths[i]`` names leaf ``i`` like ``['a'][0].x``."""
    leaves, treedef = flatten_leaves(tree)
    return leaves, treedef, paths_of(treedef)


def flatten_leaves(tree: Any) -> tuple[list[Any], TreeDef]:
    """``(leaves, treedef)`` of a tree: :func:`flatten` without the paths (a step needs them
    only for an error message, or once per structure)."""
    leaves, treedef = optree.tree_flatten(tree, namespace=NAMESPACE)
    if _register_jax_nodes(leaves):
        leaves, treedef = optree.tree_flatten(tree, namespace=NAMESPACE)
    return leaves, treedef


def paths_of(treedef: TreeDef) -> list[str]:
    """The path string of every leaf of a tree of structure ``treedef``.

    A step flattens three trees of one structure: the paths are computed once per structure
    (a bounded cache; see :func:`clear_path_cache`), which makes a small step's flattening about
    4× cheaper.
    """
    try:
        return list(_cached_paths(treedef))
    except TypeError:  # a node whose metadata is not hashable
        return _paths(treedef)


def _paths(treedef: TreeDef) -> list[str]:
    return [a.codify("") for a in treedef.accessors()]


@functools.lru_cache(maxsize=256)
def _cached_paths(treedef: TreeDef) -> tuple[str, ...]:
    return tuple(_paths(treedef))


def clear_path_cache() -> None:
    """Empty the cache of leaf paths per tree structure."""
    _cached_paths.cache_clear()


def structure(tree: Any) -> TreeDef:
    """The TreeDef of ``tree`` (cheaper than :func:`flatten` when the leaves are not needed)."""
    return flatten(tree)[1]


def unflatten(treedef: TreeDef, leaves: Sequence[Any]) -> Any:
    """Rebuild a tree of structure ``treedef`` from ``leaves`` (containers of the types that went
    in). Raises ValueError when the number of leaves differs."""
    leaves = list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"expected {treedef.num_leaves} leaves, received {len(leaves)}")
    return treedef.unflatten(leaves)


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` leaf by leaf to ``tree`` and trees of the same structure ``rest``."""
    leaves, treedef, _ = flatten(tree)
    others = []
    for r in rest:
        r_leaves, r_def, _ = flatten(r)
        if r_def != treedef:
            raise ValueError(f"tree_map: expected trees of structure {treedef}; received {r_def}")
        others.append(r_leaves)
    return treedef.unflatten([fn(*args) for args in zip(leaves, *others)])


def leaf_paths(tree: Any) -> list[str]:
    """The path string of every leaf of ``tree``, in flattening order."""
    return flatten(tree)[2]
