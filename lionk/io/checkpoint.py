"""Portable checkpoints: ``save(path, params, state)`` and ``load(path, like=, xp=, device=)``.

A checkpoint is one `safetensors`_ file (format version 2), the container the model-sharing
ecosystem reads: ``safetensors.numpy.load_file(path)`` (or the torch / JAX loaders) gives every
array under a readable name, ``params/<path>`` and ``momentum/<path>`` (for example
``params/layer1/w``), in its own dtype (bfloat16 included). The format is specified field by
field in ``docs/checkpoints.md``. In short:

* an 8-byte little-endian header length, the JSON header, then the arrays' bytes (C order,
  little-endian), as safetensors writes them;
* the header's ``__metadata__`` (a string -> string map) holds ``format``
  (``"lionk.checkpoint"``), ``format_version`` (``"2"``), ``lionk`` (JSON: lionk version,
  ``count``, ``skipped``, the tree description, one record per leaf with its path, names,
  dtypes, shapes, offsets and the sha256 of its bytes, and the optimizer's hyper-parameters
  when known) and ``lionk_sha256`` (the sha256 of that JSON text);
* a truncated or corrupted file raises :class:`CheckpointError`; the header's size is checked
  against the file's (and a 100 MB cap) before it is read.

Files written by lionk 0.1 (format version 1, an ``.npz``) still load (:data:`READABLE_VERSIONS`).

Nothing is unpickled or imported by name: the tree is JSON, the arrays are raw bytes, and
namedtuple classes are rebuilt from their saved name and fields (see :func:`load`).

Besides ``(params, lionk.State)``, :func:`save` accepts a :class:`lionk.LionK`, a
``lionk.torch.LionK`` (its param groups included) or an optax ``LionKState``, and :func:`load`
restores into any of them (``into=``), so a run can continue on another library.

Importing this module imports neither torch nor jax: a backend is imported only when its arrays
are handed to :func:`save` or requested from :func:`load`.

.. _safetensors: https://huggingface.co/docs/safetensors
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import keyword
import math
import numbers
import os
import secrets
import socket
import stat
import struct
import sys
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import optree

from ..core import kappa as _kappa
from ..core.array_api import device as _device_of
from ..core.array_api import dtype_name as _dtype_name
from ..core.array_api import is_array, is_concrete, write_inplace
from ..core.step import State
from ..core.trees import flatten as _flatten

__all__ = ["save", "load", "info", "CheckpointError", "FORMAT", "FORMAT_VERSION",
           "READABLE_VERSIONS", "MAX_HEADER_BYTES"]

FORMAT = "lionk.checkpoint"
FORMAT_VERSION = 2
"""The version :func:`save` writes (2: safetensors)."""
READABLE_VERSIONS = (1, 2)
"""The versions :func:`load` reads (1: the ``.npz`` of lionk 0.1)."""
MAX_HEADER_BYTES = 100_000_000
"""Largest header (version 2) or metadata entry (version 1) :func:`load` reads; checked before
anything is allocated for it (safetensors has the same limit)."""
META_KEY = "__lionk__"  # version 1: the metadata entry of the .npz

# dtype name -> dtype of the stored bytes (always little-endian); bfloat16 as its raw bits
_STORAGE: dict[str, np.dtype[Any]] = {
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}
_ST_DTYPE = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64"}
_CHUNK = 1 << 24  # bytes read at a time when loading an array
_DEFLATE_MAX_RATIO = 1032  # the most a deflate stream can expand (version 1 entries)


class CheckpointError(ValueError):
    """A file that is not a readable lionk checkpoint: missing entries, truncated, corrupted
    (checksum mismatch), inconsistent metadata or an unsupported format version."""


# =============================================================================================
# Trees: the JSON description
#
#   {"type": "none"}
#   {"type": "leaf", "leaf": i}                                   i indexes "leaves"
#   {"type": "list" | "tuple", "children": [...]}
#   {"type": "dict" | "ordereddict" | "defaultdict", "keys": [k, ...], "children": [...]}
#                                                                  k: str or int, in dict order
#                              (defaultdict: also "factory", "list" | "dict" | ... | null)
#   {"type": "namedtuple", "name": "Point", "fields": [...], "children": [...]}
#
# Leaf i is the i-th leaf of lionk.tree.flatten(params) (optree's order: sorted keys for dict
# and defaultdict, insertion order for OrderedDict); its path is written like
# jax.tree_util.keystr: ['a'][0].x. The containers are those optree flattens by default:
# exactly dict, OrderedDict, defaultdict, list, tuple, namedtuple and None.

_DICT_KINDS = ("dict", "ordereddict", "defaultdict")
# defaultdict factories saved by name (any other is saved as None); never imported by name
_FACTORIES: dict[str, Any] = {f.__name__: f for f in (list, dict, set, tuple, int, float, str)}
_FACTORY_NAMES: dict[Any, str] = {f: n for n, f in _FACTORIES.items()}


def _dtype_str(dtype: Any) -> str:
    """``'float32'``, ``'bfloat16'``, ... for a dtype of any library (array-api-strict's dtypes
    print as ``array_api_strict.float32``)."""
    name = _dtype_name(dtype)
    return name.rsplit(".", 1)[-1]


def _kind(x: Any) -> str:
    if x is None:
        return "none"
    t = type(x)
    if t is dict:
        return "dict"
    if t is collections.OrderedDict:
        return "ordereddict"
    if t is collections.defaultdict:
        return "defaultdict"
    if t is list:
        return "list"
    if t is tuple:
        return "tuple"
    if optree.is_namedtuple_instance(x):
        return "namedtuple"
    return "leaf"


_KIND_WORDS = {
    "none": "None",
    "dict": "a dict",
    "ordereddict": "an OrderedDict",
    "defaultdict": "a defaultdict",
    "namedtuple": "a namedtuple",
    "list": "a list",
    "tuple": "a tuple",
    "leaf": "an array",
}


def _received(x: Any) -> str:
    k = _kind(x)
    if k == "leaf":
        return "an array" if is_array(x) else f"a {type(x).__name__}"
    if k == "namedtuple":
        return f"a namedtuple {type(x).__name__}{tuple(x._fields)}"
    return _KIND_WORDS[k]


def _key_path(k: Any) -> str:
    return f"[{k!r}]"


def _check_key(label: str, k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, (str, int)):
        raise TypeError(
            f"{label}: dict keys must be str or int to be saved; received the key {k!r} "
            f"of type {type(k).__name__}"
        )


def _namedtuple_ok(name: Any, fields: Any) -> bool:
    """Whether :func:`collections.namedtuple` accepts this class name and these fields."""
    names = [name, *fields]
    return (all(isinstance(n, str) and n.isidentifier() and not keyword.iskeyword(n)
                for n in names)
            and not any(f.startswith("_") for f in fields) and len(set(fields)) == len(fields))
# =============================================================================================
# Arrays: to numpy (save) and from numpy (load)


def _torch() -> Any:
    return sys.modules["torch"]


def _is_torch(x: Any) -> bool:
    t = sys.modules.get("torch")
    return t is not None and isinstance(x, t.Tensor)


def _is_cupy(x: Any) -> bool:
    cp = sys.modules.get("cupy")
    return cp is not None and isinstance(x, cp.ndarray)


def _to_host(x: Any, name: str) -> np.ndarray:
    """The values of array ``x`` (dtype ``name``) as a C-ordered little-endian numpy array of
    the storage dtype. Zero-copy through DLPack where the producer allows it; otherwise a copy:
    torch tensors are detached (and moved to the CPU), bfloat16 goes through its uint16 bits,
    non-CPU arrays are copied to the host."""
    if isinstance(x, np.generic):
        x = np.asarray(x)
    if isinstance(x, np.ndarray):
        a = x
    elif _is_torch(x):
        torch = _torch()
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()  # documented copy to the host
        t = t.resolve_conj().resolve_neg()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)  # numpy has no bfloat16: export the raw bits
        a = np.from_dlpack(t)
    elif _is_cupy(x):
        a = x.get()  # documented copy from the GPU
    else:
        try:
            a = np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError, AttributeError):
            # bfloat16 (not a DLPack dtype numpy accepts) or an array off the CPU: a copy
            a = np.asarray(x)
    storage = _STORAGE[name]
    if a.dtype.itemsize != storage.itemsize or (
        name != "bfloat16" and a.dtype.kind != storage.kind
    ):  # pragma: no cover - a backend that exported something unexpected
        raise TypeError(f"could not export a {name} array to numpy (received numpy {a.dtype})")
    if name == "bfloat16" and a.dtype.kind != "u":
        a = a.view(np.uint16)  # int16 bits from torch, or ml_dtypes.bfloat16 from numpy/jax
    return a.astype(storage, order="C", copy=False)


def _sha256(a: np.ndarray) -> str:
    data: Any = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return hashlib.sha256(data).hexdigest()


class _Target:
    """Where loaded arrays go: an array library (and a device)."""

    def __init__(self, kind: str, xp: Any, label: str) -> None:
        self.kind = kind  # numpy | torch | jax | array_api_strict | generic
        self.xp = xp
        self.label = label

    def check_dtype(self, name: str, where: str) -> None:
        """Raise before anything is converted when this target cannot hold dtype ``name``."""
        if name == "bfloat16":
            if self.kind == "numpy":
                try:
                    import ml_dtypes  # noqa: F401
                except ImportError:
                    raise TypeError(
                        f"{where}: is bfloat16, which numpy represents only with the ml_dtypes "
                        f"package (pip install ml_dtypes); or load with xp='torch' or 'jax'"
                    ) from None
            elif self.kind not in ("torch", "jax"):
                raise TypeError(f"{where}: is bfloat16, which {self.label} does not support")
        if name == "float64" and self.kind == "jax":
            jax = sys.modules["jax"]
            try:
                x64 = bool(jax.config.read("jax_enable_x64"))
            except Exception:  # pragma: no cover - older spellings of the flag
                x64 = bool(getattr(jax.config, "jax_enable_x64", False))
            if not x64:
                raise TypeError(
                    f"{where}: is float64, but JAX is in 32-bit mode and would silently round "
                    "it to float32; set jax.config.update('jax_enable_x64', True) before "
                    "loading"
                )

    def check_device(self, device: Any) -> None:
        if device is None:
            return
        if self.kind == "numpy" and device != "cpu":
            raise ValueError(f"device: numpy arrays live on 'cpu'; received {device!r}")
        if self.kind == "torch":
            try:
                _torch().device(device)
            except (RuntimeError, TypeError) as e:
                raise ValueError(f"device: not a torch device: {device!r} ({e})") from None

    def convert(self, a: np.ndarray, name: str, device: Any) -> Any:
        """An array of this target with the values (bits) of storage array ``a``."""
        if self.kind == "numpy":
            if name == "bfloat16":
                import ml_dtypes

                return a.view(ml_dtypes.bfloat16)
            return a
        if self.kind == "torch":
            torch = _torch()
            if name == "bfloat16":
                t = torch.from_dlpack(a.view(np.int16)).view(torch.bfloat16)
            else:
                t = torch.from_dlpack(a)
            return t if device is None else t.to(device)
        if self.kind == "jax":
            jax = sys.modules["jax"]
            jnp = sys.modules["jax.numpy"]
            if name == "bfloat16":
                a = a.view(jnp.bfloat16)
            x = jnp.asarray(a)  # a copy (JAX arrays are immutable)
            return x if device is None else jax.device_put(x, device)
        xp = self.xp
        try:
            x = xp.from_dlpack(a) if device is None else xp.from_dlpack(a, device=device)
        except (BufferError, RuntimeError, TypeError, ValueError, AttributeError):
            # e.g. a GPU library that cannot import host memory through DLPack: a copy
            x = xp.asarray(a) if device is None else xp.asarray(a, device=device)
        return x


_XP_NAMES = {
    "numpy": "numpy",
    "array_api_compat.numpy": "numpy",
    "torch": "torch",
    "array_api_compat.torch": "torch",
    "jax": "jax",
    "jax.numpy": "jax",
    "jax.experimental.array_api": "jax",
    "array_api_strict": "array_api_strict",
}
_XP_STRINGS = ("numpy", "torch", "jax", "array_api_strict", "cupy")


def _target_from_xp(xp: Any) -> _Target:
    import importlib

    if isinstance(xp, str):
        if xp not in _XP_STRINGS:
            raise ValueError(f"xp: expected one of {list(_XP_STRINGS)} or a namespace module; "
                             f"received {xp!r}")
        if xp == "jax":
            importlib.import_module("jax")
            return _Target("jax", importlib.import_module("jax.numpy"), "jax")
        mod = importlib.import_module(xp)
        kind = _XP_NAMES.get(xp, "generic")
        return _Target(kind, mod, xp)
    name = getattr(xp, "__name__", None)
    if not isinstance(name, str):
        raise TypeError(
            f"xp: expected an array namespace module (numpy, torch, jax.numpy, ...) or one of "
            f"{list(_XP_STRINGS)}; received {type(xp).__name__}"
        )
    known = _XP_NAMES.get(name)
    if known == "jax":
        return _Target("jax", importlib.import_module("jax.numpy"), "jax")
    if known is not None:
        return _Target(known, xp, name)
    if not (hasattr(xp, "from_dlpack") or hasattr(xp, "asarray")):
        raise TypeError(f"xp: module {name!r} is not an array namespace (no from_dlpack/asarray)")
    return _Target("generic", xp, name)


def _target_from_leaf(x: Any) -> _Target:
    import array_api_compat as aac

    if isinstance(x, (np.ndarray, np.generic)):
        return _Target("numpy", np, "numpy")
    if _is_torch(x):
        return _Target("torch", _torch(), "torch")
    if aac.is_jax_array(x):
        return _Target("jax", sys.modules["jax.numpy"], "jax")
    xp = aac.array_namespace(x)
    name = getattr(xp, "__name__", type(x).__module__)
    return _Target(_XP_NAMES.get(name, "generic"), xp, name)


# =============================================================================================
# save: validation and the tree description


def _as_int(label: str, v: Any) -> int:
    if isinstance(v, bool):
        raise TypeError(f"{label}: expected an integer >= 0; received {v!r}")
    if isinstance(v, (int, np.integer)):
        out = int(v)
    elif is_array(v):
        shape = tuple(v.shape)
        if shape != ():
            raise ValueError(f"{label}: expected an integer or a 0-d integer array; received "
                             f"an array of shape {shape}")
        dn = _dtype_str(v.dtype)
        if not (dn.startswith("int") or dn.startswith("uint")):
            raise TypeError(f"{label}: expected an integer dtype; received {dn}")
        if not is_concrete(v):
            raise TypeError(f"{label}: is traced (inside jax.jit); save outside the jitted "
                            "function")
        out = int(v.item()) if hasattr(v, "item") else int(v)
    else:
        raise TypeError(f"{label}: expected an integer >= 0; received {type(v).__name__}")
    if out < 0:
        raise ValueError(f"{label}: expected an integer >= 0; received {out}")
    return out


class _SaveLeaf:
    __slots__ = ("path", "parts", "x", "m", "xname", "mname", "shape", "node")

    def __init__(self, path: str, parts: list[str], x: Any, m: Any, xname: str, mname: str,
                 shape: tuple, node: dict[str, Any]) -> None:
        self.path, self.parts, self.x, self.m, self.node = path, parts, x, m, node
        self.xname, self.mname, self.shape = xname, mname, shape


def _leaf_dtype(label: str, x: Any) -> str:
    if not is_array(x):
        raise TypeError(f"{label}: expected an array (or a dict, OrderedDict, defaultdict, list, "
                        f"tuple, namedtuple or None of arrays); received {type(x).__name__}")
    if not is_concrete(x):
        raise TypeError(f"{label}: is traced (inside jax.jit); save outside the jitted function")
    name = _dtype_str(x.dtype)
    if name not in _STORAGE:
        raise TypeError(f"{label}: expected a dtype among {sorted(_STORAGE)}; received {name}")
    return name



def _describe(p: Any, m: Any, path: str, parts: list[str], leaves: list[_SaveLeaf]
              ) -> dict[str, Any]:
    """The JSON node of params subtree ``p``; checks momentum subtree ``m`` has its structure."""
    kind = _kind(p)
    mlabel = f"state.momentum{path}"
    if kind != "leaf" and _kind(m) != kind:
        raise TypeError(f"{mlabel}: expected {_KIND_WORDS[kind]} like params{path}; "
                        f"received {_received(m)}")
    if kind == "none":
        return {"type": "none"}
    if kind in _DICT_KINDS:
        keys = list(p)
        for k in keys:
            _check_key(f"params{path}", k)
        if set(m) != set(keys):
            missing = [k for k in keys if k not in m]
            extra = [k for k in m if k not in p]
            raise ValueError(f"{mlabel}: expected the keys of params{path}; missing {missing}, "
                             f"unexpected {extra}")
        kids = [_describe(p[k], m[k], path + _key_path(k), [*parts, str(k)], leaves)
                for k in keys]
        out: dict[str, Any] = {"type": kind, "keys": keys, "children": kids}
        if kind == "defaultdict":
            out["factory"] = _FACTORY_NAMES.get(p.default_factory)
        return out
    if kind == "namedtuple":
        fields = list(p._fields)
        if list(m._fields) != fields:
            raise ValueError(f"{mlabel}: expected the fields {fields} of params{path}; received "
                             f"{list(m._fields)}")
        kids = [_describe(a, b, f"{path}.{f}", [*parts, f], leaves)
                for f, a, b in zip(fields, p, m)]
        return {"type": "namedtuple", "name": type(p).__name__, "fields": fields,
                "children": kids}
    if kind in ("list", "tuple"):
        if len(m) != len(p):
            raise ValueError(f"{mlabel}: expected {len(p)} items like params{path}; received "
                             f"{len(m)}")
        kids = [_describe(a, b, f"{path}[{i}]", [*parts, str(i)], leaves)
                for i, (a, b) in enumerate(zip(p, m))]
        return {"type": kind, "children": kids}
    xname = _leaf_dtype(f"params{path}", p)
    mname = _leaf_dtype(mlabel, m)
    shape = tuple(int(s) for s in p.shape)
    mshape = tuple(int(s) for s in m.shape)
    if mshape != shape:
        raise ValueError(f"{mlabel}: expected shape {shape} like params{path}; received {mshape}")
    node: dict[str, Any] = {"type": "leaf", "leaf": len(leaves)}
    leaves.append(_SaveLeaf(path, parts, p, m, xname, mname, shape, node))
    return node


def _number_like_lionk(params: Any, leaves: list[_SaveLeaf]) -> list[_SaveLeaf]:
    """Number the leaves in lionk's flattening order (``lionk.tree.flatten``), so that leaf
    ``i`` of a checkpoint is leaf ``i`` of ``lionk.step`` and ``LionK``."""
    _, _, paths = _flatten(params)
    index = {p: i for i, p in enumerate(paths)}
    if sorted(index) != sorted(leaf.path for leaf in leaves):  # pragma: no cover - defensive
        return leaves
    out = sorted(leaves, key=lambda leaf: index[leaf.path])
    for i, leaf in enumerate(out):
        leaf.node["leaf"] = i
    return out


def _tensor_names(leaves: list[_SaveLeaf]) -> list[str]:
    """The readable name of each leaf (``layer1/w``; ``""`` for a lone array); the exact path
    strings (``['layer1']['w']``) when two readable names would coincide."""
    names = ["/".join(leaf.parts) for leaf in leaves]
    if len(set(names)) != len(names):
        names = [leaf.path for leaf in leaves]
    return names


def _torch_names(groups: list[dict[str, Any]], leaves: list[_SaveLeaf], names: list[str]
                 ) -> list[str]:
    """For a torch optimizer built from ``named_parameters()``: ``<group>/<param name>``
    (``params/0/fc1.weight``) instead of ``<group>/<index>``, when the names are unique."""
    out = []
    for leaf in leaves:
        gi, i = int(leaf.parts[0]), int(leaf.parts[1])
        pn = groups[gi].get("param_names")
        if not (isinstance(pn, list) and len(pn) > i and isinstance(pn[i], str) and pn[i]):
            return names
        out.append(f"{gi}/{pn[i]}")
    return out if len(set(out)) == len(out) else names


# --- hyper-parameters and κ as JSON ------------------------------------------------------------


def _kappa_to_spec(k: Any, where: str) -> Any:
    """A κ as JSON data: its registered name (a str) or the κ's own ``to_spec()`` (its params
    made JSON-safe)."""
    if isinstance(k, str):
        return k
    if isinstance(k, _kappa.Kappa):
        k = k.to_spec()
    if isinstance(k, Mapping) and set(k) == {"name", "params"}:
        return {"name": k["name"], "params": _jsonable(dict(k["params"]), f"{where}['params']")}
    raise TypeError(f"{where}: expected a kappa name, a lionk.kappa.Kappa or a "
                    f"{{'name', 'params'}} dict; received {type(k).__name__}")


def _kappa_from_spec(spec: Any, current: Any = None) -> _kappa.Kappa:
    """The κ of :func:`_kappa_to_spec`'s output: :func:`lionk.kappa.from_spec` (``current``
    when it is the same κ, so that an unregistered user κ survives a round trip)."""
    like = current if isinstance(current, _kappa.Kappa) else None
    return _kappa.from_spec(spec, like=like, where="checkpoint hyperparams['kappa']")


def _jsonable(v: Any, where: str) -> Any:
    """``v`` as JSON data (None, bool, int, finite float, str, lists, str-keyed dicts); numpy
    scalars and 0-d arrays become Python numbers, tuples lists, dtypes their names."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"{where}: expected a finite number; received {v!r}")
        return f
    if isinstance(v, (list, tuple)):
        return [_jsonable(a, f"{where}[{i}]") for i, a in enumerate(v)]
    if isinstance(v, Mapping):
        out = {}
        for k, a in v.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: expected str keys; received {k!r}")
            out[k] = _jsonable(a, f"{where}[{k!r}]")
        return out
    if is_array(v) and tuple(getattr(v, "shape", (1,))) == () and is_concrete(v):
        return _jsonable(v.item() if hasattr(v, "item") else float(v), where)
    t = sys.modules.get("torch")
    if t is not None and isinstance(v, t.dtype):
        return str(v).rsplit(".", 1)[-1]
    raise TypeError(f"{where}: cannot be saved in the checkpoint's metadata (expected numbers, "
                    f"strings, lists or dicts); received {type(v).__name__} {v!r}"[:300])


