"""Portable checkpoints (lionk.checkpoint): format, bitwise cross-backend resume, bad input.

Files are written in format version 2 (safetensors) by ``lionk.checkpoint.save``; version 1 (the
``.npz`` of lionk 0.1) is written by lionk 0.1's own module (tests/_checkpoint_v1.py) and must
still load: the corruption tests run on both versions. Tests specific to the safetensors
container and to the front-ends are in tests/test_checkpoint_safetensors.py.

* Resume: 20 steps on one backend, save, load into another, 20 more steps there; params and
  momentum must equal an uninterrupted 40-step numpy run bit for bit (exact κ, CPU eager).
  A negative control shows the comparison catches a resume that loses the momentum.
* Bits: special values (±0, ±inf, NaN payloads, subnormals, extremes) of float16, bfloat16,
  float32 and float64 survive every pair of backends.
* Bad files: missing, truncated at every length, a byte flipped at every position (either a
  clear CheckpointError or the exact original state, never a silently different one), a
  checksum mismatch inside a well-formed zip, a non-lionk npz, a pickled metadata entry.
* ``like`` mismatches and invalid arguments: clear errors naming the leaf path; a failed
  ``save`` leaves the previous file intact and no temporary file behind.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import lionk
from lionk.checkpoint import CheckpointError, load, save

from . import _checkpoint_v1 as v1
from ._util import assert_bitwise_equal, bits
from .conftest import HAVE_JAX, HAVE_STRICT, HAVE_TORCH, NP_BFLOAT16, get_backend

Point = collections.namedtuple("Point", ["x", "y"])

RESUME_BACKENDS = ["numpy", "torch", "jax"]
KAPPAS = {"sign": "sign", "huber": lionk.kappa.get("huber", delta=0.3)}
HYPER = dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.5)
STEPS = 20


def files_in(d) -> list[str]:
    return sorted(os.listdir(d))


def to_np(x) -> np.ndarray:
    """A numpy copy of an array of any backend here (bfloat16 via ml_dtypes)."""
    if isinstance(x, np.ndarray):
        return x.copy()
    mod = type(x).__module__
    if mod.startswith("torch"):  # bit-exact (conftest's helper goes through float32)
        import torch

        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().copy().view(NP_BFLOAT16)
        return t.numpy().copy()
    if mod.startswith("jax") or mod.startswith("jaxlib"):
        return get_backend("jax").to_numpy(x)
    if mod.startswith("array_api_strict"):
        return get_backend("array_api_strict").to_numpy(x)
    raise AssertionError(f"unexpected array type {type(x)}")


def assert_tree_bitwise(actual, expected, what: str) -> None:
    a_leaves, a_def, a_paths = lionk.tree.flatten(actual)
    e_leaves, e_def, e_paths = lionk.tree.flatten(expected)
    assert a_paths == e_paths, (what, a_paths, e_paths)
    for a, e, p in zip(a_leaves, e_leaves, a_paths):
        assert_bitwise_equal(to_np(a), to_np(e), f"{what}{p}")


# ---------------------------------------------------------------------------------------------
# Cross-backend resume


def start_tree(dtype: str):
    rng = np.random.default_rng(7)
    x = {"w": rng.uniform(-1.2, 1.2, (3, 4)), "extra": [rng.uniform(-1.2, 1.2, (5,))]}
    a = {"w": rng.uniform(-0.5, 0.5, (3, 4)), "extra": [rng.uniform(-0.5, 0.5, (5,))]}
    cast = lambda t: lionk.tree.tree_map(lambda v: v.astype(dtype), t)  # noqa: E731
    return cast(x), cast(a)


def run(backend_name: str, params, state, a_np, kappa, steps: int):
    """``steps`` Lion-κ steps on ``backend_name`` with g = x*x*x - x + a (correctly rounded
    elementwise ops, evaluated left to right in the backend itself)."""
    be = get_backend(backend_name)
    a = lionk.tree.tree_map(be.asarray, a_np)
    for _ in range(steps):
        grads = lionk.tree.tree_map(lambda x, c: x * x * x - x + c, params, a)
        params, state = lionk.step(params, grads, state, kappa=kappa, **HYPER)
    return params, state


@functools.cache
def reference(kappa_name: str, dtype: str):
    """Uninterrupted numpy runs: the states after STEPS and after 2*STEPS steps."""
    x, a = start_tree(dtype)
    kappa = KAPPAS[kappa_name]
    p20, s20 = run("numpy", x, lionk.init(x), a, kappa, STEPS)
    p40, s40 = run("numpy", p20, s20, a, kappa, STEPS)
    return (p20, s20), (p40, s40)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kappa_name", sorted(KAPPAS))
@pytest.mark.parametrize("dst", RESUME_BACKENDS)
@pytest.mark.parametrize("src", RESUME_BACKENDS)
def test_cross_backend_resume_is_bitwise(tmp_path, src, dst, kappa_name, dtype) -> None:
    be_src, be_dst = get_backend(src), get_backend(dst)
    kappa = KAPPAS[kappa_name]
    (p20_ref, s20_ref), (p40_ref, s40_ref) = reference(kappa_name, dtype)
    x_np, a_np = start_tree(dtype)

    x = lionk.tree.tree_map(be_src.asarray, x_np)
    p20, s20 = run(src, x, lionk.init(x), a_np, kappa, STEPS)
    # the first half already agrees with numpy (else a failure below would be misattributed)
    assert_tree_bitwise(p20, p20_ref, f"{src} params after {STEPS} steps")
    assert_tree_bitwise(s20.momentum, s20_ref.momentum, f"{src} momentum after {STEPS} steps")

    path = tmp_path / "ckpt.safetensors"
    save(path, p20, s20)
    params, state = load(path, xp=dst)
    assert isinstance(state, lionk.State)
    assert state.count == STEPS and type(state.count) is int and state.skipped == 0
    for leaf in lionk.tree.flatten((params, state.momentum))[0]:
        assert type(leaf).__module__.split(".")[0] in {"numpy": ("numpy",), "torch": ("torch",),
                                                       "jax": ("jax", "jaxlib")}[dst], type(leaf)
        assert lionk.core.array_api.dtype_name(leaf.dtype) == dtype
    assert_tree_bitwise(params, p20_ref, "loaded params")
    assert_tree_bitwise(state.momentum, s20_ref.momentum, "loaded momentum")

    p40, s40 = run(dst, params, state, a_np, kappa, STEPS)
    assert s40.count == 2 * STEPS
    assert be_dst.name == dst
    assert_tree_bitwise(p40, p40_ref, f"{src}->{dst} params after {2 * STEPS} steps")
    assert_tree_bitwise(s40.momentum, s40_ref.momentum, f"{src}->{dst} momentum")


def test_resume_comparison_catches_a_lost_momentum(tmp_path) -> None:
    """Negative control: resuming with a fresh momentum (what a checkpoint without the state
    would do) does not reproduce the uninterrupted run, so the bitwise test above can fail."""
    (p20_ref, _), (p40_ref, _) = reference("sign", "float32")
    _, a_np = start_tree("float32")
    p40, _ = run("numpy", p20_ref, lionk.init(p20_ref), a_np, "sign", STEPS)
    with pytest.raises(AssertionError, match="differ in their bits"):
        assert_tree_bitwise(p40, p40_ref, "params")


# ---------------------------------------------------------------------------------------------
# Round trips: structure, dtypes and exact bits

SPECIAL_BITS = {
    "float16": [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE55, 0x0001, 0x8001, 0x03FF,
                0x0400, 0x7BFF, 0x3C00, 0xBC00, 0x3555],
    "bfloat16": [0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFC1, 0x0001, 0x8001, 0x007F,
                 0x0080, 0x7F7F, 0x3F80, 0xBF80, 0x3EAB],
    "float32": [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001,
                0xFFC12345, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF,
                0x3F800000, 0xBF800000, 0x3EAAAAAB],
    "float64": [0x0, 0x8000000000000000, 0x7FF0000000000000, 0xFFF0000000000000,
                0x7FF8000000000000, 0x7FF0000000000001, 0xFFF8123456789ABC, 0x1,
                0x8000000000000001, 0x000FFFFFFFFFFFFF, 0x0010000000000000, 0x7FEFFFFFFFFFFFFF,
                0x3FF0000000000000, 0xBFF0000000000000, 0x3FD5555555555555],
}
_UINT = {"float16": np.uint16, "bfloat16": np.uint16, "float32": np.uint32, "float64": np.uint64}


def special(dtype: str) -> np.ndarray:
    """The special bit patterns as a numpy array of ``dtype`` (bfloat16 via ml_dtypes)."""
    u = np.array(SPECIAL_BITS[dtype], dtype=_UINT[dtype])
    return u.view(NP_BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype))


def exact_copy(backend_name: str, a: np.ndarray):
    """A backend array with exactly the bits of ``a`` (no arithmetic, no conversion)."""
    if backend_name == "numpy":
        return a.copy()
    if backend_name == "torch":
        import torch

        ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.dtype.itemsize]
        signed = a.view({2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]).copy()
        t = torch.from_numpy(signed)
        assert t.dtype == ints
        tdt = torch.bfloat16 if a.dtype == NP_BFLOAT16 else getattr(torch, a.dtype.name)
        return t.view(tdt)
    import jax.numpy as jnp

    return jnp.array(a, copy=True)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("dst", RESUME_BACKENDS)
@pytest.mark.parametrize("src", RESUME_BACKENDS)
def test_special_values_keep_their_bits(tmp_path, src, dst, dtype) -> None:
    get_backend(src), get_backend(dst)
    a = special(dtype)
    b = a[::-1].copy()
    params = {"v": exact_copy(src, a)}
    state = lionk.State(3, {"v": exact_copy(src, b)}, 1)
    # the test's own set-up is exact (else a failure below would be misattributed)
    assert_bitwise_equal(to_np(params["v"]), a, "set-up")
    save(tmp_path / "s.safetensors", params, state)
    p, s = load(tmp_path / "s.safetensors", xp=dst)
    assert lionk.core.array_api.dtype_name(p["v"].dtype) == dtype
    assert np.array_equal(bits(to_np(p["v"])), bits(a)), (bits(to_np(p["v"])), bits(a))
    assert np.array_equal(bits(to_np(s.momentum["v"])), bits(b))
    assert (s.count, s.skipped) == (3, 1)


def nested_tree():
    rng = np.random.default_rng(3)
    params = {
        "z": [rng.standard_normal((2, 3)).astype(np.float16),
              (rng.standard_normal(4).astype(NP_BFLOAT16), None)],
        "a": Point(x=np.asarray(rng.standard_normal(), dtype=np.float64),
                   y=np.zeros((0, 3), np.float32)),
        "n": {7: np.asfortranarray(rng.standard_normal((3, 2))),  # int keys, Fortran order
              2: rng.standard_normal(2).astype(np.float32)[::-1]},  # a negative-stride view
    }
    momentum = {
        "a": Point(x=np.asarray(0.25), y=np.zeros((0, 3), np.float32)),
        "z": [rng.standard_normal((2, 3)).astype(np.float32),  # momentum in another dtype
              (rng.standard_normal(4).astype(NP_BFLOAT16), None)],
        "n": {2: rng.standard_normal(2).astype(np.float32), 7: rng.standard_normal((3, 2))},
    }
    return params, lionk.State(count=np.int64(12), momentum=momentum, skipped=np.int32(2))


def test_roundtrip_structure_dtypes_and_order(tmp_path) -> None:
    params, state = nested_tree()
    save(tmp_path / "c.safetensors", params, state)
    p, s = load(tmp_path / "c.safetensors")
    assert list(p) == ["z", "a", "n"] and list(p["n"]) == [7, 2]  # dicts' own order, int keys
    assert type(p["z"]) is list and type(p["z"][1]) is tuple and p["z"][1][1] is None
    assert type(p["a"]).__name__ == "Point" and p["a"]._fields == ("x", "y")
    assert type(p["a"]) is not Point  # rebuilt from name and fields, never imported
    assert p["a"].y.shape == (0, 3) and p["a"].x.shape == ()
    assert p["n"][7].flags.c_contiguous
    assert (s.count, s.skipped) == (12, 2) and type(s.count) is int and type(s.skipped) is int
    assert s.momentum["z"][0].dtype == np.float32 and p["z"][0].dtype == np.float16
    assert p["z"][1][0].dtype == NP_BFLOAT16
    for got, want, what in ((p, params, "params"), (s.momentum, state.momentum, "momentum")):
        gl, _, gp = lionk.tree.flatten(got)
        wl, _, wp = lionk.tree.flatten(want)
        assert gp == wp
        for g, w, path in zip(gl, wl, gp):
            assert_bitwise_equal(g, np.asarray(w), f"{what}{path}")
            assert g.flags.writeable  # loaded arrays are the caller's to update in place
    # loading twice gives the same namedtuple class, so the trees compare equal in structure
    p2, _ = load(tmp_path / "c.safetensors")
    assert type(p2["a"]) is type(p["a"])


@pytest.mark.parametrize("dst", RESUME_BACKENDS)
@pytest.mark.parametrize("src", RESUME_BACKENDS)
def test_nested_tree_between_backends(tmp_path, src, dst) -> None:
    """Every dtype, a 0-d, an empty and a non-contiguous leaf, a momentum of another dtype,
    saved from ``src`` and loaded into ``dst``: same structure, dtypes and bits."""
    get_backend(src), get_backend(dst)
    params, state = nested_tree()
    conv = lambda t: lionk.tree.tree_map(lambda a: exact_copy(src, np.asarray(a)), t)  # noqa: E731
    sp, sm = conv(params), conv(state.momentum)
    if src == "torch":  # a transposed (non-contiguous) view, as the source array
        import torch

        sp["n"][7] = torch.from_numpy(np.ascontiguousarray(params["n"][7].T)).T
        assert not sp["n"][7].is_contiguous()
    save(tmp_path / "n.safetensors", sp, lionk.State(state.count, sm, state.skipped))
    p, s = load(tmp_path / "n.safetensors", xp=dst)
    assert list(p) == list(sp) and list(p["n"]) == list(sp["n"])  # the saved dicts' order
    assert type(p["z"][1]) is tuple and p["a"]._fields == ("x", "y")
    assert (s.count, s.skipped) == (12, 2)
    assert_tree_bitwise(p, params, f"{src}->{dst} params")
    assert_tree_bitwise(s.momentum, state.momentum, f"{src}->{dst} momentum")


def test_same_state_gives_the_same_bytes_and_overwrite_works(tmp_path) -> None:
    params, state = nested_tree()
    save(tmp_path / "a.safetensors", params, state)
    save(tmp_path / "b.safetensors", params, state)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    save(tmp_path / "a.safetensors", {"w": np.ones(2)}, lionk.init({"w": np.ones(2)}))  # overwrite
    p, s = load(tmp_path / "a.safetensors")
    assert list(p) == ["w"] and s.count == 0
    assert files_in(tmp_path) == ["a.safetensors", "b.safetensors"]


def test_version_1_file_is_plain_npz_readable_without_lionk(tmp_path) -> None:
    """What docs/checkpoints.md promises other tools for version 1 (lionk 0.1): np.load with
    pickling off, the JSON metadata, keys, storage dtypes, shapes and sha256 of the stored
    bytes; and this lionk reads the file back."""
    params, state = nested_tree()
    v1.save(tmp_path / "c.npz", params, state)
    p, s = load(tmp_path / "c.npz")
    assert_tree_bitwise(p, params, "params")
    assert_tree_bitwise(s.momentum, state.momentum, "momentum")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        meta = json.loads(z["__lionk__"].tobytes().decode("utf-8"))
        assert meta["format"] == "lionk.checkpoint" and meta["format_version"] == 1
        assert meta["lionk_version"] == lionk.__version__
        assert (meta["count"], meta["skipped"]) == (12, 2)
        assert sorted(z.files) == sorted(
            ["__lionk__"] + [f"{part}/{i}" for i in range(len(meta["leaves"]))
                             for part in ("params", "momentum")])
        flat, _, paths = lionk.tree.flatten(params)
        by_path = dict(zip(paths, flat))
        assert sorted(r["path"] for r in meta["leaves"]) == sorted(paths)
        for rec in meta["leaves"]:
            for part in ("params", "momentum"):
                info = rec[part]
                arr = z[info["key"]]
                assert arr.dtype == np.dtype(info["storage"]) and list(arr.shape) == info["shape"]
                assert hashlib.sha256(arr.tobytes()).hexdigest() == info["sha256"]
            value = z[rec["params"]["key"]]
            if rec["params"]["dtype"] == "bfloat16":
                value = value.view(NP_BFLOAT16)
            assert_bitwise_equal(value, np.asarray(by_path[rec["path"]]), rec["path"])
    assert meta["tree"]["type"] == "dict" and meta["tree"]["keys"] == ["z", "a", "n"]
    assert meta["tree"]["children"][2]["keys"] == [7, 2]


# ---------------------------------------------------------------------------------------------
# like=, xp=, device=


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_load_like_torch_keeps_containers_requires_grad_and_bits(tmp_path) -> None:
    import torch

    rng = np.random.default_rng(5)
    w0, b0 = rng.standard_normal((2, 3)), rng.standard_normal(4).astype(np.float32)
    params = {"w": torch.tensor(w0, requires_grad=True),
              "p": Point(x=torch.tensor(b0, requires_grad=True), y=None)}
    grads = {"w": torch.ones(2, 3, dtype=torch.float64),
             "p": Point(x=-torch.ones(4), y=None)}
    params2, state = lionk.step(params, grads, lionk.init(params), lr=0.1)
    save(tmp_path / "t.safetensors", params, state)  # requires_grad tensors: detached copies are saved
    like = {"p": Point(x=torch.zeros(4, requires_grad=True), y=None),
            "w": torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)}
    p, s = load(tmp_path / "t.safetensors", like=like)
    assert list(p) == ["p", "w"] and type(p["p"]) is Point and p["p"].y is None
    assert isinstance(p["w"], torch.Tensor) and p["w"].requires_grad and p["p"].x.requires_grad
    assert not s.momentum["w"].requires_grad
    assert_bitwise_equal(to_np(p["w"]), w0, "w")
    assert_bitwise_equal(to_np(p["p"].x), b0, "p.x")
    assert_bitwise_equal(to_np(s.momentum["w"]), to_np(state.momentum["w"]), "m.w")
    assert s.count == 1
    assert not torch.equal(params2["w"], params["w"])  # the step did move the params


@pytest.mark.skipif(not HAVE_STRICT, reason="array-api-strict not installed")
def test_load_onto_a_device(tmp_path) -> None:
    import array_api_strict as xs

    dev1, dev2 = xs.Device("device1"), xs.Device("device2")
    params = {"w": xs.asarray(np.arange(6.0).reshape(2, 3), device=dev1)}
    state = lionk.init(params)
    assert state.momentum["w"].device == dev1
    save(tmp_path / "d.safetensors", params, state)
    p, s = load(tmp_path / "d.safetensors", like=params)  # like's device
    assert p["w"].device == dev1 and s.momentum["w"].device == dev1
    p, s = load(tmp_path / "d.safetensors", xp=xs, device=dev2)  # an explicit device
    assert p["w"].device == dev2 and s.momentum["w"].device == dev2
    p, _ = load(tmp_path / "d.safetensors", like=params, device=dev2)  # device overrides like's
    assert p["w"].device == dev2
    assert_bitwise_equal(to_np(p["w"]), np.arange(6.0).reshape(2, 3), "w")
    # and a step runs on the loaded state, on device2 only
    p2, s2 = lionk.step(p, {"w": xs.ones((2, 3), device=dev2, dtype=xs.float64)},
                        lionk.State(s.count, {"w": xs.zeros((2, 3), device=dev2,
                                                            dtype=xs.float64)}, 0))
    assert p2["w"].device == dev2


def test_load_xp_forms(tmp_path) -> None:
    params = {"w": np.ones((2, 2), np.float32)}
    save(tmp_path / "x.safetensors", params, lionk.init(params))
    forms: list = [None, "numpy", np]
    import array_api_compat.numpy as cnp

    forms.append(cnp)
    expect = [np.ndarray] * len(forms)
    if HAVE_TORCH:
        import array_api_compat.torch as ctorch
        import torch

        forms += ["torch", torch, ctorch]
        expect += [torch.Tensor] * 3
    if HAVE_JAX:
        import jax
        import jax.numpy as jnp

        forms += ["jax", jnp]
        expect += [jax.Array] * 2
    for form, cls in zip(forms, expect):
        p, s = load(tmp_path / "x.safetensors", xp=form)
        assert isinstance(p["w"], cls) and isinstance(s.momentum["w"], cls), form
        assert_bitwise_equal(to_np(p["w"]), params["w"], f"xp={form}")


def test_load_argument_errors(tmp_path) -> None:
    params = {"w": np.ones(2, NP_BFLOAT16)}
    save(tmp_path / "x.safetensors", params, lionk.init(params))
    with pytest.raises(ValueError, match=r"xp: expected one of .*'numpy'.*received 'tensorflow'"):
        load(tmp_path / "x.safetensors", xp="tensorflow")
    with pytest.raises(TypeError, match="xp: expected an array namespace module"):
        load(tmp_path / "x.safetensors", xp=42)
    with pytest.raises(TypeError, match="like= .* or xp= .*not both"):
        load(tmp_path / "x.safetensors", like=params, xp="numpy")
    with pytest.raises(ValueError, match="device: numpy arrays live on 'cpu'; received 'gpu'"):
        load(tmp_path / "x.safetensors", device="gpu")
    with pytest.raises(TypeError, match=r"path: expected a str or os.PathLike; received int"):
        load(3)
    if HAVE_STRICT:
        import array_api_strict as xs

        with pytest.raises(TypeError, match=r"params\['w'\]: is bfloat16, which "
                                            r"array_api_strict does not support"):
            load(tmp_path / "x.safetensors", xp=xs)
    if HAVE_TORCH:
        with pytest.raises(ValueError, match="device: not a torch device: 'nowhere'"):
            load(tmp_path / "x.safetensors", xp="torch", device="nowhere")


# ---------------------------------------------------------------------------------------------
# like mismatches: clear errors naming the path


@pytest.fixture
def saved(tmp_path):
    params = {"w": np.ones((2, 3), np.float32), "b": [np.zeros(4, np.float64)],
              "p": Point(x=np.ones(1, np.float32), y=None)}
    save(tmp_path / "m.safetensors", params, lionk.init(params))
    return tmp_path / "m.safetensors", params


def _like(**changes):
    like = {"w": np.ones((2, 3), np.float32), "b": [np.zeros(4, np.float64)],
            "p": Point(x=np.ones(1, np.float32), y=None)}
    like.update(changes)
    return {k: v for k, v in like.items() if v is not ...}


Other = collections.namedtuple("Other", ["x", "z"])


@pytest.mark.parametrize(
    ("like", "exc", "pattern"),
    [
        (_like(w=np.ones((3, 2), np.float32)), ValueError,
         r"like\['w'\]: expected shape \(2, 3\) \(as saved\); received \(3, 2\)"),
        (_like(b=[np.zeros(4, np.float32)]), TypeError,
         r"like\['b'\]\[0\]: expected dtype float64 \(as saved\); received float32"),
        (_like(b=(np.zeros(4),)), TypeError,
         r"like\['b'\]: expected a list of 1 items \(as saved\); received a tuple"),
        (_like(b=[np.zeros(4), np.zeros(4)]), ValueError,
         r"like\['b'\]: expected a list of 1 items \(as saved\); received 2"),
        (_like(b=...), ValueError, r"like: expected the keys .*; missing \['b'\], unexpected \[\]"),
        (_like(extra=np.ones(1)), ValueError, r"like: .*missing \[\], unexpected \['extra'\]"),
        (_like(w={"inner": np.ones((2, 3), np.float32)}), TypeError,
         r"like\['w'\]: expected an array \(as saved\); received a dict"),
        (_like(p=Other(x=np.ones(1, np.float32), z=None)), ValueError,
         r"like\['p'\]: expected the fields \['x', 'y'\] \(as saved\); received \['x', 'z'\]"),
        (_like(p=(np.ones(1, np.float32), None)), TypeError,
         r"like\['p'\]: expected a namedtuple Point\('x', 'y'\) \(as saved\); received a tuple"),
        (_like(w=[1.0]), TypeError, r"like\['w'\]\[0\]: expected an array .*received float"),
        (np.ones(3), TypeError, r"like: expected a dict \(as saved\); received an array"),
    ],
    ids=["shape", "dtype", "list-vs-tuple", "length", "missing-key", "extra-key",
         "leaf-vs-dict", "fields", "namedtuple-vs-tuple", "non-array", "root"],
)
def test_like_mismatch_is_a_clear_error(saved, like, exc, pattern) -> None:
    path, _ = saved
    with pytest.raises(exc, match=pattern):
        load(path, like=like)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_like_from_two_libraries_is_an_error(saved) -> None:
    import torch

    path, _ = saved
    like = _like(w=torch.ones(2, 3))
    with pytest.raises(TypeError, match=r"like\[.*\]: is a (numpy|torch) array, but like\[.*\] "
                                        r"is a (numpy|torch) array; expected one array library"):
        load(path, like=like)


# ---------------------------------------------------------------------------------------------
# Bad files


def _good(tmp_path, version: int):
    rng = np.random.default_rng(11)
    params = {"w": rng.standard_normal((3, 4)).astype(np.float32),
              "b": [rng.standard_normal(5)]}
    state = lionk.State(9, {"w": rng.standard_normal((3, 4)).astype(np.float32),
                            "b": [rng.standard_normal(5)]}, 1)
    path = tmp_path / ("good.npz" if version == 1 else "good.safetensors")
    (v1.save if version == 1 else save)(path, params, state)
    return path, params, state


@pytest.fixture
def good(tmp_path):
    """A checkpoint written by this lionk (format version 2)."""
    return _good(tmp_path, 2)


@pytest.fixture
def good_v1(tmp_path):
    """A checkpoint written by lionk 0.1 (format version 1, .npz)."""
    return _good(tmp_path, 1)


@pytest.fixture(params=[1, 2], ids=["v1-npz", "v2-safetensors"])
def good_any(tmp_path, request):
    return _good(tmp_path, request.param)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load(tmp_path / "nope.npz")
    with pytest.raises(IsADirectoryError):
        load(tmp_path)


def test_truncated_at_every_length_is_an_error(good_any, tmp_path) -> None:
    path, _, _ = good_any
    data = path.read_bytes()
    bad = tmp_path / "cut.npz"
    for n in range(len(data)):
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=r"checkpoint '.*cut\.npz'"):
            load(bad)


def test_flipped_byte_inside_an_array_is_a_checksum_error(good_any, tmp_path) -> None:
    path, params, _ = good_any
    data = bytearray(path.read_bytes())
    at = bytes(data).find(params["w"].tobytes())
    assert at > 0 and bytes(data).count(params["w"].tobytes()) == 1
    data[at + 17] ^= 0x01
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"params\['w'\]: checksum error"):
        load(bad)


def test_flipped_byte_anywhere_never_gives_a_wrong_state(good_any, tmp_path) -> None:
    """Every single-byte corruption either raises CheckpointError or (in bytes no reader uses,
    such as zip timestamps) loads the exact original state: never a silently different one."""
    path, params, state = good_any
    data = path.read_bytes()
    bad = tmp_path / "flip.npz"
    errors = 0
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x10
        bad.write_bytes(bytes(flipped))
        try:
            p, s = load(bad)
        except CheckpointError:
            errors += 1
            continue
        assert (s.count, s.skipped) == (state.count, state.skipped), i
        assert_tree_bitwise(p, params, f"byte {i}: params")
        assert_tree_bitwise(s.momentum, state.momentum, f"byte {i}: momentum")
    assert errors > len(data) // 2  # the data and the metadata are covered


def rewrite(src, dst, replace: dict[str, bytes], compression=zipfile.ZIP_STORED) -> None:
    """Copy zip ``src`` to ``dst`` with some entries replaced (valid zip CRCs throughout)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, replace.get(info.filename, zin.read(info.filename)))


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=False)
    return buf.getvalue()


