"""Pytree utilities: flatten a nested structure of arrays into leaves and rebuild it.

A tree is one array, or nested ``dict`` / ``list`` / ``tuple`` (named tuples included) of trees;
``None`` is an empty subtree. When JAX is already imported, ``jax.tree_util`` is used instead, so
every registered JAX pytree node (flax structs, optax states, ...) works too; both agree on the
plain containers (dict keys are sorted, as JAX does).

Every leaf carries a path string such as ``['layer1']['w']`` used in error messages.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TreeDef", "flatten", "unflatten", "tree_map", "leaf_paths"]


@dataclass(frozen=True)
class _Node:
    kind: str  # "leaf", "none", "dict", "list", "tuple", "namedtuple"
    meta: Any = None  # dict keys, or namedtuple type
    children: tuple[_Node, ...] = ()

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)


@dataclass(frozen=True)
class TreeDef:
    """The structure of a tree, without its leaves. Two trees match when their TreeDefs are equal."""

    node: Any  # a _Node, or a jax PyTreeDef
    num_leaves: int

    def unflatten(self, leaves: Sequence[Any]) -> Any:
        leaves = list(leaves)
        if len(leaves) != self.num_leaves:
            raise ValueError(f"expected {self.num_leaves} leaves, received {len(leaves)}")
        if isinstance(self.node, _Node):
            it = iter(leaves)
            return _build(self.node, it)
        return sys.modules["jax"].tree_util.tree_unflatten(self.node, leaves)

    def __str__(self) -> str:
        return str(self.node)


def _use_jax() -> bool:
    return "jax" in sys.modules


def flatten(tree: Any) -> tuple[list[Any], TreeDef, list[str]]:
    """``(leaves, treedef, paths)`` of a tree; ``paths[i]`` names leaf ``i`` like ``['a'][0]``."""
    if _use_jax():
        jtu = sys.modules["jax"].tree_util
        with_path, treedef = jtu.tree_flatten_with_path(tree)
        jleaves = [leaf for _, leaf in with_path]
        jpaths = [jtu.keystr(path) for path, _ in with_path]
        return jleaves, TreeDef(treedef, len(jleaves)), jpaths
    leaves: list[Any] = []
    paths: list[str] = []
    node = _flatten(tree, "", leaves, paths)
    return leaves, TreeDef(node, len(leaves)), paths


_LEAF = _Node("leaf")  # shared: a model has hundreds of leaves, and the nodes are immutable
_NONE = _Node("none")


def _flatten(tree: Any, path: str, leaves: list[Any], paths: list[str]) -> _Node:
    if tree is None:
        return _NONE
    if isinstance(tree, dict):
        keys = tuple(sorted(tree))
        kids = tuple(_flatten(tree[k], f"{path}[{k!r}]", leaves, paths) for k in keys)
        return _Node("dict", keys, kids)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        kids = tuple(
            _flatten(v, f"{path}.{f}", leaves, paths) for f, v in zip(tree._fields, tree)
        )
        return _Node("namedtuple", type(tree), kids)
    if isinstance(tree, (list, tuple)):
        kind = "list" if isinstance(tree, list) else "tuple"
        kids = tuple(_flatten(v, f"{path}[{i}]", leaves, paths) for i, v in enumerate(tree))
        return _Node(kind, len(tree), kids)
    leaves.append(tree)
    paths.append(path)
    return _LEAF


def _build(node: _Node, it: Any) -> Any:
    if node.kind == "leaf":
        return next(it)
    if node.kind == "none":
        return None
    kids = [_build(c, it) for c in node.children]
    if node.kind == "dict":
        return dict(zip(node.meta, kids))
    if node.kind == "namedtuple":
        return node.meta(*kids)
    return kids if node.kind == "list" else tuple(kids)


def unflatten(treedef: TreeDef, leaves: Sequence[Any]) -> Any:
    """Rebuild a tree of structure ``treedef`` from ``leaves``."""
    return treedef.unflatten(leaves)


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``fn`` leaf by leaf to ``tree`` and trees of the same structure ``rest``."""
    leaves, treedef, _ = flatten(tree)
    others = [flatten(r)[0] for r in rest]
    return treedef.unflatten([fn(*args) for args in zip(leaves, *others)])


def leaf_paths(tree: Any) -> list[str]:
    """The path string of every leaf of ``tree``, in flattening order."""
    return flatten(tree)[2]