def _hyperparams_json(hp: Any, where: str) -> dict[str, Any]:
    if not isinstance(hp, Mapping):
        raise TypeError(f"{where}: expected a dict (lr, betas, weight_decay, kappa, ...); "
                        f"received {type(hp).__name__}")
    out = {k: v for k, v in hp.items() if k != "kappa"}
    out = _jsonable(out, where)
    if "kappa" in hp:
        out["kappa"] = _kappa_to_spec(hp["kappa"], f"{where}['kappa']")
    return out


# --- front-ends ------------------------------------------------------------------------------

_TORCH_GROUP_KEYS = ("lr", "betas", "weight_decay", "kappa", "maximize", "nan_policy",
                     "state_dtype")


def _is_torch_optimizer(x: Any) -> bool:
    t = sys.modules.get("torch")
    return t is not None and isinstance(x, t.optim.Optimizer)


def _is_lionk_torch(x: Any) -> bool:
    return _is_torch_optimizer(x) and all(
        all(k in g for k in _TORCH_GROUP_KEYS) for g in x.param_groups)


def _is_arrays_lionk(x: Any) -> bool:
    """A :class:`lionk.LionK` (duck-typed: ``io`` does not import the adapters)."""
    return (isinstance(getattr(type(x), "state", None), property)
            and isinstance(getattr(x, "state", None), State) and hasattr(x, "params")
            and hasattr(x, "kappa") and hasattr(x, "betas"))