def meta_of(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return json.loads(z["__lionk__"].tobytes())


def with_meta(meta: dict) -> bytes:
    return npy_bytes(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))


def test_deflated_entries_are_read(good_v1, tmp_path) -> None:
    """A checkpoint re-zipped with compression (as numpy.savez_compressed would) still loads."""
    path, params, state = good_v1
    other = tmp_path / "deflated.npz"
    rewrite(path, other, {}, compression=zipfile.ZIP_DEFLATED)
    assert other.stat().st_size != path.stat().st_size
    p, s = load(other)
    assert_tree_bitwise(p, params, "params")
    assert_tree_bitwise(s.momentum, state.momentum, "momentum")
    assert (s.count, s.skipped) == (9, 1)


def test_sha256_mismatch_in_a_well_formed_zip(good_v1, tmp_path) -> None:
    path, params, state = good_v1
    changed = state.momentum["b"][0].copy()
    changed[2] = np.nextafter(changed[2], np.inf)  # one ulp
    bad = tmp_path / "sha.npz"
    rewrite(path, bad, {"momentum/1.npy": npy_bytes(changed)})
    with pytest.raises(CheckpointError, match=r"momentum\['b'\]\[0\]: checksum error, the "
                                              r"sha256 .* does not match"):
        load(bad)


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda m: m.update(format_version=2), "format_version 2 is not supported"),
        (lambda m: m.update(format="other"), "not a lionk checkpoint: metadata 'format' is 'other'"),
        (lambda m: m.update(count=-1), r"invalid metadata: count -1"),
        (lambda m: [m["leaves"][0][part].update(shape=[4, 3]) for part in ("params", "momentum")],
         r"params\['w'\]: the stored array is .* of shape \(3, 4\); the metadata says .* \(4, 3\)"),
        (lambda m: m["leaves"][0]["params"].update(dtype="float64", storage="<f8"),
         r"params\['w'\]: the stored array is float32"),
        (lambda m: m["leaves"][1].update(path="['c'][0]"), r"leaves\[1\]\.path .* does not match"),
        (lambda m: m["tree"].update(type="set"), "unknown type 'set'"),
        (lambda m: m["leaves"].pop(), r"the tree has leaf indices \[0, 1\]; expected 0\.\.0"),
    ],
    ids=["version", "format", "count", "shape", "dtype", "path", "tree", "leaf-count"],
)
def test_inconsistent_metadata_is_an_error(good_v1, tmp_path, edit, pattern) -> None:
    path, _, _ = good_v1
    meta = meta_of(path)
    edit(meta)
    bad = tmp_path / "meta.npz"
    rewrite(path, bad, {"__lionk__.npy": with_meta(meta)})
    with pytest.raises(CheckpointError, match=pattern):
        load(bad)


