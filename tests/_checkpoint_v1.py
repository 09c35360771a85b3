"""lionk 0.1's checkpoint module (format version 1, ``.npz``), kept verbatim (imports made
absolute) so that the tests can write version-1 files and check that the current reader loads
them and rejects their corruptions. Not part of lionk.

Original docstring: portable checkpoints: ``save(path, params, state)`` and ``load(...)``.

A checkpoint is one ``.npz`` file (a zip archive of ``.npy`` files, as written by numpy) that any
tool able to read ``.npy`` and JSON can decode; the format is specified field by field in
``docs/checkpoints.md``. In short:

* ``__lionk__.npy``: a 1-D ``uint8`` array holding UTF-8 JSON metadata (format name and version,
  lionk version, ``count``, ``skipped``, the tree structure and one record per leaf);
* ``params/<i>.npy`` and ``momentum/<i>.npy``: leaf ``i`` of the params and of the momentum,
  C order, little-endian; ``bfloat16`` is stored as its raw ``uint16`` bits;
* every array record carries the sha256 of the stored bytes; the zip's CRC-32 covers every
  entry (the metadata included). A truncated or corrupted file raises :class:`CheckpointError`.

Nothing is unpickled: the tree is JSON, every ``.npy`` is read with pickling disabled, and
namedtuple classes are never imported by name (see :func:`load`).

Importing this module imports neither torch nor jax: a backend is imported only when its arrays
are handed to :func:`save` or requested from :func:`load`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
import secrets
import sys
import zipfile
from typing import Any

import numpy as np

from lionk.core.array_api import device as _device_of
from lionk.core.array_api import dtype_name as _dtype_name
from lionk.core.array_api import is_array, is_concrete

__all__ = ["save", "load", "CheckpointError", "FORMAT", "FORMAT_VERSION"]

FORMAT = "lionk.checkpoint"
FORMAT_VERSION = 1
META_KEY = "__lionk__"

# dtype name -> dtype of the stored .npy (always little-endian); bfloat16 as its raw bits
_STORAGE: dict[str, np.dtype[Any]] = {
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}
_CHUNK = 1 << 24  # bytes read at a time when loading an array
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip timestamps: identical inputs give identical files


class CheckpointError(ValueError):
    """A file that is not a readable lionk checkpoint: missing entries, truncated, corrupted
    (checksum mismatch), inconsistent metadata or an unsupported format version."""


# =============================================================================================
# Trees: the JSON description
#
#   {"type": "none"}
#   {"type": "leaf", "leaf": i}                                   i indexes "leaves"
#   {"type": "list" | "tuple", "children": [...]}
#   {"type": "dict", "keys": [k, ...], "children": [...]}          k: str or int, dict order
#   {"type": "namedtuple", "name": "Point", "fields": [...], "children": [...]}
#
# Leaves are numbered in the order of a depth-first walk of this description (children in the
# order listed); each leaf's path is written like jax.tree_util.keystr: ['a'][0].x


def _dtype_str(dtype: Any) -> str:
    """``'float32'``, ``'bfloat16'``, ... for a dtype of any library (array-api-strict's dtypes
    print as ``array_api_strict.float32``)."""
    name = _dtype_name(dtype)
    return name.rsplit(".", 1)[-1]


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _kind(x: Any) -> str:
    if x is None:
        return "none"
    if isinstance(x, dict):
        return "dict"
    if _is_namedtuple(x):
        return "namedtuple"
    if isinstance(x, list):
        return "list"
    if isinstance(x, tuple):
        return "tuple"
    return "leaf"


_KIND_WORDS = {
    "none": "None",
    "dict": "a dict",
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
# save


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
    __slots__ = ("path", "x", "m", "xname", "mname", "shape")

    def __init__(self, path: str, x: Any, m: Any, xname: str, mname: str, shape: tuple) -> None:
        self.path, self.x, self.m = path, x, m
        self.xname, self.mname, self.shape = xname, mname, shape


def _leaf_dtype(label: str, x: Any) -> str:
    if not is_array(x):
        raise TypeError(f"{label}: expected an array (or a dict, list, tuple, namedtuple or "
                        f"None of arrays); received {type(x).__name__}")
    if not is_concrete(x):
        raise TypeError(f"{label}: is traced (inside jax.jit); save outside the jitted function")
    name = _dtype_str(x.dtype)
    if name not in _STORAGE:
        raise TypeError(f"{label}: expected a dtype among {sorted(_STORAGE)}; received {name}")
    return name


def _describe(p: Any, m: Any, path: str, leaves: list[_SaveLeaf]) -> dict[str, Any]:
    """The JSON node of params subtree ``p``; checks momentum subtree ``m`` has its structure."""
    kind = _kind(p)
    mlabel = f"state.momentum{path}"
    if kind != "leaf" and _kind(m) != kind:
        raise TypeError(f"{mlabel}: expected {_KIND_WORDS[kind]} like params{path}; "
                        f"received {_received(m)}")
    if kind == "none":
        return {"type": "none"}
    if kind == "dict":
        keys = list(p)
        for k in keys:
            _check_key(f"params{path}", k)
        if set(m) != set(keys):
            missing = [k for k in keys if k not in m]
            extra = [k for k in m if k not in p]
            raise ValueError(f"{mlabel}: expected the keys of params{path}; missing {missing}, "
                             f"unexpected {extra}")
        kids = [_describe(p[k], m[k], path + _key_path(k), leaves) for k in keys]
        return {"type": "dict", "keys": keys, "children": kids}
    if kind == "namedtuple":
        fields = list(p._fields)
        if list(m._fields) != fields:
            raise ValueError(f"{mlabel}: expected the fields {fields} of params{path}; received "
                             f"{list(m._fields)}")
        kids = [_describe(a, b, f"{path}.{f}", leaves) for f, a, b in zip(fields, p, m)]
        return {"type": "namedtuple", "name": type(p).__name__, "fields": fields,
                "children": kids}
    if kind in ("list", "tuple"):
        if len(m) != len(p):
            raise ValueError(f"{mlabel}: expected {len(p)} items like params{path}; received "
                             f"{len(m)}")
        kids = [_describe(a, b, f"{path}[{i}]", leaves) for i, (a, b) in enumerate(zip(p, m))]
        return {"type": kind, "children": kids}
    xname = _leaf_dtype(f"params{path}", p)
    mname = _leaf_dtype(mlabel, m)
    shape = tuple(int(s) for s in p.shape)
    mshape = tuple(int(s) for s in m.shape)
    if mshape != shape:
        raise ValueError(f"{mlabel}: expected shape {shape} like params{path}; received {mshape}")
    leaves.append(_SaveLeaf(path, p, m, xname, mname, shape))
    return {"type": "leaf", "leaf": len(leaves) - 1}


def _zipinfo(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def _write_npy(zf: zipfile.ZipFile, key: str, a: np.ndarray) -> None:
    with zf.open(_zipinfo(key + ".npy"), mode="w", force_zip64=True) as f:
        np.lib.format.write_array(f, a, version=(1, 0), allow_pickle=False)


def save(path: str | os.PathLike[str], params: Any, state: Any) -> None:
    """Write ``params`` and ``state`` (a :class:`lionk.State`) to one portable ``.npz`` file.

    Everything is validated before anything is written; the file is written to a temporary file
    in the same directory and moved over ``path`` with :func:`os.replace`, so ``path`` holds
    either its previous contents or the complete new checkpoint. ``path`` is used as given (no
    ``.npz`` suffix is appended).

    Args:
        path: the file to write; its directory must exist.
        params: a tree (dict with str/int keys, list, tuple, namedtuple, None) of arrays of
            numpy, torch, jax, array-api-strict or any DLPack-capable library, with dtypes
            float16, bfloat16, float32 or float64.
        state: a :class:`lionk.State` whose momentum has the structure and shapes of
            ``params``; ``count`` and ``skipped`` are integers (or concrete 0-d integer arrays).

    Raises:
        TypeError / ValueError: naming the argument and leaf path, with what was expected and
            what was received. FileNotFoundError when the directory does not exist.
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
    for attr in ("count", "momentum"):
        if not hasattr(state, attr):
            raise TypeError(f"state: expected a lionk.State (count, momentum, skipped); "
                            f"received {type(state).__name__}")
    count = _as_int("state.count", state.count)
    skipped = _as_int("state.skipped", getattr(state, "skipped", 0))
    leaves: list[_SaveLeaf] = []
    tree = _describe(params, state.momentum, "", leaves)

    __version__ = "0.1.0"

    # --- write to a temporary file, then move it into place ----------------------------------
    records = []
    tmp = os.path.join(parent, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for i, leaf in enumerate(leaves):
                    rec: dict[str, Any] = {"path": leaf.path}
                    for part, x, name in (("params", leaf.x, leaf.xname),
                                          ("momentum", leaf.m, leaf.mname)):
                        a = _to_host(x, name)
                        key = f"{part}/{i}"
                        _write_npy(zf, key, a)
                        rec[part] = {"key": key, "dtype": name, "storage": a.dtype.str,
                                     "shape": list(leaf.shape), "sha256": _sha256(a)}
                    records.append(rec)
                meta = {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "lionk_version": __version__,
                    "count": count,
                    "skipped": skipped,
                    "tree": tree,
                    "leaves": records,
                }
                text = json.dumps(meta, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
                _write_npy(zf, META_KEY, np.frombuffer(text.encode("utf-8"), dtype=np.uint8))
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
# load: reading and checking the file


class _Meta:
    def __init__(self, count: int, skipped: int, tree: Any, leaves: list[dict[str, Any]],
                 paths: list[str]) -> None:
        self.count, self.skipped, self.tree, self.leaves, self.paths = (
            count, skipped, tree, leaves, paths)


def _bad(where: str, msg: str) -> CheckpointError:
    return CheckpointError(f"{where}: {msg}")


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON constant {token}")


def _check_tree(node: Any, path: str, paths: dict[int, str], where: str) -> None:
    """Validate a JSON tree node; record the path of every leaf index."""
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
    elif kind == "dict":
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
        names = [f".{f}" for f in fields]
    else:
        raise bad(f"unknown type {kind!r}")
    for nm, kid in zip(names, kids):
        _check_tree(kid, path + nm, paths, where)


def _check_record(rec: Any, part: str, i: int, where: str) -> None:
    label = f"leaves[{i}].{part}"
    if not isinstance(rec, dict):
        raise _bad(where, f"invalid metadata: {label} is not an object")
    name, storage = rec.get("dtype"), rec.get("storage")
    if name not in _STORAGE:
        raise _bad(where, f"invalid metadata: {label}.dtype {name!r} is not one of "
                          f"{sorted(_STORAGE)}")
    if storage != _STORAGE[name].str:
        raise _bad(where, f"invalid metadata: {label}.storage {storage!r} for dtype {name}; "
                          f"expected {_STORAGE[name].str!r}")
    shape = rec.get("shape")
    if not isinstance(shape, list) or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
        raise _bad(where, f"invalid metadata: {label}.shape {shape!r} is not a list of "
                          "integers >= 0")
    if rec.get("key") != f"{part}/{i}":
        raise _bad(where, f"invalid metadata: {label}.key {rec.get('key')!r}; expected "
                          f"'{part}/{i}'")
    digest = rec.get("sha256")
    if not (isinstance(digest, str) and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)):
        raise _bad(where, f"invalid metadata: {label}.sha256 is not 64 lowercase hex digits")


def _read_meta(zf: zipfile.ZipFile, where: str) -> _Meta:
    names = set(zf.namelist())
    if META_KEY + ".npy" not in names:
        shown = sorted(names)[:8]
        raise _bad(where, f"not a lionk checkpoint: it has no '{META_KEY}' entry (entries: "
                          f"{shown}{' ...' if len(names) > 8 else ''})")
    try:
        with zf.open(META_KEY + ".npy") as f:
            raw = np.lib.format.read_array(f, allow_pickle=False)
            if f.read(1):
                raise ValueError("trailing bytes after the array")
    except zipfile.BadZipFile as e:
        raise _bad(where, f"the metadata entry '{META_KEY}' is corrupted ({e})") from None
    except Exception as e:  # any other failure to decode the entry: a damaged or foreign file
        raise _bad(where, f"the metadata entry '{META_KEY}' is not a readable uint8 .npy "
                          f"array ({type(e).__name__}: {e})") from None
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _bad(where, f"not a lionk checkpoint: '{META_KEY}' is a {raw.dtype} array of "
                          f"shape {raw.shape}; expected 1-D uint8 (UTF-8 JSON)")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(where, f"the metadata entry '{META_KEY}' is not valid UTF-8 JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise _bad(where, f"not a lionk checkpoint: metadata 'format' is {fmt!r}; expected "
                          f"{FORMAT!r}")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _bad(where, f"invalid metadata: format_version {version!r}")
    if version != FORMAT_VERSION:
        raise _bad(where, f"format_version {version} is not supported by this lionk (it reads "
                          f"version {FORMAT_VERSION}; written by lionk "
                          f"{meta.get('lionk_version')!r})")
    for key in ("count", "skipped"):
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise _bad(where, f"invalid metadata: {key} {v!r} is not an integer >= 0")
    leaves = meta.get("leaves")
    if not isinstance(leaves, list):
        raise _bad(where, "invalid metadata: 'leaves' is not a list")
    paths: dict[int, str] = {}
    _check_tree(meta.get("tree"), "", paths, where)
    if sorted(paths) != list(range(len(leaves))):
        raise _bad(where, f"invalid metadata: the tree has leaf indices {sorted(paths)}; "
                          f"expected 0..{len(leaves) - 1}")
    for i, rec in enumerate(leaves):
        if not isinstance(rec, dict) or rec.get("path") != paths[i]:
            got = rec.get("path") if isinstance(rec, dict) else rec
            raise _bad(where, f"invalid metadata: leaves[{i}].path {got!r} does not match the "
                              f"tree ({paths[i]!r})")
        _check_record(rec.get("params"), "params", i, where)
        _check_record(rec.get("momentum"), "momentum", i, where)
        if rec["params"]["shape"] != rec["momentum"]["shape"]:
            raise _bad(where, f"invalid metadata: leaves[{i}] params and momentum shapes differ")
        for part in ("params", "momentum"):
            if rec[part]["key"] + ".npy" not in names:
                raise _bad(where, f"{part}{paths[i]}: the entry '{rec[part]['key']}.npy' is "
                                  "missing (truncated or incomplete file)")
    return _Meta(meta["count"], meta["skipped"], meta["tree"], leaves,
                 [paths[i] for i in range(len(leaves))])


def _read_leaf(zf: zipfile.ZipFile, rec: dict[str, Any], label: str, where: str) -> np.ndarray:
    """The stored array of record ``rec``, checked against its header, shape, size, zip CRC-32
    and sha256; a writeable numpy array of the storage dtype that nothing else references."""
    storage = _STORAGE[rec["dtype"]]
    shape = tuple(rec["shape"])
    member = rec["key"] + ".npy"
    try:
        with zf.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                hshape, fortran, hdtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                hshape, fortran, hdtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise _bad(where, f"{label}: unsupported .npy version {version}")
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
# load: matching ``like`` and building the trees

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
    if kind == "namedtuple":
        return _namedtuple_class(node["name"], node["fields"])(*kids)
    return kids if kind == "list" else tuple(kids)


def _match_like(like: Any, node: dict[str, Any], path: str,
                out: list[tuple[int, Any, str]]) -> None:
    """Check that ``like`` has the stored structure; collect (leaf index, like leaf, path)."""
    label = f"like{path}"
    kind = node["type"]
    lk = _kind(like)
    if lk != kind:
        want = _KIND_WORDS[kind]
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
    if kind == "dict":
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
    if kind == "dict":
        by_key = dict(zip(node["keys"], kids))
        return {k: _build_like(like[k], by_key[k], values) for k in like}
    built = [_build_like(a, c, values) for a, c in zip(like, kids)]
    if kind == "namedtuple":
        return type(like)(*built)
    return built if kind == "list" else tuple(built)


def load(
    path: str | os.PathLike[str],
    *,
    like: Any = None,
    xp: Any = None,
    device: Any = None,
) -> tuple[Any, Any]:
    """Read a checkpoint written by :func:`save`: ``(params, lionk.State(count, momentum,
    skipped))``.

    Args:
        path: the ``.npz`` file.
        like: a params tree; its structure (dict keys, list/tuple lengths, namedtuple fields),
            shapes and dtypes must equal the saved ones. The arrays come back in its library, on
            the device of its matching leaf, in its containers (dict order, namedtuple
            classes); torch leaves that require grad give params that require grad.
        xp: instead of ``like``: the library to load into, a namespace module (``numpy``,
            ``torch``, ``jax.numpy``, ``array_api_strict``, an ``array_api_compat`` namespace, or
            any module with ``from_dlpack``) or one of ``"numpy"``, ``"torch"``, ``"jax"``,
            ``"array_api_strict"``, ``"cupy"``. Default (neither given): numpy.
        device: put every array on this device of the target library (overrides ``like``'s).

    Without ``like`` the containers are rebuilt from the file: dicts in their saved order,
    lists, tuples, and namedtuples as :func:`collections.namedtuple` classes with the saved
    name and fields (the original class is never imported). ``count`` and ``skipped`` are
    Python ints. Nothing is returned unless every array was read, verified (zip CRC-32 and
    sha256) and converted.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError (a ValueError): not a lionk checkpoint, truncated, corrupted, or of an
            unsupported format version.
        TypeError / ValueError: bad arguments, or ``like`` differs from the saved tree (the
            message names the leaf path, what was saved and what was received).
    """
    # --- arguments --------------------------------------------------------------------------
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike; received {type(path).__name__}")
    path = os.fsdecode(os.fspath(path))
    if like is not None and xp is not None:
        raise TypeError("load: pass like= (a params tree) or xp= (a namespace), not both")
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
    where = f"checkpoint {path!r}"
    with open(path, "rb") as fh:  # FileNotFoundError / IsADirectoryError as they are
        try:
            zf = zipfile.ZipFile(fh)
        except Exception as e:  # BadZipFile, and whatever a damaged directory provokes
            raise _bad(where, f"not a readable .npz (zip) file: truncated or corrupted, or not "
                              f"written by lionk.save ({type(e).__name__}: {e})") from None
        with zf:
            try:
                meta = _read_meta(zf, where)
            except CheckpointError:
                raise
            except Exception as e:  # e.g. RecursionError from an absurdly nested tree
                raise _bad(where, f"truncated or corrupted file ({type(e).__name__}: {e})"
                           ) from None
            n = len(meta.leaves)
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
            # read, verify and convert every array; nothing is returned unless all succeed
            values: dict[str, list[Any]] = {"params": [None] * n, "momentum": [None] * n}
            for i in range(n):
                dev = device
                if dev is None and like_for[i] is not None:
                    dev = _device_of(like_for[i])
                for part in ("params", "momentum"):
                    rec = meta.leaves[i][part]
                    label = f"{part}{meta.paths[i]}"
                    a = _read_leaf(zf, rec, label, where)
                    x = _convert(target, a, rec, dev, label)
                    if part == "params" and _wants_grad(like_for[i]):
                        x = x.requires_grad_(True)
                    values[part][i] = x

    if like is not None:
        params = _build_like(like, meta.tree, values["params"])
        momentum = _build_like(like, meta.tree, values["momentum"])
    else:
        params = _build_stored(meta.tree, values["params"])
        momentum = _build_stored(meta.tree, values["momentum"])
    from lionk.core.step import State

    return params, State(meta.count, momentum, meta.skipped)


def _collect_like(like: Any, path: str, out: list[tuple[Any, str]]) -> None:
    kind = _kind(like)
    if kind == "none":
        return
    if kind == "dict":
        for k, v in like.items():
            _collect_like(v, path + _key_path(k), out)
    elif kind == "namedtuple":
        for f, v in zip(like._fields, like):
            _collect_like(v, f"{path}.{f}", out)
    elif kind in ("list", "tuple"):
        for i, v in enumerate(like):
            _collect_like(v, f"{path}[{i}]", out)
    elif not is_array(like):
        raise TypeError(f"like{path}: expected an array (or a dict, list, tuple, namedtuple or "
                        f"None of arrays); received {type(like).__name__}")
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