def _is_optax_state(x: Any) -> bool:
    """An optax ``LionKState`` (``lionk.optax``), duck-typed: a namedtuple ``(count, mu)``."""
    return optree.is_namedtuple_instance(x) and tuple(x._fields) == ("count", "mu")


def _optax_in(state: Any, label: str) -> tuple[Any, Any] | None:
    """The ``LionKState`` in an optax state, and a function that puts a new one in its place:
    the state itself, or the one ``LionKState`` of an ``optax.chain`` state (a tuple, nested
    or not) whose other parts hold no arrays (``EmptyState``, ...). None when there is none;
    a TypeError when the other parts hold arrays (their state would be lost)."""
    if _is_optax_state(state):
        return state, lambda new: new
    if not isinstance(state, tuple):
        return None
    tree: Any = state
    accessors, leaves, treedef = optree.tree_flatten_with_accessor(
        tree, is_leaf=_is_optax_state, namespace="lionk")
    where = [i for i, leaf in enumerate(leaves) if _is_optax_state(leaf)]
    if len(where) != 1:
        return None
    others = [a.codify(label) for i, (a, leaf) in enumerate(zip(accessors, leaves))
              if i != where[0] and is_array(leaf)]
    if others:
        raise TypeError(f"{label}: an optax state whose parts other than the LionKState hold "
                        f"arrays ({others[:4]}); lionk checkpoints only the LionKState: pass "
                        f"{accessors[where[0]].codify(label)} and save the rest yourself")

    def put(new: Any) -> Any:
        out = list(leaves)
        out[where[0]] = new
        return treedef.unflatten(out)

    return leaves[where[0]], put


def _from_torch(opt: Any) -> tuple[Any, State, dict[str, Any]]:
    """params ``[[p, ...] per group]``, State and the front-end record of a torch LionK."""
    torch = sys.modules["torch"]
    sd = opt.state_dict()  # kappa objects as {"name", "params"} specs
    groups: list[Any] = []
    params: list[Any] = []
    momentum: list[Any] = []
    steps: list[list[int | None]] = []
    skipped = 0
    for gi, (g, sg) in enumerate(zip(opt.param_groups, sd["param_groups"])):
        opts = {k: v for k, v in sg.items() if k != "params"}
        rec = _jsonable({k: v for k, v in opts.items() if k != "kappa"},
                        f"params.param_groups[{gi}]")
        rec["kappa"] = _kappa_to_spec(opts["kappa"], f"params.param_groups[{gi}]['kappa']")
        groups.append(rec)
        skipped += int(opts.get("skipped", 0) or 0)
        ps: list[Any] = []
        ms: list[Any] = []
        ss: list[int | None] = []
        for p in g["params"]:
            st = opt.state.get(p)
            if st and "exp_avg" in st:
                ms.append(st["exp_avg"])
                ss.append(_as_int(f"state of param_groups[{gi}] param {len(ps)}: step",
                                  st["step"]))
            else:  # never stepped: zeros, and no state on load
                sdt = g.get("state_dtype")
                if isinstance(sdt, str):
                    sdt = getattr(torch, sdt)
                ms.append(torch.zeros_like(p, dtype=sdt or p.dtype))
                ss.append(None)
            ps.append(p)
        params.append(ps)
        momentum.append(ms)
        steps.append(ss)
    count = max([s for ss in steps for s in ss if s is not None], default=0)
    front = {"kind": "torch", "groups": groups, "steps": steps}
    return params, State(count, momentum, skipped), front


def _from_frontend(obj: Any) -> tuple[Any, State, dict[str, Any], dict[str, Any] | None]:
    if _is_lionk_torch(obj):
        params, state, front = _from_torch(obj)
        return params, state, front, None
    if _is_torch_optimizer(obj):
        raise TypeError(f"params: expected a lionk.torch.LionK (or params and a state); "
                        f"received the torch optimizer {type(obj).__name__}, whose state "
                        "lionk cannot resume")
    if _is_arrays_lionk(obj):
        hp = {"lr": obj.lr, "betas": obj.betas, "weight_decay": obj.weight_decay,
              "nan_policy": obj.nan_policy, "kappa": obj.kappa}
        return obj.params, obj.state, {"kind": "lionk.LionK"}, hp
    raise TypeError(f"state: expected a lionk.State or an optax LionKState (or, with no state, "
                    f"params a lionk.LionK or lionk.torch.LionK); received None with params "
                    f"of type {type(obj).__name__}")


# --- the file ----------------------------------------------------------------------------------


def _note(e: BaseException, msg: str) -> None:
    if hasattr(e, "add_note"):
        e.add_note(msg)