def test_missing_array_entry(good_v1, tmp_path) -> None:
    path, _, _ = good_v1
    bad = tmp_path / "partial.npz"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            if info.filename != "params/1.npy":
                zout.writestr(info.filename, zin.read(info.filename))
    with pytest.raises(CheckpointError, match=r"params\['b'\]\[0\]: the entry 'params/1.npy' "
                                              "is missing"):
        load(bad)


def test_not_a_lionk_file(tmp_path) -> None:
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(CheckpointError, match=r"not a lionk checkpoint: it has no '__lionk__' "
                                              r"entry \(entries: \['a.npy'\]\)"):
        load(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CheckpointError, match=r"not a lionk checkpoint: the file has 5 bytes"):
        load(tmp_path / "text.npz")
    (tmp_path / "zip.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match=r"not a readable .npz \(zip\) file"):
        load(tmp_path / "zip.npz")
    np.savez(tmp_path / "u8.npz", __lionk__=np.array([1.0, 2.0]))
    with pytest.raises(CheckpointError, match="is a float64 array .* expected 1-D uint8"):
        load(tmp_path / "u8.npz")


UNPICKLED: list[str] = []


def _record_unpickle() -> str:
    UNPICKLED.append("ran")
    return "payload"


class _Evil:
    def __reduce__(self):
        return (_record_unpickle, ())


def test_pickled_entries_are_never_unpickled(tmp_path) -> None:
    arr = np.empty(1, dtype=object)
    arr[0] = _Evil()
    np.savez(tmp_path / "evil.npz", __lionk__=arr)
    with pytest.raises(CheckpointError, match="not a readable uint8 .npy"):
        load(tmp_path / "evil.npz")
    assert UNPICKLED == []


# ---------------------------------------------------------------------------------------------
# save: validation before writing, atomic replacement


def test_save_errors_leave_the_old_file_and_no_temporary_file(good, tmp_path) -> None:
    path, params, state = good
    before = path.read_bytes()
    cases = [
        ({"w": [1.0, 2.0]}, lionk.State(0, {"w": [1.0, 2.0]}, 0), TypeError,
         r"params\['w'\]\[0\]: expected an array .*received float"),
        ({"w": np.ones(2, np.int32)}, lionk.State(0, {"w": np.ones(2, np.int32)}, 0), TypeError,
         r"params\['w'\]: expected a dtype among \['bfloat16', 'float16', 'float32', "
         r"'float64'\]; received int32"),
        (params, lionk.State(0, {"w": state.momentum["w"]}, 0), ValueError,
         r"state.momentum: expected the keys of params; missing \['b'\]"),
        (params, lionk.State(0, {"w": state.momentum["w"], "b": [np.ones(6)]}, 0), ValueError,
         r"state.momentum\['b'\]\[0\]: expected shape \(5,\) like params\['b'\]\[0\]; "
         r"received \(6,\)"),
        (params, lionk.State(0, {"w": state.momentum["w"], "b": (state.momentum["b"][0],)}, 0),
         TypeError, r"state.momentum\['b'\]: expected a list like params\['b'\]; received a "
                    "tuple"),
        (params, lionk.State(-1, state.momentum, 0), ValueError,
         "state.count: expected an integer >= 0; received -1"),
        (params, lionk.State(1.5, state.momentum, 0), TypeError,
         "state.count: expected an integer >= 0; received float"),
        (params, lionk.State(1, state.momentum, np.ones(2, np.int64)), ValueError,
         r"state.skipped: expected an integer or a 0-d integer array; received an array of "
         r"shape \(2,\)"),
        (params, {"count": 1, "momentum": state.momentum}, TypeError,
         "state: expected a lionk.State"),
        ({(1, 2): np.ones(2)}, lionk.State(0, {(1, 2): np.ones(2)}, 0), TypeError,
         r"params: dict keys must be str or int to be saved; received the key \(1, 2\)"),
    ]
    for p, s, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            save(path, p, s)
        assert path.read_bytes() == before
        assert files_in(tmp_path) == ["good.safetensors"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save(tmp_path / "no" / "dir.npz", params, state)
    with pytest.raises(IsADirectoryError):
        save(tmp_path, params, state)
    assert files_in(tmp_path) == ["good.safetensors"]


def test_failure_while_writing_keeps_the_old_file(good, tmp_path, monkeypatch) -> None:
    """A failure half-way through writing (here: the third array cannot be exported) leaves
    the previous checkpoint untouched and removes the temporary file."""
    import lionk.io.checkpoint as ck

    path, params, state = good
    before = path.read_bytes()
    real = ck._to_host
    calls = []

    def flaky(x, name):
        calls.append(name)
        if len(calls) == 3:
            raise RuntimeError("device lost")
        return real(x, name)

    monkeypatch.setattr(ck, "_to_host", flaky)
    new = {"w": params["w"] + 1, "b": [params["b"][0] + 1]}
    with pytest.raises(RuntimeError, match="device lost"):
        save(path, new, lionk.State(10, state.momentum, 1))
    assert len(calls) == 3
    assert path.read_bytes() == before
    assert files_in(tmp_path) == ["good.safetensors"]


@pytest.mark.skipif(not HAVE_JAX, reason="jax not installed")
def test_save_under_jit_is_a_clear_error(tmp_path) -> None:
    import jax
    import jax.numpy as jnp

    def f(x):
        save(tmp_path / "j.npz", {"w": x}, lionk.init({"w": x}))
        return x

    with pytest.raises(TypeError, match=r"params\['w'\]: is traced \(inside jax.jit\)"):
        jax.jit(f)(jnp.ones(2))
    assert files_in(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Fresh interpreters: imports, and JAX without x64


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_checkpoint_imports_no_backend(tmp_path) -> None:
    code = (
        "import sys, numpy as np, lionk, lionk.checkpoint as ck\n"
        "p = {'w': np.ones(3, np.float32)}\n"
        f"ck.save({str(tmp_path / 'n.npz')!r}, p, lionk.init(p))\n"
        f"q, s = ck.load({str(tmp_path / 'n.npz')!r})\n"
        "assert type(q['w']) is np.ndarray and s.count == 0\n"
        "bad = {'torch', 'jax', 'cupy'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not HAVE_JAX, reason="jax not installed")
def test_float64_into_jax_without_x64_is_a_clear_error(tmp_path) -> None:
    p = {"w": np.ones(3)}
    save(tmp_path / "f64.npz", p, lionk.init(p))
    code = (
        "import jax\n"
        "from lionk.checkpoint import load\n"
        "try:\n"
        f"    load({str(tmp_path / 'f64.npz')!r}, xp='jax')\n"
        "except TypeError as e:\n"
        "    assert \"params['w']: is float64, but JAX is in 32-bit mode\" in str(e), e\n"
        "    assert 'jax_enable_x64' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