class _Entry:
    """One stored array: leaf ``i``'s params or momentum."""

    __slots__ = ("name", "leaf", "part", "x", "dtype", "shape", "nbytes", "begin", "sha256")

    def __init__(self, name: str, leaf: _SaveLeaf, part: str, x: Any, dtype: str) -> None:
        self.name, self.leaf, self.part, self.x, self.dtype = name, leaf, part, x, dtype
        self.shape = leaf.shape
        self.nbytes = math.prod(leaf.shape) * _STORAGE[dtype].itemsize
        self.begin = 0
        self.sha256 = "0" * 64

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "offsets": [self.begin, self.begin + self.nbytes], "sha256": self.sha256}


def _header(meta: dict[str, Any], entries: list[_Entry]) -> bytes:
    """The safetensors header (8-byte length + JSON padded with spaces to a multiple of 8)."""
    text = json.dumps(meta, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    head: dict[str, Any] = {"__metadata__": {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "lionk": text,
        "lionk_sha256": hashlib.sha256(text.encode("ascii")).hexdigest(),
    }}
    for e in entries:
        head[e.name] = {"dtype": _ST_DTYPE[e.dtype], "shape": list(e.shape),
                        "data_offsets": [e.begin, e.begin + e.nbytes]}
    raw = json.dumps(head, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    raw += " " * (-len(raw) % 8)
    data = raw.encode("ascii")
    return struct.pack("<Q", len(data)) + data


def _write(fh: Any, meta: dict[str, Any], leaves: list[_SaveLeaf], names: list[str]) -> None:
    """Write the safetensors file: a header with placeholder digests (the same length), the
    arrays one by one (each exported, hashed and written, then dropped), the final header."""
    entries = []
    for leaf, name in zip(leaves, names):
        entries.append(_Entry(f"params/{name}" if name else "params", leaf, "params", leaf.x,
                              leaf.xname))
        entries.append(_Entry(f"momentum/{name}" if name else "momentum", leaf, "momentum",
                              leaf.m, leaf.mname))
    # widest dtypes first: every array starts at a multiple of its itemsize
    order = sorted(range(len(entries)), key=lambda j: (-_STORAGE[entries[j].dtype].itemsize, j))
    pos = 0
    for j in order:
        entries[j].begin = pos
        pos += entries[j].nbytes
    by_leaf: dict[int, dict[str, _Entry]] = {}
    for e in entries:
        by_leaf.setdefault(id(e.leaf), {})[e.part] = e

    def build() -> bytes:
        meta["leaves"] = [{"path": leaf.path, "params": by_leaf[id(leaf)]["params"].record(),
                           "momentum": by_leaf[id(leaf)]["momentum"].record()}
                          for leaf in leaves]
        return _header(meta, [entries[j] for j in order])

    head = build()
    if len(head) - 8 > MAX_HEADER_BYTES:
        raise ValueError(f"params: the tree's description needs a {len(head) - 8}-byte header, "
                         f"more than the {MAX_HEADER_BYTES} bytes a reader accepts")
    fh.write(head)
    for j in order:
        e = entries[j]
        label = f"{e.part}{e.leaf.path}"
        try:
            a = _to_host(e.x, e.dtype)
        except BaseException as exc:
            _note(exc, f"lionk.checkpoint.save: while exporting {label} ({e.dtype}, shape "
                       f"{e.shape}); the previous file at this path is unchanged")
            raise
        data = a.reshape(-1).view(np.uint8)
        if data.nbytes != e.nbytes:  # pragma: no cover - a backend that exported a wrong size
            raise ValueError(f"{label}: exported {data.nbytes} bytes; expected {e.nbytes}")
        e.sha256 = _sha256(data)
        fh.write(data)
        del a, data
    final = build()
    if len(final) != len(head):  # pragma: no cover - digests have a fixed length
        raise RuntimeError("lionk.checkpoint.save: the header changed size while writing")
    fh.seek(0)
    fh.write(final)


# --- temporary files ---------------------------------------------------------------------------


def _tmp_prefix(path: str) -> str:
    """``.lionk-<path tag>-<host tag>-``: short (a valid file name of 255 bytes still gets a
    valid temporary name beside it), the same for every save to ``path`` from this host."""
    base = os.fsencode(os.path.basename(path))
    tag = hashlib.sha256(base).hexdigest()[:16]
    host = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
    return f".lionk-{tag}-{host}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive (another user's); anything else: assume alive
        return True
    return True


def _remove_stale(parent: str, prefix: str) -> None:
    """Remove the temporary files of earlier saves to the same path, from this host, whose
    process no longer exists (a save killed half-way). POSIX only (elsewhere nothing is
    removed: a process cannot be probed safely)."""
    if os.name != "posix":
        return
    try:
        names = os.listdir(parent)
    except OSError:
        return
    me = os.getpid()
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid_s = name[len(prefix):].split("-", 1)[0]
        if not pid_s.isdigit() or int(pid_s) == me or _pid_alive(int(pid_s)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(parent, name))


def save(path: str | os.PathLike[str], params: Any, state: Any = None, *,
         hyperparams: Mapping[str, Any] | None = None) -> None:
    """Write a checkpoint: ``params`` and ``state`` to one safetensors file.

    Forms::

        save(path, params, state)          # state: a lionk.State (lionk.step / lionk.init)
        save(path, params, opt_state)      # opt_state: an optax LionKState (lionk.optax),
                                           # or an optax.chain state holding one
        save(path, opt)                    # opt: a lionk.LionK or a lionk.torch.LionK

    A ``lionk.LionK`` is saved with its hyper-parameters; a ``lionk.torch.LionK`` with its param
    groups (options, and each param's ``step``), its params as the tree ``[[p, ...], ...]`` (one
    list per group) and each ``exp_avg`` as the momentum (zeros for a param never stepped).

    Everything is validated before anything is written; the file is written to a temporary file
    in the same directory (a short name; temporary files left by an earlier save to ``path``
    that was killed are removed first), flushed to disk and moved over ``path`` with
    :func:`os.replace`, so ``path`` holds either its previous contents or the complete new
    checkpoint; a replaced file keeps its permission bits. ``path`` is used as given.

    Args:
        path: the file to write; its directory must exist.
        params: a tree (dict with str/int keys, OrderedDict, defaultdict, list, tuple,
            namedtuple, None) of arrays of numpy, torch, jax, array-api-strict or any
            DLPack-capable library, with dtypes float16, bfloat16, float32 or float64; or an
            optimizer (above).
        state: a :class:`lionk.State` whose momentum has the structure and shapes of
            ``params`` (``count`` and ``skipped`` integers or concrete 0-d integer arrays), or
            an optax ``LionKState``; None when ``params`` is an optimizer.
        hyperparams: optional, stored for :func:`load` (``into=`` a ``lionk.LionK``) and
            :func:`info`: ``lr``, ``betas``, ``weight_decay``, ``kappa`` (a name or a
            :class:`lionk.kappa.Kappa`), ``nan_policy``; numbers and strings only.

    Raises:
        TypeError / ValueError: naming the argument and leaf path, with what was expected and
            what was received. FileNotFoundError when the directory does not exist. An error
            while an array is exported carries a note naming its leaf.
    """
    # --- validate everything first ----------------------------------------------------------
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike; received {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"path: {path!r} is a directory; expected a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"path: the directory {parent!r} does not exist")
    front: dict[str, Any] | None = None
    hp: Any = None
    if state is None:
        params, state, front, hp = _from_frontend(params)
    elif (found := _optax_in(state, "state")) is not None:
        lk = found[0]
        state = State(_as_int("state.count", lk.count), lk.mu, 0)
        front = {"kind": "optax"}
    else:
        for attr in ("count", "momentum"):
            if not hasattr(state, attr):
                raise TypeError(f"state: expected a lionk.State (count, momentum, skipped) or "
                                f"an optax LionKState; received {type(state).__name__}")
    if hyperparams is not None:
        hp = hyperparams
    hp_json = None if hp is None else _hyperparams_json(hp, "hyperparams")
    count = _as_int("state.count", state.count)
    skipped = _as_int("state.skipped", getattr(state, "skipped", 0))
    leaves: list[_SaveLeaf] = []
    tree = _describe(params, state.momentum, "", [], leaves)
    leaves = _number_like_lionk(params, leaves)
    names = _tensor_names(leaves)
    if front is not None and front.get("kind") == "torch":
        names = _torch_names(front["groups"], leaves, names)

    from .._version import __version__

    meta: dict[str, Any] = {"lionk_version": __version__, "count": count, "skipped": skipped,
                            "tree": tree, "leaves": [], "frontend": front,
                            "hyperparams": hp_json}

    # --- write to a temporary file, then move it into place ----------------------------------
    try:
        mode: int | None = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = None
    prefix = _tmp_prefix(path)
    _remove_stale(parent, prefix)
    tmp = os.path.join(parent, f"{prefix}{os.getpid()}-{secrets.token_hex(4)}.tmp")
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(fd, "w+b") as fh:
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), mode)  # a 0600 checkpoint stays 0600
            _write(fh, meta, leaves, names)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError, AttributeError):  # make the rename durable (POSIX)
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
# =============================================================================================
# load: reading and checking the file (both versions share the tree and record checks)


class _Meta:
    """What the file says, checked: counters, tree, one record per leaf, and how to read an
    array (``read(i, part, label)``: the storage array, verified)."""

    def __init__(self, version: int, count: int, skipped: int, tree: Any,
                 leaves: list[dict[str, Any]], paths: list[str], lionk_version: Any = None,
                 frontend: Any = None, hyperparams: Any = None) -> None:
        self.version, self.count, self.skipped, self.tree = version, count, skipped, tree
        self.leaves, self.paths, self.lionk_version = leaves, paths, lionk_version
        self.frontend, self.hyperparams = frontend, hyperparams
        self.bad_namedtuples: list[str] = []
        self.read: Any = None
        self.mmap = False  # version 2: map arrays copy-on-write instead of reading them


def _bad(where: str, msg: str) -> CheckpointError:
    return CheckpointError(f"{where}: {msg}")


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON constant {token}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _json(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


def _check_tree(node: Any, path: str, paths: dict[int, str], where: str,
                bad_nt: list[str]) -> None:
    """Validate a JSON tree node; record the path of every leaf index, and the namedtuples
    :func:`collections.namedtuple` cannot rebuild (``bad_nt``)."""
    bad = lambda msg: _bad(where, f"invalid metadata: tree node at {path or '(root)'}: {msg}")  # noqa: E731
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        raise bad("expected an object with a 'type'")
    kind = node["type"]
    if kind == "none":
        return
    if kind == "leaf":
        i = node.get("leaf")
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise bad("expected 'leaf' to be an integer >= 0")
        if i in paths:
            raise bad(f"leaf index {i} appears twice")
        paths[i] = path
        return
    kids = node.get("children")
    if not isinstance(kids, list):
        raise bad("expected a 'children' list")
    if kind in ("list", "tuple"):
        names = [f"[{i}]" for i in range(len(kids))]
    elif kind in _DICT_KINDS:
        keys = node.get("keys")
        if (not isinstance(keys, list) or len(keys) != len(kids)
                or any(isinstance(k, bool) or not isinstance(k, (str, int)) for k in keys)
                or len(set(map(repr, keys))) != len(keys)):
            raise bad("expected 'keys': distinct str/int keys, one per child")
        names = [_key_path(k) for k in keys]
    elif kind == "namedtuple":
        fields, name = node.get("fields"), node.get("name")
        if (not isinstance(fields, list) or len(fields) != len(kids)
                or not all(isinstance(f, str) and f.isidentifier() for f in fields)
                or len(set(fields)) != len(fields)
                or not isinstance(name, str) or not name.isidentifier()):
            raise bad("expected a 'name' and distinct identifier 'fields', one per child")
        if not _namedtuple_ok(name, fields):
            bad_nt.append(f"{path or '(root)'}: {name}{tuple(fields)}")
        names = [f".{f}" for f in fields]
    else:
        raise bad(f"unknown type {kind!r}")
    for nm, kid in zip(names, kids):
        _check_tree(kid, path + nm, paths, where, bad_nt)


def _check_common(meta: Any, where: str, version: int) -> _Meta:
    """Counters, tree and per-leaf records (dtype, shape, sha256) of either version."""
    for key in ("count", "skipped"):
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise _bad(where, f"invalid metadata: {key} {v!r} is not an integer >= 0")
    leaves = meta.get("leaves")
    if not isinstance(leaves, list):
        raise _bad(where, "invalid metadata: 'leaves' is not a list")
    paths: dict[int, str] = {}
    bad_nt: list[str] = []
    _check_tree(meta.get("tree"), "", paths, where, bad_nt)
    if sorted(paths) != list(range(len(leaves))):
        raise _bad(where, f"invalid metadata: the tree has leaf indices {sorted(paths)}; "
                          f"expected 0..{len(leaves) - 1}")
    for i, rec in enumerate(leaves):
        if not isinstance(rec, dict) or rec.get("path") != paths[i]:
            got = rec.get("path") if isinstance(rec, dict) else rec
            raise _bad(where, f"invalid metadata: leaves[{i}].path {got!r} does not match the "
                              f"tree ({paths[i]!r})")
        for part in ("params", "momentum"):
            r = rec.get(part)
            label = f"leaves[{i}].{part}"
            if not isinstance(r, dict):
                raise _bad(where, f"invalid metadata: {label} is not an object")
            if r.get("dtype") not in _STORAGE:
                raise _bad(where, f"invalid metadata: {label}.dtype {r.get('dtype')!r} is not "
                                  f"one of {sorted(_STORAGE)}")
            shape = r.get("shape")
            if not isinstance(shape, list) or any(
                    isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
                raise _bad(where, f"invalid metadata: {label}.shape {shape!r} is not a list of "
                                  "integers >= 0")
            digest = r.get("sha256")
            if not (isinstance(digest, str) and len(digest) == 64
                    and all(c in "0123456789abcdef" for c in digest)):
                raise _bad(where, f"invalid metadata: {label}.sha256 is not 64 lowercase hex "
                                  "digits")
        if rec["params"]["shape"] != rec["momentum"]["shape"]:
            raise _bad(where, f"invalid metadata: leaves[{i}] params and momentum shapes differ")
    out = _Meta(version, meta["count"], meta["skipped"], meta["tree"], leaves,
                [paths[i] for i in range(len(leaves))], meta.get("lionk_version"))
    out.bad_namedtuples = bad_nt
    return out


def _verify(a: np.ndarray, rec: dict[str, Any], label: str, where: str) -> np.ndarray:
    if _sha256(a) != rec["sha256"]:
        raise _bad(where, f"{label}: checksum error, the sha256 of the stored bytes does not "
                          "match the metadata (corrupted file)")
    return a


# --- version 2: safetensors ------------------------------------------------------------------


def _read_meta_v2(fh: Any, size: int, where: str) -> _Meta:
    """Parse and check the header of a safetensors checkpoint (bounded before it is read)."""
    first = fh.read(8)
    if len(first) < 8:
        raise _bad(where, f"not a lionk checkpoint: the file has {size} bytes (truncated, or "
                          "neither a safetensors file nor a lionk 0.1 .npz)")
    (n,) = struct.unpack("<Q", first)
    if n > size - 8 or n > MAX_HEADER_BYTES or n < 2:
        raise _bad(where, f"not a lionk checkpoint, or truncated: its first 8 bytes give a "
                          f"{n}-byte header, but the file has {size - 8} bytes after them "
                          f"(and a header may have at most {MAX_HEADER_BYTES})")
    raw = fh.read(n)
    if len(raw) != n:
        raise _bad(where, "truncated file: the header ends early")
    try:
        head = _json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad(where, f"not a lionk checkpoint: the header is not valid UTF-8 JSON "
                          f"(truncated or corrupted file, or not a safetensors file: {e})"
                   ) from None
    md = head.get("__metadata__") if isinstance(head, dict) else None
    if not isinstance(md, dict) or md.get("format") != FORMAT:
        fmt = md.get("format") if isinstance(md, dict) else None
        raise _bad(where, f"not a lionk checkpoint: its safetensors metadata 'format' is "
                          f"{fmt!r}; expected {FORMAT!r}")
    version = md.get("format_version")
    if version != str(FORMAT_VERSION):
        raise _bad(where, f"format_version {version!r} is not supported by this lionk (it "
                          f"reads versions {list(READABLE_VERSIONS)})")
    text = md.get("lionk")
    if not isinstance(text, str) or not isinstance(md.get("lionk_sha256"), str):
        raise _bad(where, "invalid metadata: 'lionk' and 'lionk_sha256' must be strings")
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != md["lionk_sha256"]:
        raise _bad(where, "checksum error: the sha256 of the 'lionk' metadata does not match "
                          "'lionk_sha256' (corrupted file)")
    try:
        meta = _json(text)
    except (ValueError, RecursionError) as e:
        raise _bad(where, f"invalid metadata: 'lionk' is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise _bad(where, "invalid metadata: 'lionk' is not a JSON object")
    out = _check_common(meta, where, 2)
    out.frontend, out.hyperparams = meta.get("frontend"), meta.get("hyperparams")
    if out.frontend is not None and not isinstance(out.frontend, dict):
        raise _bad(where, "invalid metadata: 'frontend' is not an object")
    # the safetensors entries: exactly the records, same dtype/shape/offsets, tiling the data
    tensors = {k: v for k, v in head.items() if k != "__metadata__"}
    spans = []
    seen: set[str] = set()
    for i, rec in enumerate(out.leaves):
        for part in ("params", "momentum"):
            r = rec[part]
            label = f"{part}{out.paths[i]}"
            name, offs = r.get("name"), r.get("offsets")
            if not isinstance(name, str) or name in seen or name not in tensors:
                raise _bad(where, f"{label}: the tensor {name!r} is missing from the file "
                                  "(truncated or corrupted)")
            seen.add(name)
            nbytes = math.prod(r["shape"]) * _STORAGE[r["dtype"]].itemsize
            if (not isinstance(offs, list) or len(offs) != 2
                    or any(isinstance(o, bool) or not isinstance(o, int) for o in offs)
                    or offs[1] - offs[0] != nbytes or offs[0] < 0):
                raise _bad(where, f"invalid metadata: {label}: offsets {offs!r} for "
                                  f"{nbytes} bytes")
            want = {"dtype": _ST_DTYPE[r["dtype"]], "shape": r["shape"], "data_offsets": offs}
            if tensors[name] != want:
                raise _bad(where, f"{label}: the safetensors entry {name!r} is "
                                  f"{tensors[name]!r}; the lionk metadata says {want!r}")
            spans.append((offs[0], offs[1]))
    if set(tensors) != seen:
        extra = sorted(set(tensors) - seen)[:5]
        raise _bad(where, f"invalid metadata: tensors not described by lionk: {extra}")
    spans.sort()
    end = 0
    for lo, hi in spans:
        if lo != end:
            raise _bad(where, "invalid metadata: the arrays' offsets overlap or leave gaps")
        end = hi
    if size != 8 + n + end:
        raise _bad(where, f"the file has {size} bytes; its header describes {8 + n + end} "
                          f"({'truncated' if size < 8 + n + end else 'trailing bytes'})")
    start = 8 + n

    def read(i: int, part: str, label: str) -> np.ndarray:
        rec = out.leaves[i][part]
        storage = _STORAGE[rec["dtype"]]
        shape = tuple(rec["shape"])
        if out.mmap and shape and math.prod(shape):
            # pages are read on demand and stay file-backed until written (copy-on-write)
            m = np.memmap(fh, dtype=storage, mode="c", offset=start + rec["offsets"][0],
                          shape=shape)
            return _verify(m, rec, label, where)
        a = np.empty(shape, dtype=storage)
        view = a.reshape(-1).view(np.uint8)
        fh.seek(start + rec["offsets"][0])
        pos = 0
        while pos < view.nbytes:
            got = fh.readinto(view[pos:pos + _CHUNK])
            if not got:
                raise _bad(where, f"{label}: the data ends after {pos} of {view.nbytes} bytes "
                                  "(the file was truncated while reading)")
            pos += got
        return _verify(a, rec, label, where)

    out.read = read
    return out


# --- version 1: the .npz of lionk 0.1 ----------------------------------------------------------



class _NpyVersionError(ValueError):
    """A .npy entry of a format version lionk 0.1 did not write."""


def _npy_header(f: Any) -> tuple[Any, bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the .npy entry open in ``f`` (versions 1.0, 2.0)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise _NpyVersionError(f"unsupported .npy version {version}")


def _read_meta_entry_v1(zf: zipfile.ZipFile, where: str) -> bytes:
    """The bytes of the metadata array, its size bounded before anything is inflated: the
    zip's declared size, the deflate ratio, and the ``.npy`` header's shape are checked first,
    and no more bytes are read than declared."""
    info = zf.getinfo(META_KEY + ".npy")
    limit = min(MAX_HEADER_BYTES, _DEFLATE_MAX_RATIO * info.compress_size + 4096)
    if info.file_size > limit:
        raise _bad(where, f"the metadata entry '{META_KEY}' declares {info.file_size} bytes "
                          f"(stored in {info.compress_size}); more than the {limit} accepted")
    with zf.open(info) as f:
        shape, fortran, dtype = _npy_header(f)
        if dtype.hasobject:
            raise ValueError("an object array (pickled data is never loaded)")
        if dtype != np.uint8 or len(shape) != 1:
            raise _bad(where, f"not a lionk checkpoint: '{META_KEY}' is a {dtype} array of "
                              f"shape {shape}; expected 1-D uint8 (UTF-8 JSON)")
        if shape[0] != info.file_size - f.tell():
            raise _bad(where, f"the metadata entry '{META_KEY}' says {shape[0]} bytes; the "
                              f"entry holds {info.file_size - f.tell()} (truncated or corrupted)")
        chunks, pos = [], 0
        while pos < shape[0]:
            chunk = f.read(min(_CHUNK, shape[0] - pos))
            if not chunk:
                raise EOFError(f"the data ends after {pos} of {shape[0]} bytes")
            chunks.append(chunk)
            pos += len(chunk)
        if f.read(1):  # also makes zipfile verify the entry's CRC-32
            raise ValueError("trailing bytes after the array")
    return b"".join(chunks)


def _read_meta_v1(zf: zipfile.ZipFile, where: str) -> _Meta:
    names = set(zf.namelist())
    if META_KEY + ".npy" not in names:
        shown = sorted(names)[:8]
        raise _bad(where, f"not a lionk checkpoint: it has no '{META_KEY}' entry (entries: "
                          f"{shown}{' ...' if len(names) > 8 else ''})")
    try:
        raw = _read_meta_entry_v1(zf, where)
    except CheckpointError:
        raise
    except zipfile.BadZipFile as e:
        raise _bad(where, f"the metadata entry '{META_KEY}' is corrupted ({e})") from None
    except Exception as e:  # any other failure to decode the entry: a damaged or foreign file
        raise _bad(where, f"the metadata entry '{META_KEY}' is not a readable uint8 .npy "
                          f"array ({type(e).__name__}: {e})") from None
    try:
        meta = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(where, f"the metadata entry '{META_KEY}' is not valid UTF-8 JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise _bad(where, f"not a lionk checkpoint: metadata 'format' is {fmt!r}; expected "
                          f"{FORMAT!r}")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _bad(where, f"invalid metadata: format_version {version!r}")
    if version != 1:
        raise _bad(where, f"format_version {version} is not supported by this lionk in an .npz "
                          f"file (it reads versions {list(READABLE_VERSIONS)}; .npz is version "
                          f"1; written by lionk {meta.get('lionk_version')!r})")
    out = _check_common(meta, where, 1)
    for i, rec in enumerate(out.leaves):
        for part in ("params", "momentum"):
            r, label = rec[part], f"leaves[{i}].{part}"
            if r.get("storage") != _STORAGE[r["dtype"]].str:
                raise _bad(where, f"invalid metadata: {label}.storage {r.get('storage')!r} for "
                                  f"dtype {r['dtype']}; expected {_STORAGE[r['dtype']].str!r}")
            if r.get("key") != f"{part}/{i}":
                raise _bad(where, f"invalid metadata: {label}.key {r.get('key')!r}; expected "
                                  f"'{part}/{i}'")
            if r["key"] + ".npy" not in names:
                raise _bad(where, f"{part}{out.paths[i]}: the entry '{r['key']}.npy' is "
                                  "missing (truncated or incomplete file)")

    def read(i: int, part: str, label: str) -> np.ndarray:
        return _read_leaf_v1(zf, out.leaves[i][part], label, where)

    out.read = read
    return out


def _read_leaf_v1(zf: zipfile.ZipFile, rec: dict[str, Any], label: str, where: str) -> np.ndarray:
    """The stored array of record ``rec``, checked against its header, shape, size, zip CRC-32
    and sha256; a writeable numpy array of the storage dtype that nothing else references."""
    storage = _STORAGE[rec["dtype"]]
    shape = tuple(rec["shape"])
    member = rec["key"] + ".npy"
    try:
        with zf.open(member) as f:
            try:
                hshape, fortran, hdtype = _npy_header(f)
            except _NpyVersionError as exc:
                raise _bad(where, f"{label}: {exc}") from None
            if hdtype != storage or tuple(hshape) != shape or (fortran and len(shape) > 1):
                raise _bad(where, f"{label}: the stored array is {hdtype} of shape "
                                  f"{tuple(hshape)}{' (Fortran order)' if fortran else ''}; the "
                                  f"metadata says {storage} of shape {shape} in C order")
            nbytes = math.prod(shape) * storage.itemsize
            zinfo = zf.getinfo(member)
            if zinfo.file_size - f.tell() != nbytes:
                raise _bad(where, f"{label}: the entry holds {zinfo.file_size - f.tell()} data "
                                  f"bytes; shape {shape} of {storage} needs {nbytes}")
            out = np.empty(shape, dtype=storage)
            view = out.reshape(-1).view(np.uint8)
            pos = 0
            while pos < nbytes:
                chunk = f.read(min(_CHUNK, nbytes - pos))
                if not chunk:
                    raise EOFError(f"the data ends after {pos} of {nbytes} bytes")
                view[pos:pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                pos += len(chunk)
            if f.read(1):  # also makes zipfile verify the entry's CRC-32 if it has not yet
                raise _bad(where, f"{label}: trailing bytes after the array data")
    except CheckpointError:
        raise
    except zipfile.BadZipFile as e:
        raise _bad(where, f"{label}: checksum error, the entry '{member}' is corrupted ({e})"
                   ) from None
    except Exception as e:  # any other failure to decode the entry: a damaged file
        raise _bad(where, f"{label}: the entry '{member}' is not readable (truncated or "
                          f"corrupted file: {type(e).__name__}: {e})") from None
    if _sha256(out) != rec["sha256"]:
        raise _bad(where, f"{label}: checksum error, the sha256 of the stored bytes does not "
                          "match the metadata (corrupted file)")
    return out


# =============================================================================================
# load: matching like and building the trees

_NAMEDTUPLES: dict[tuple[str, tuple[str, ...]], type] = {}


def _namedtuple_class(name: str, fields: list[str]) -> type:
    key = (name, tuple(fields))
    if key not in _NAMEDTUPLES:
        _NAMEDTUPLES[key] = collections.namedtuple(name, fields)  # type: ignore[misc]
    return _NAMEDTUPLES[key]


def _build_stored(node: dict[str, Any], values: list[Any]) -> Any:
    kind = node["type"]
    if kind == "none":
        return None
    if kind == "leaf":
        return values[node["leaf"]]
    kids = [_build_stored(c, values) for c in node["children"]]
    if kind == "dict":
        return dict(zip(node["keys"], kids))
    if kind == "ordereddict":
        return collections.OrderedDict(zip(node["keys"], kids))
    if kind == "defaultdict":  # a built-in default factory comes back; any other is None
        return collections.defaultdict(_FACTORIES.get(node.get("factory")),  # type: ignore[arg-type]
                                       zip(node["keys"], kids))
    if kind == "namedtuple":
        return _namedtuple_class(node["name"], node["fields"])(*kids)
    return kids if kind == "list" else tuple(kids)


def _match_like(like: Any, node: dict[str, Any], path: str,
                out: list[tuple[int, Any, str]]) -> None:
    """Check that ``like`` has the stored structure; collect (leaf index, like leaf, path)."""
    label = f"like{path}"
    kind = node["type"]
    lk = _kind(like)
    if lk in _DICT_KINDS and kind in _DICT_KINDS:
        lk = kind  # any dict kind matches by key; the result takes like's type
    if lk != kind:
        want = "a dict" if kind in _DICT_KINDS else _KIND_WORDS[kind]
        if kind == "namedtuple":
            want = f"a namedtuple {node['name']}{tuple(node['fields'])}"
        elif kind in ("list", "tuple"):
            want += f" of {len(node['children'])} items"
        raise TypeError(f"{label}: expected {want} (as saved); received {_received(like)}")
    if kind == "none":
        return
    if kind == "leaf":
        if not is_array(like):
            raise TypeError(f"{label}: expected an array; received {type(like).__name__}")
        out.append((node["leaf"], like, path))
        return
    kids = node["children"]
    if kind in _DICT_KINDS:
        keys = node["keys"]
        missing = [k for k in keys if k not in like]
        extra = [k for k in like if k not in keys]
        if missing or extra:
            raise ValueError(f"{label}: expected the keys {keys} (as saved); missing {missing}, "
                             f"unexpected {extra}")
        by_key = dict(zip(keys, kids))
        for k in like:
            _match_like(like[k], by_key[k], path + _key_path(k), out)
        return
    if kind == "namedtuple":
        if list(like._fields) != node["fields"]:
            raise ValueError(f"{label}: expected the fields {node['fields']} (as saved); "
                             f"received {list(like._fields)}")
        for f, a, c in zip(like._fields, like, kids):
            _match_like(a, c, f"{path}.{f}", out)
        return
    if len(like) != len(kids):
        raise ValueError(f"{label}: expected a {kind} of {len(kids)} items (as saved); "
                         f"received {len(like)}")
    for i, (a, c) in enumerate(zip(like, kids)):
        _match_like(a, c, f"{path}[{i}]", out)


def _build_like(like: Any, node: dict[str, Any], values: list[Any]) -> Any:
    """A tree of ``like``'s containers (its dict order and namedtuple classes) with ``values``."""
    kind = node["type"]
    if kind == "none":
        return None
    if kind == "leaf":
        return values[node["leaf"]]
    kids = node["children"]
    if kind in _DICT_KINDS:
        by_key = dict(zip(node["keys"], kids))
        items = [(k, _build_like(like[k], by_key[k], values)) for k in like]
        if type(like) is collections.defaultdict:
            return collections.defaultdict(like.default_factory, items)
        return type(like)(items)
    built = [_build_like(a, c, values) for a, c in zip(like, kids)]
    if kind == "namedtuple":
        return type(like)(*built)
    return built if kind == "list" else tuple(built)


# =============================================================================================
# load


@contextlib.contextmanager
def _opened(path: Any) -> Any:
    """Open and check a checkpoint of either version; yields its :class:`_Meta` (whose
    ``read`` works while the context is open)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike; received {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    where = f"checkpoint {path!r}"
    with open(path, "rb") as fh:  # FileNotFoundError / IsADirectoryError as they are
        size = os.fstat(fh.fileno()).st_size
        magic = fh.read(4)
        fh.seek(0)
        if magic[:2] == b"PK":  # a zip: lionk 0.1's .npz (format version 1)
            try:
                zf = zipfile.ZipFile(fh)
            except Exception as e:  # BadZipFile, and whatever a damaged directory provokes
                raise _bad(where, f"not a readable .npz (zip) file: truncated or corrupted "
                                  f"({type(e).__name__}: {e})") from None
            with zf:
                try:
                    meta = _read_meta_v1(zf, where)
                except CheckpointError:
                    raise
                except Exception as e:  # e.g. RecursionError from an absurdly nested tree
                    raise _bad(where, f"truncated or corrupted file ({type(e).__name__}: {e})"
                               ) from None
                yield meta, where
        else:
            try:
                meta = _read_meta_v2(fh, size, where)
            except CheckpointError:
                raise
            except Exception as e:  # e.g. RecursionError from an absurdly nested tree
                raise _bad(where, f"truncated or corrupted file ({type(e).__name__}: {e})"
                           ) from None
            yield meta, where


def info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a checkpoint holds, from its metadata alone (no array is read): ``format_version``,
    ``lionk_version``, ``count``, ``skipped``, ``leaves`` (per leaf: ``path``, and for
    ``params`` and ``momentum`` the ``dtype``, ``shape`` and, in version 2, the safetensors
    tensor ``name``), ``frontend`` (which optimizer saved it: ``None``, ``"lionk.LionK"``,
    ``"torch"`` with its param groups, or ``"optax"``) and ``hyperparams`` (or None).
    Raises :class:`CheckpointError` as :func:`load` does."""
    with _opened(path) as (meta, _):
        leaves = []
        for p, rec in zip(meta.paths, meta.leaves):
            item: dict[str, Any] = {"path": p}
            for part in ("params", "momentum"):
                r = rec[part]
                item[part] = {"dtype": r["dtype"], "shape": tuple(r["shape"])}
                if "name" in r:
                    item[part]["name"] = r["name"]
            leaves.append(item)
        return {"format_version": meta.version, "lionk_version": meta.lionk_version,
                "count": meta.count, "skipped": meta.skipped, "leaves": leaves,
                "frontend": meta.frontend, "hyperparams": meta.hyperparams}


def load(
    path: str | os.PathLike[str],
    *,
    like: Any = None,
    xp: Any = None,
    device: Any = None,
    into: Any = None,
    mmap: bool = False,
) -> tuple[Any, Any]:
    """Read a checkpoint written by :func:`save` (either format version):
    ``(params, lionk.State(count, momentum, skipped))``.

    Args:
        path: the checkpoint file.
        like: a params tree; the saved leaves are matched to its leaves by path, and its
            structure (dict keys, list/tuple lengths, namedtuple fields), shapes and dtypes must
            equal the saved ones. The arrays come back in its library, on the device of its
            matching leaf, in its containers (dict types and order, namedtuple classes); torch
            leaves that require grad give params that require grad.
        xp: instead of ``like``: the library to load into, a namespace module (``numpy``,
            ``torch``, ``jax.numpy``, ``array_api_strict``, an ``array_api_compat`` namespace, or
            any module with ``from_dlpack``) or one of ``"numpy"``, ``"torch"``, ``"jax"``,
            ``"array_api_strict"``, ``"cupy"``. Default (neither given): numpy.
        device: put every array on this device of the target library (overrides ``like``'s).
        into: restore into an optimizer instead: a :class:`lionk.LionK` or a
            ``lionk.torch.LionK`` (its params and momentum are overwritten in place, its
            counters set; its hyper-parameters too when the file was saved from the same kind
            of optimizer, as their ``load_state_dict`` does; ``like`` is its params, so do not
            pass one), or an optax ``LionKState`` (a template, e.g. ``opt.init(params)``:
            the result's state is a new ``LionKState``, or the template with its
            ``LionKState`` replaced for an ``optax.chain`` state; pass ``like=`` your JAX
            params, else ``xp="jax"`` is used). The saved tree must have the optimizer's paths: a torch
            LionK's params are ``[[p, ...], ...]`` (one list per param group).
        mmap: (format version 2) map each array from the file instead of reading it into new
            memory: NumPy arrays come back as copy-on-write ``numpy.memmap`` views (pages are
            read when touched, memory is used only for what is written; the file is never
            modified), torch tensors share them; other libraries copy as usual. Each array is
            still verified (its sha256 reads it once). Keep the file in place while they live.

    Without ``like`` the containers are rebuilt from the file: dicts, OrderedDicts and
    defaultdicts (with their factory when it is ``list``, ``dict``, ``set``, ``tuple``,
    ``int``, ``float`` or ``str``, else None) in their saved order, lists, tuples, and
    namedtuples as :func:`collections.namedtuple` classes with the saved name and fields (the
    original class is never imported). ``count`` and ``skipped`` are Python ints. Nothing is
    returned, and nothing written into ``into``, unless every array was read, verified
    (sha256) and converted.

    Returns:
        ``(params, state)``: ``state`` a :class:`lionk.State`, or a ``LionKState`` for an optax
        ``into``; for an optimizer ``into``, its own params and state.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError (a ValueError): not a lionk checkpoint, truncated, corrupted, or of an
            unsupported format version.
        TypeError / ValueError: bad arguments, or ``like`` (``into``) differs from the saved
            tree (the message names the leaf path, what was saved and what was received).
    """
    # --- arguments --------------------------------------------------------------------------
    if like is not None and xp is not None:
        raise TypeError("load: pass like= (a params tree) or xp= (a namespace), not both")
    kind_into = None
    if into is not None:
        if _is_lionk_torch(into):
            kind_into = "torch"
        elif _is_arrays_lionk(into):
            kind_into = "lionk.LionK"
        elif _optax_in(into, "into") is not None:
            kind_into = "optax"
        else:
            raise TypeError(f"into: expected a lionk.LionK, a lionk.torch.LionK or an optax "
                            f"LionKState (or an optax.chain state holding one); received "
                            f"{type(into).__name__}")
        if kind_into != "optax":
            if like is not None or xp is not None:
                raise TypeError(f"load: into= a {kind_into} loads into its own params; do not "
                                "pass like= or xp=")
            like = ([list(g["params"]) for g in into.param_groups] if kind_into == "torch"
                    else into.params)
        elif like is None and xp is None:
            xp = "jax"
    like_leaves: list[Any] = []
    if like is not None:
        # walk like once here, to reject a malformed like before the file is opened
        _collect_like(like, "", like_leaves)
    if xp is not None:
        target = _target_from_xp(xp)
    elif like_leaves:
        target = _target_from_leaf(like_leaves[0][0])
        for leaf, p in like_leaves:
            other = _target_from_leaf(leaf)
            if other.kind != target.kind or other.label != target.label:
                raise TypeError(f"like{p}: is a {other.label} array, but like{like_leaves[0][1]}"
                                f" is a {target.label} array; expected one array library")
    else:
        target = _Target("numpy", np, "numpy")
    target.check_device(device)

    # --- the file ---------------------------------------------------------------------------
    if not isinstance(mmap, bool):
        raise TypeError(f"mmap: expected a bool; received {type(mmap).__name__}")
    with _opened(path) as (meta, where):
        meta.mmap = mmap
        n = len(meta.leaves)
        if like is None and meta.bad_namedtuples:
            raise _bad(where, f"the saved namedtuple {meta.bad_namedtuples[0]} cannot be "
                              "rebuilt by collections.namedtuple (a field name that is a "
                              "keyword or starts with '_'); pass like= a tree with your own "
                              "class")
        # which like leaf (if any) goes with each stored leaf; check shapes and dtypes
        like_for: list[Any] = [None] * n
        if like is not None:
            matched: list[tuple[int, Any, str]] = []
            _match_like(like, meta.tree, "", matched)
            for i, leaf, p in matched:
                rec = meta.leaves[i]["params"]
                shape = tuple(int(s) for s in leaf.shape)
                if shape != tuple(rec["shape"]):
                    raise ValueError(f"like{p}: expected shape {tuple(rec['shape'])} (as "
                                     f"saved); received {shape}")
                dn = _dtype_str(leaf.dtype)
                if dn != rec["dtype"]:
                    raise TypeError(f"like{p}: expected dtype {rec['dtype']} (as saved); "
                                    f"received {dn}")
                like_for[i] = leaf
        for i in range(n):
            for part in ("params", "momentum"):
                target.check_dtype(meta.leaves[i][part]["dtype"], f"{part}{meta.paths[i]}")
        restore = _prepare_into(kind_into, into, meta, where) if kind_into else None
        # read, verify and convert every array; nothing is returned unless all succeed
        values: dict[str, list[Any]] = {"params": [None] * n, "momentum": [None] * n}
        for i in range(n):
            dev = device
            if dev is None and like_for[i] is not None:
                dev = _device_of(like_for[i])
            for part in ("params", "momentum"):
                rec = meta.leaves[i][part]
                label = f"{part}{meta.paths[i]}"
                a = meta.read(i, part, label)
                x = _convert(target, a, rec, dev, label)
                if part == "params" and _wants_grad(like_for[i]) and kind_into is None:
                    x = x.requires_grad_(True)
                values[part][i] = x

    if like is not None:
        params = _build_like(like, meta.tree, values["params"])
        momentum = _build_like(like, meta.tree, values["momentum"])
    else:
        params = _build_stored(meta.tree, values["params"])
        momentum = _build_stored(meta.tree, values["momentum"])
    if restore is not None:
        return restore(params, momentum)
    return params, State(meta.count, momentum, meta.skipped)


# --- restoring into an optimizer ---------------------------------------------------------------


def _prepare_into(kind: str, into: Any, meta: _Meta, where: str) -> Any:
    """Check (before any array is read) that the file can be restored into ``into``; return
    the function that does it once the arrays are loaded (it writes nothing before its own
    checks pass)."""
    front = meta.frontend or {}
    if kind == "optax":
        template, put = _optax_in(into, "into")  # type: ignore[misc]

        def to_optax(params: Any, momentum: Any) -> tuple[Any, Any]:
            cnt = template.count
            mod: Any = np
            if type(cnt).__module__.startswith(("jax", "jaxlib")):
                mod = sys.modules["jax.numpy"]
            dt = getattr(cnt, "dtype", np.int32)
            if meta.count > np.iinfo(dt).max:
                raise ValueError(f"into.count: the saved count {meta.count} does not fit "
                                 f"{np.dtype(dt).name}")
            new = type(template)(count=mod.asarray(meta.count, dtype=dt), mu=momentum)
            return params, put(new)
        return to_optax

    if kind == "lionk.LionK":
        hp = meta.hyperparams
        updates: dict[str, Any] = {}
        if isinstance(hp, dict):
            from ..core.step import check_nan_policy, make_hyper

            # what the file has replaces the optimizer's own; the rest is kept
            lr = hp.get("lr", into.lr)
            betas = hp.get("betas", into.betas)
            wd = hp.get("weight_decay", into.weight_decay)
            nan_policy = hp.get("nan_policy", into.nan_policy)
            try:
                make_hyper(lr, betas, wd)
                kap = _kappa_from_spec(hp["kappa"], into.kappa) if "kappa" in hp else into.kappa
                check_nan_policy(nan_policy)
            except (KeyError, TypeError, ValueError) as e:
                raise _bad(where, f"hyperparams: cannot be restored ({type(e).__name__}: {e})"
                           ) from None
            updates = dict(lr=lr, betas=tuple(betas), weight_decay=wd, nan_policy=nan_policy,
                           kappa=kap)
        ms, _, mpaths = _flatten(into.state.momentum)

        def to_lionk(params: Any, momentum: Any) -> tuple[Any, Any]:
            new_ms, _, _ = _flatten(momentum)
            for cur, new, p in zip(ms, new_ms, mpaths):
                if _dtype_str(cur.dtype) != _dtype_str(new.dtype):
                    raise TypeError(f"momentum{p}: the optimizer's momentum is "
                                    f"{_dtype_str(cur.dtype)}; the checkpoint's is "
                                    f"{_dtype_str(new.dtype)} (construct it with that "
                                    "state_dtype)")
            xs, _, _ = _flatten(into.params)
            new_xs, _, _ = _flatten(params)
            # from here on nothing can fail: same shapes, dtypes and libraries
            for cur, new in zip(xs, new_xs):
                write_inplace(cur, new)
            for cur, new in zip(ms, new_ms):
                write_inplace(cur, new)
            for k, v in updates.items():
                setattr(into, k, v)
            into._state = State(meta.count, into.state.momentum, meta.skipped)
            return into.params, into.state
        return to_lionk

    # torch
    groups = into.param_groups
    sizes = [len(g["params"]) for g in groups]
    steps: list[list[Any]]
    if front.get("kind") == "torch":
        steps = front.get("steps")  # type: ignore[assignment]
        saved_groups = front.get("groups")
        if (not isinstance(steps, list) or [len(s) if isinstance(s, list) else -1
                                            for s in steps] != sizes
                or any(s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 0)
                       for ss in steps for s in ss)):
            raise _bad(where, f"invalid metadata: frontend 'steps' do not match the "
                              f"optimizer's param groups (sizes {sizes})")
        if not isinstance(saved_groups, list) or len(saved_groups) != len(groups) \
                or not all(isinstance(g, dict) for g in saved_groups):
            raise _bad(where, f"invalid metadata: frontend 'groups' are not {len(groups)} "
                              "objects")
        options = [dict(g, betas=tuple(g["betas"])) if isinstance(g.get("betas"), list)
                   else dict(g) for g in saved_groups]
    else:
        c = None if meta.count == 0 else meta.count
        steps = [[c] * k for k in sizes]
        options = [{k: v for k, v in g.items() if k != "params"}
                   for g in into.state_dict()["param_groups"]]

    def to_torch(params: Any, momentum: Any) -> tuple[Any, Any]:
        torch = sys.modules["torch"]
        state, pgs, pid = {}, [], 0
        for opts, ms, ss in zip(options, momentum, steps):
            ids = []
            for m, s in zip(ms, ss):
                if s is not None:
                    state[pid] = {"step": s, "exp_avg": m}
                ids.append(pid)
                pid += 1
            pgs.append({**opts, "params": ids})
        into.load_state_dict({"state": state, "param_groups": pgs})  # validates, then writes
        with torch.no_grad():
            for g, ps in zip(groups, params):
                for p, new in zip(g["params"], ps):
                    p.copy_(new)
        return [list(g["params"]) for g in groups], State(meta.count, momentum, meta.skipped)
    return to_torch


def _collect_like(like: Any, path: str, out: list[tuple[Any, str]]) -> None:
    kind = _kind(like)
    if kind == "none":
        return
    if kind in _DICT_KINDS:
        for k, v in like.items():
            _collect_like(v, path + _key_path(k), out)
    elif kind == "namedtuple":
        for f, v in zip(like._fields, like):
            _collect_like(v, f"{path}.{f}", out)
    elif kind in ("list", "tuple"):
        for i, v in enumerate(like):
            _collect_like(v, f"{path}[{i}]", out)
    elif not is_array(like):
        raise TypeError(f"like{path}: expected an array (or a dict, OrderedDict, defaultdict, "
                        f"list, tuple, namedtuple or None of arrays); received "
                        f"{type(like).__name__}")
    else:
        out.append((like, path))


def _wants_grad(like_leaf: Any) -> bool:
    return _is_torch(like_leaf) and bool(like_leaf.requires_grad)


def _convert(target: _Target, a: np.ndarray, rec: dict[str, Any], dev: Any, label: str) -> Any:
    name = rec["dtype"]
    try:
        x = target.convert(a, name, dev)
    except Exception as e:
        if hasattr(e, "add_note"):
            e.add_note(f"lionk.checkpoint.load: while converting {label} ({name}, shape "
                       f"{tuple(rec['shape'])}) to {target.label}"
                       f"{'' if dev is None else f' on device {dev!r}'}")
        raise
    got = _dtype_str(x.dtype)
    if got != name or tuple(int(s) for s in x.shape) != tuple(rec["shape"]):
        raise TypeError(f"{label}: {target.label} produced {got} of shape {tuple(x.shape)} for "
                        f"the saved {name} of shape {tuple(rec['shape'])}")
    return x

