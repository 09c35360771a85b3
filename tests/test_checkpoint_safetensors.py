"""Checkpoints on safetensors (format version 2), issue 10's checkpoint cases, and checkpoints of
every front-end (lionk.LionK, lionk.torch.LionK, optax's LionKState) resumed on another backend.

* Interoperability: a checkpoint opens with ``safetensors.numpy.load_file`` (and the torch and
  flax loaders) and gives the params and momentum under readable names, bit for bit; its
  metadata is the lionk JSON, checked by its own sha256.
* The file written by lionk 0.1 (tests/data, format version 1) still loads.
* Issue 10: a replaced file keeps its mode; a valid 244-character name works; the metadata size
  is bounded before anything is allocated for it; namedtuple fields such as ``class``/``_w``
  are refused before any array is read (and work with ``like=``); a failed save names the leaf;
  temporary files of a killed save are removed by the next save to that path. Each of these
  tests fails on lionk 0.1's checkpoint module.
* Front-ends: 20 steps with one front-end, save, load into another, 20 more steps; params and
  momentum equal an uninterrupted 40-step NumPy ``lionk.step`` run bit for bit (κ sign and
  huber), for every ordered pair of NumPy (``lionk.LionK``), PyTorch (``lionk.torch.LionK``)
  and JAX (optax ``lion_k``).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

import lionk
from lionk.checkpoint import CheckpointError, info, load, save

from . import _checkpoint_v1 as v1
from ._util import assert_bitwise_equal
from .conftest import HAVE_JAX, HAVE_TORCH, NP_BFLOAT16, get_backend

DATA = os.path.join(os.path.dirname(__file__), "data")


def files_in(d) -> list[str]:
    return sorted(os.listdir(d))


def to_np(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x.copy()
    mod = type(x).__module__
    if mod.startswith("torch"):
        import torch

        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().copy().view(NP_BFLOAT16)
        return t.numpy().copy()
    return get_backend("jax").to_numpy(x)


def assert_tree_bitwise(actual, expected, what: str) -> None:
    a_leaves, _, a_paths = lionk.tree.flatten(actual)
    e_leaves, _, e_paths = lionk.tree.flatten(expected)
    assert a_paths == e_paths, (what, a_paths, e_paths)
    for a, e, p in zip(a_leaves, e_leaves, a_paths):
        assert_bitwise_equal(to_np(a), to_np(e), f"{what}{p}")


def model_tree():
    rng = np.random.default_rng(0)
    params = {
        "layer1": {"w": rng.standard_normal((3, 4)).astype(np.float32),
                   "b": rng.standard_normal(4).astype(NP_BFLOAT16)},
        "head": [rng.standard_normal((2, 2)), rng.standard_normal(3).astype(np.float16)],
    }
    momentum = lionk.tree.tree_map(lambda a: (a * 0.5).astype(a.dtype), params)
    return params, lionk.State(7, momentum, 1)


# ---------------------------------------------------------------------------------------------
# The container: safetensors, readable names, metadata


def test_opens_with_safetensors_numpy_under_readable_names(tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    params, state = model_tree()
    path = tmp_path / "c.safetensors"
    save(path, params, state)
    tensors = load_file(str(path))
    names = ["layer1/b", "layer1/w", "head/0", "head/1"]
    assert sorted(tensors) == sorted([f"{part}/{n}" for n in names
                                      for part in ("params", "momentum")])
    assert_bitwise_equal(tensors["params/layer1/w"], params["layer1"]["w"], "w")
    assert_bitwise_equal(tensors["params/layer1/b"], params["layer1"]["b"], "bf16 b")
    assert tensors["params/layer1/b"].dtype == NP_BFLOAT16  # native bfloat16, not raw bits
    assert_bitwise_equal(tensors["momentum/head/0"], state.momentum["head"][0], "m head0")
    with safe_open(str(path), framework="np") as f:
        md = f.metadata()
    assert md["format"] == "lionk.checkpoint" and md["format_version"] == "2"
    assert hashlib.sha256(md["lionk"].encode()).hexdigest() == md["lionk_sha256"]
    meta = json.loads(md["lionk"])
    assert (meta["count"], meta["skipped"], meta["lionk_version"]) == (7, 1, lionk.__version__)
    # leaf i is leaf i of lionk.tree.flatten, and each record names its tensor and checksum
    _, _, paths = lionk.tree.flatten(params)
    assert [r["path"] for r in meta["leaves"]] == paths
    for rec in meta["leaves"]:
        for part in ("params", "momentum"):
            a = tensors[rec[part]["name"]]
            raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
            assert hashlib.sha256(raw).hexdigest() == rec[part]["sha256"]
            assert list(a.shape) == rec[part]["shape"]


@pytest.mark.skipif(not (HAVE_TORCH and HAVE_JAX), reason="torch and jax needed")
def test_opens_with_the_torch_and_flax_loaders(tmp_path) -> None:
    import jax.numpy as jnp
    import torch
    from safetensors.flax import load_file as load_jax
    from safetensors.torch import load_file as load_torch

    params, state = model_tree()
    save(tmp_path / "c.safetensors", params, state)
    t = load_torch(str(tmp_path / "c.safetensors"))
    assert t["params/layer1/b"].dtype == torch.bfloat16
    assert_bitwise_equal(to_np(t["params/layer1/b"]), params["layer1"]["b"], "torch bf16")
    j = load_jax(str(tmp_path / "c.safetensors"))
    assert j["params/layer1/b"].dtype == jnp.bfloat16
    assert_bitwise_equal(to_np(j["momentum/head/0"]), state.momentum["head"][0], "jax m")


def test_names_fall_back_to_paths_when_readable_names_collide(tmp_path) -> None:
    from safetensors.numpy import load_file

    params = {0: np.ones(2), "0": np.zeros(2), "a/b": np.full(1, 3.0)}
    save(tmp_path / "k.safetensors", params, lionk.init(params))
    assert sorted(load_file(str(tmp_path / "k.safetensors"))) == sorted(
        f"{part}/{p}" for p in ("[0]", "['0']", "['a/b']") for part in ("params", "momentum"))
    p, _ = load(tmp_path / "k.safetensors")
    assert p[0][0] == 1.0 and p["0"][0] == 0.0 and p["a/b"][0] == 3.0


def test_a_file_of_lionk_0_1_still_loads() -> None:
    """tests/data/checkpoint_v1_lionk0.1.npz was written by lionk 0.1's lionk.checkpoint.save
    from the tree below."""
    P = collections.namedtuple("Point", ["x", "y"])
    params = {"w": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
              "b": [np.linspace(-1, 1, 5), (np.array([1.5, -2.25, 0.0], NP_BFLOAT16), None)],
              "p": P(x=np.float16(0.5) * np.ones(2, np.float16),
                     y=np.zeros((0, 2), np.float32)),
              7: np.asarray(3.0)}
    mom = lionk.tree.tree_map(lambda a: (a * 0.25).astype(a.dtype), params)
    path = os.path.join(DATA, "checkpoint_v1_lionk0.1.npz")
    p, s = load(path)
    assert (s.count, s.skipped) == (5, 2)
    assert type(p["p"]).__name__ == "Point" and p["b"][1][1] is None
    assert_tree_bitwise(p, params, "params")
    assert_tree_bitwise(s.momentum, mom, "momentum")
    meta = info(path)
    assert meta["format_version"] == 1 and meta["lionk_version"] == "0.1.0"
    p2, _ = load(path, like=params)
    assert type(p2["p"]) is P


def test_containers_come_back_as_saved(tmp_path) -> None:
    """OrderedDict (insertion order), defaultdict and mixed int/str keys, with and without
    like; the leaf order is lionk's (optree's), whatever the dict order."""
    od = collections.OrderedDict([("z", np.ones(2)), ("a", np.zeros(3))])
    dd = collections.defaultdict(list, {2: np.ones(1), "k": np.ones(4)})
    params = {"od": od, "dd": dd, "other": collections.defaultdict(lambda: 0, {"x": np.ones(1)})}
    save(tmp_path / "c.safetensors", params, lionk.init(params))
    p, s = load(tmp_path / "c.safetensors")
    assert type(p["od"]) is collections.OrderedDict and list(p["od"]) == ["z", "a"]
    assert type(p["dd"]) is collections.defaultdict and p["dd"].default_factory is list
    assert type(s.momentum["od"]) is collections.OrderedDict
    assert p["other"].default_factory is None  # only built-in factories are saved
    p2, _ = load(tmp_path / "c.safetensors", like=params)
    assert type(p2["dd"]) is collections.defaultdict and p2["dd"].default_factory is list
    assert [r["path"] for r in info(tmp_path / "c.safetensors")["leaves"]] == \
        lionk.tree.flatten(params)[2]


# ---------------------------------------------------------------------------------------------
# Corruption specific to the safetensors container (truncation and byte flips: test_checkpoint)


def _header(path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _with_header(head: dict, rest: bytes) -> bytes:
    raw = json.dumps(head).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + rest


@pytest.fixture
def good(tmp_path):
    params, state = model_tree()
    save(tmp_path / "g.safetensors", params, state)
    return tmp_path / "g.safetensors"


def _edit_lionk(head: dict, fn) -> None:
    meta = json.loads(head["__metadata__"]["lionk"])
    fn(meta)
    text = json.dumps(meta)
    head["__metadata__"]["lionk"] = text
    head["__metadata__"]["lionk_sha256"] = hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda h: h["__metadata__"].update(lionk_sha256="0" * 64),
         "checksum error: the sha256 of the 'lionk' metadata"),
        (lambda h: h["__metadata__"].update(format_version="3"),
         r"format_version '3' is not supported by this lionk \(it reads versions \[1, 2\]\)"),
        (lambda h: h.pop("__metadata__"), "not a lionk checkpoint: its safetensors metadata"),
        (lambda h: h["params/layer1/w"].update(dtype="F64"),
         r"params\['layer1'\]\['w'\]: the safetensors entry 'params/layer1/w' is"),
        (lambda h: h["params/layer1/w"].update(shape=[4, 3]), "the lionk metadata says"),
        (lambda h: _edit_lionk(h, lambda m: m.update(count=-2)), "invalid metadata: count -2"),
        (lambda h: _edit_lionk(h, lambda m: m["leaves"][0]["params"].update(name="nope")),
         r"the tensor 'nope' is missing"),
        (lambda h: h.update(extra={"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}),
         r"tensors not described by lionk: \['extra'\]"),
    ],
    ids=["meta-sha", "version", "no-metadata", "dtype", "shape", "count", "name", "extra"],
)
def test_inconsistent_header_is_an_error(good, tmp_path, edit, pattern) -> None:
    head, rest = _header(good)
    edit(head)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(_with_header(head, rest))
    with pytest.raises(CheckpointError, match=pattern):
        load(bad)


def test_a_foreign_safetensors_file_is_not_a_checkpoint(tmp_path) -> None:
    from safetensors.numpy import save_file

    save_file({"w": np.ones(3, np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not a lionk checkpoint: its safetensors metadata "
                                              "'format' is None"):
        load(tmp_path / "model.safetensors")


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_metadata_size_is_bounded_before_it_is_read_v1(tmp_path) -> None:
    """Issue 10: a 200 KiB .npz whose metadata entry claims 400 MiB: a CheckpointError without
    asking for the 400 MiB (lionk 0.1 allocated them before noticing the entry was short)."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (400 << 20,)}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    body = buf.getvalue() + b"\0" * (200 << 10)
    bad = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("__lionk__.npy", body)
    assert bad.stat().st_size < 300 << 10

    errors = []

    def attempt():
        with pytest.raises(CheckpointError, match="metadata entry '__lionk__'") as e:
            load(bad)
        errors.append(str(e.value))

    assert _peak_bytes(attempt) < 8 << 20
    assert "says 419430400 bytes; the entry holds 204800" in errors[0]


def test_deflated_metadata_entry_is_bounded_by_its_declared_size(tmp_path, monkeypatch) -> None:
    import lionk.io.checkpoint as ck

    path = tmp_path / "v1.npz"
    p = {"w": np.ones(3)}
    v1.save(path, p, lionk.init(p))
    monkeypatch.setattr(ck, "MAX_HEADER_BYTES", 100)
    with pytest.raises(CheckpointError, match=r"the metadata entry '__lionk__' declares \d+ "
                                              r"bytes \(stored in \d+\); more than the 100"):
        load(path)


def test_header_size_is_bounded_before_it_is_read_v2(tmp_path) -> None:
    bad = tmp_path / "bomb.safetensors"
    bad.write_bytes(struct.pack("<Q", 400 << 20) + b"{" + b" " * (200 << 10))

    def attempt():
        with pytest.raises(CheckpointError, match=r"give a 419430400-byte header, but the "
                                                  r"file has 204801 bytes after them"):
            load(bad)

    assert _peak_bytes(attempt) < 8 << 20


# ---------------------------------------------------------------------------------------------
# namedtuples whose fields collections.namedtuple refuses

_Base = collections.namedtuple("Odd", ["a", "b"])


class Odd(_Base):
    """A namedtuple-like class whose fields collections.namedtuple would refuse."""

    __slots__ = ()
    _fields = ("class", "_w")


@pytest.mark.parametrize("version", [1, 2])
def test_namedtuple_fields_class_and_underscore(tmp_path, version) -> None:
    """Issue 10: refused with a CheckpointError before any array is read (here an array is
    corrupted: reading it first would give a checksum error instead); with like= they work."""
    params = {"o": Odd(np.ones(2), np.zeros(3))}
    path = tmp_path / ("o.npz" if version == 1 else "o.safetensors")
    (v1.save if version == 1 else save)(path, params, lionk.init(params))
    p, s = load(path, like=params)
    assert type(p["o"]) is Odd and np.array_equal(p["o"][0], np.ones(2))
    data = bytearray(path.read_bytes())
    at = bytes(data).find(np.ones(2).tobytes())
    data[at + 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"the saved namedtuple \['o'\]: Odd\('class', "
                                              r"'_w'\) cannot be rebuilt by "
                                              r"collections.namedtuple.*pass like="):
        load(path)


# ---------------------------------------------------------------------------------------------
# save: mode, long names, errors naming the leaf, stale temporary files


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_replaced_file_keeps_its_mode(tmp_path) -> None:
    params, state = model_tree()
    path = tmp_path / "c.safetensors"
    old = os.umask(0o022)
    try:
        save(path, params, state)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # a new file: 0666 & ~umask
        os.chmod(path, 0o600)
        save(path, params, state)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        os.chmod(path, 0o640)
        save(path, params, state)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)


@pytest.mark.parametrize("length", [244, 255])
def test_long_valid_file_name(tmp_path, length) -> None:
    params, state = model_tree()
    path = tmp_path / ("c" * (length - 12) + ".safetensors")
    assert len(path.name) == length
    save(path, params, state)
    save(path, params, state)  # and over an existing file
    p, s = load(path)
    assert_tree_bitwise(p, params, "params")
    assert files_in(tmp_path) == [path.name]


def test_failed_save_names_the_leaf(tmp_path, monkeypatch) -> None:
    import lionk.io.checkpoint as ck

    params, state = model_tree()
    path = tmp_path / "c.safetensors"
    save(path, params, state)
    before = path.read_bytes()
    real = ck._to_host
    seen = []

    def flaky(x, name):
        seen.append(x)
        if len(seen) == 3:
            raise RuntimeError("device lost")
        return real(x, name)

    monkeypatch.setattr(ck, "_to_host", flaky)
    with pytest.raises(RuntimeError, match="device lost") as err:
        save(path, params, state)
    leaves, _, paths = lionk.tree.flatten(params)
    mleaves, _, _ = lionk.tree.flatten(state.momentum)
    labels = {id(x): f"params{p}" for x, p in zip(leaves, paths)}
    labels.update({id(m): f"momentum{p}" for m, p in zip(mleaves, paths)})
    notes = getattr(err.value, "__notes__", [])
    assert any(f"while exporting {labels[id(seen[2])]} (" in n for n in notes), notes
    assert path.read_bytes() == before and files_in(tmp_path) == ["c.safetensors"]


_KILLED_SAVE = """
import os, signal, sys
import numpy as np
import lionk, lionk.io.checkpoint as ck
real = ck._to_host
calls = []
def dying(x, name):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(x, name)
ck._to_host = dying
p = {"a": np.ones(1 << 16), "b": np.ones(1 << 16)}
ck.save(sys.argv[1], p, lionk.init(p))
"""


@pytest.mark.skipif(os.name != "posix", reason="POSIX processes")
def test_next_save_removes_temporary_files_of_a_killed_save(tmp_path) -> None:
    """Issue 10: a save killed half-way leaves its temporary file; the next save to the same
    path removes it. Temporary files of a live process and of other paths are left alone."""
    path = tmp_path / "c.safetensors"
    params, state = model_tree()
    save(path, params, state)
    for _ in range(2):  # the second killed save removes the first one's file, then dies
        proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        stale = [f for f in files_in(tmp_path) if f.endswith(".tmp")]
        assert len(stale) == 1, files_in(tmp_path)
        assert os.path.getsize(tmp_path / stale[0]) > 0
    # a temporary file of a process that is alive (this one's parent), and one of another path
    import lionk.io.checkpoint as ck

    live = ck._tmp_prefix(str(path)) + f"{os.getppid()}-abcd0123.tmp"
    (tmp_path / live).write_bytes(b"x")
    other = ck._tmp_prefix(str(tmp_path / "other")) + "999999999-abcd0123.tmp"
    (tmp_path / other).write_bytes(b"x")
    save(path, params, state)
    assert files_in(tmp_path) == sorted(["c.safetensors", live, other])
    p, _ = load(path)
    assert_tree_bitwise(p, params, "params")


# ---------------------------------------------------------------------------------------------
# Front-ends: lionk.LionK, lionk.torch.LionK, optax LionKState

FRONTENDS = ["numpy", "torch", "jax"]
HYPER = dict(lr=0.01, b1=0.9, b2=0.99, weight_decay=0.5)
KAPPAS = {"sign": "sign", "huber": lionk.kappa.get("huber", delta=0.3)}
STEPS = 20


def start(dtype: str):
    """Params [[w, b]] (the tree of a torch LionK with one param group), |x| >= 0.5 so that
    optax's ``x + (x' - x)`` is exactly ``x'`` (Sterbenz) over the 40 steps; and the shift a."""
    rng = np.random.default_rng(3)
    sgn = lambda s: rng.choice([-1.0, 1.0], s)  # noqa: E731
    w = (sgn((3, 4)) * rng.uniform(0.5, 1.2, (3, 4))).astype(dtype)
    b = (sgn(5) * rng.uniform(0.5, 1.2, 5)).astype(dtype)
    a = [[rng.uniform(-0.3, 0.3, (3, 4)).astype(dtype), rng.uniform(-0.3, 0.3, 5).astype(dtype)]]
    return [[w, b]], a


def grad(x, a):
    return x * x * x - x + a


@functools.cache
def reference(kappa_name: str, dtype: str):
    """Uninterrupted lionk.step on numpy: the states after STEPS and 2*STEPS steps."""
    x, a = start(dtype)
    state = lionk.init(x)
    out = []
    for _ in range(2):
        for _ in range(STEPS):
            g = lionk.tree.tree_map(grad, x, a)
            x, state = lionk.step(x, g, state, lr=HYPER["lr"], betas=(HYPER["b1"], HYPER["b2"]),
                                  weight_decay=HYPER["weight_decay"], kappa=KAPPAS[kappa_name])
        out.append((x, state))
    return out


class Front:
    """One front-end: build, step, save, load, and its params and momentum as [[w, b]]."""

    def __init__(self, name: str, kappa, x_np, a_np) -> None:
        self.name, self.kappa = name, kappa
        hp = dict(lr=HYPER["lr"], betas=(HYPER["b1"], HYPER["b2"]),
                  weight_decay=HYPER["weight_decay"], kappa=kappa)
        if name == "numpy":
            self.x = [[w.copy() for w in x_np[0]]]
            self.a = a_np
            self.opt = lionk.LionK(self.x, **hp)
        elif name == "torch":
            import torch

            from lionk.torch import LionK

            self.x = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in x_np[0]]
            self.a = [torch.from_numpy(c.copy()) for c in a_np[0]]
            self.opt = LionK(self.x, **hp)
        else:
            import jax.numpy as jnp

            from lionk.optax import lion_k

            self.x = [[jnp.asarray(w) for w in x_np[0]]]
            self.a = [[jnp.asarray(c) for c in a_np[0]]]
            self.tx = lion_k(HYPER["lr"], b1=HYPER["b1"], b2=HYPER["b2"],
                             weight_decay=HYPER["weight_decay"], kappa=kappa)
            self.state = self.tx.init(self.x)

    def step(self, n: int) -> None:
        for _ in range(n):
            if self.name == "numpy":
                self.opt.step(lionk.tree.tree_map(grad, self.x, self.a))
            elif self.name == "torch":
                import torch

                with torch.no_grad():
                    for p, c in zip(self.x, self.a):
                        p.grad = grad(p.detach(), c)
                self.opt.step()
            else:
                import optax

                g = lionk.tree.tree_map(grad, self.x, self.a)
                updates, self.state = self.tx.update(g, self.state, self.x)
                self.x = optax.apply_updates(self.x, updates)

    def save(self, path) -> None:
        if self.name == "jax":
            save(path, self.x, self.state)
        else:
            save(path, self.opt)

    def load(self, path) -> None:
        if self.name == "jax":
            self.x, self.state = load(path, like=self.x, into=self.state)
        else:
            load(path, into=self.opt)

    def params(self):
        return [list(self.x)] if self.name == "torch" else self.x

    def momentum(self):
        if self.name == "numpy":
            return self.opt.state.momentum
        if self.name == "torch":
            return [[self.opt.state[p]["exp_avg"] for p in self.x]]
        return self.state.mu

    def count(self) -> int:
        if self.name == "numpy":
            return self.opt.state.count
        if self.name == "torch":
            return self.opt.state[self.x[0]]["step"]
        return int(self.state.count)


def _need(*names):
    for n in names:
        if n == "torch" and not HAVE_TORCH:
            pytest.skip("torch not installed")
        if n == "jax":
            if not HAVE_JAX:
                pytest.skip("jax not installed")
            pytest.importorskip("optax")


@pytest.mark.parametrize("kappa_name", sorted(KAPPAS))
@pytest.mark.parametrize("dst", FRONTENDS)
@pytest.mark.parametrize("src", FRONTENDS)
def test_resume_on_another_frontend_is_bitwise(tmp_path, src, dst, kappa_name) -> None:
    _need(src, dst)
    dtype = "float32"
    (x20, s20), (x40, s40) = reference(kappa_name, dtype)
    x_np, a_np = start(dtype)
    kappa = KAPPAS[kappa_name]
    first = Front(src, kappa, x_np, a_np)
    first.step(STEPS)
    # the first half already agrees with the numpy reference
    assert_tree_bitwise(first.params(), x20, f"{src} params after {STEPS}")
    assert_tree_bitwise(first.momentum(), s20.momentum, f"{src} momentum after {STEPS}")
    path = tmp_path / "ckpt.safetensors"
    first.save(path)
    zeros = [[np.zeros_like(w) for w in x_np[0]]]
    second = Front(dst, kappa, zeros, a_np)  # fresh: everything must come from the file
    second.load(path)
    assert second.count() == STEPS
    assert_tree_bitwise(second.params(), x20, f"{src}->{dst} loaded params")
    assert_tree_bitwise(second.momentum(), s20.momentum, f"{src}->{dst} loaded momentum")
    second.step(STEPS)
    assert second.count() == 2 * STEPS
    assert_tree_bitwise(second.params(), x40, f"{src}->{dst} params after {2 * STEPS}")
    assert_tree_bitwise(second.momentum(), s40.momentum, f"{src}->{dst} momentum")


def test_lionk_hyperparameters_are_saved_and_restored(tmp_path) -> None:
    x = {"w": np.linspace(-1, 1, 6)}
    huber = lionk.kappa.get("huber", delta=0.3)
    opt = lionk.LionK(x, lr=0.02, betas=(0.8, 0.95), weight_decay=0.25, kappa=huber,
                      nan_policy="skip")
    opt.step({"w": np.ones(6)})
    save(tmp_path / "o.safetensors", opt)
    meta = info(tmp_path / "o.safetensors")
    assert meta["frontend"] == {"kind": "lionk.LionK"}
    assert meta["hyperparams"] == {"lr": 0.02, "betas": [0.8, 0.95], "weight_decay": 0.25,
                                   "nan_policy": "skip",
                                   "kappa": {"name": "huber", "params": {"delta": 0.3}}}
    y = {"w": np.zeros(6)}
    opt2 = lionk.LionK(y, lr=1.0)
    params, state = load(tmp_path / "o.safetensors", into=opt2)
    assert params is y and state is opt2.state and state.count == 1
    assert (opt2.lr, opt2.betas, opt2.weight_decay, opt2.nan_policy) == (0.02, (0.8, 0.95),
                                                                         0.25, "skip")
    assert opt2.kappa == huber
    assert_bitwise_equal(y["w"], x["w"], "params written in place")
    # and save(hyperparams=) stores them for the pure form
    save(tmp_path / "p.safetensors", x, opt.state, hyperparams={"lr": 0.5, "kappa": "sign"})
    assert info(tmp_path / "p.safetensors")["hyperparams"] == {"lr": 0.5, "kappa": "sign"}
    load(tmp_path / "p.safetensors", into=opt2)  # only what the file has is replaced
    assert (opt2.lr, opt2.betas, opt2.kappa.name, opt2.weight_decay) == (0.5, (0.8, 0.95),
                                                                         "sign", 0.25)
    with pytest.raises(ValueError, match=r"hyperparams\['lr'\]: expected a finite number"):
        save(tmp_path / "q.safetensors", x, opt.state, hyperparams={"lr": float("nan")})
    save(tmp_path / "r.safetensors", x, opt.state, hyperparams={"lr": 20.0})  # lr*wd >= 1
    with pytest.raises(CheckpointError, match="hyperparams: cannot be restored"):
        load(tmp_path / "r.safetensors", into=opt2)
    assert opt2.lr == 0.5


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_torch_param_groups_round_trip(tmp_path) -> None:
    import torch

    from lionk.torch import LionK

    torch.manual_seed(0)
    w, b, c = (torch.nn.Parameter(torch.randn(s)) for s in ((3, 2), (2,), (4,)))
    opt = LionK([{"params": [w, b]},
                 {"params": [c], "lr": 0.05, "state_dtype": torch.float64, "kappa": "huber"}],
                lr=0.01, weight_decay=0.1)
    w.grad, b.grad = torch.ones(3, 2), -torch.ones(2)
    opt.step()
    opt.step()
    c.grad = torch.full((4,), 0.5)  # c steps once; b and w twice
    opt.step()
    save(tmp_path / "t.safetensors", opt)
    meta = info(tmp_path / "t.safetensors")
    assert meta["frontend"]["steps"] == [[3, 3], [1]]
    assert [g["lr"] for g in meta["frontend"]["groups"]] == [0.01, 0.05]

    w2, b2, c2 = (torch.nn.Parameter(torch.zeros(s)) for s in ((3, 2), (2,), (4,)))
    fresh = LionK([{"params": [w2, b2]}, {"params": [c2]}], lr=0.9)
    load(tmp_path / "t.safetensors", into=fresh)
    sd, sd2 = opt.state_dict(), fresh.state_dict()
    assert sd["param_groups"] == sd2["param_groups"]
    assert sd["state"].keys() == sd2["state"].keys()
    for k in sd["state"]:
        assert sd["state"][k]["step"] == sd2["state"][k]["step"]
        assert sd["state"][k]["exp_avg"].dtype == sd2["state"][k]["exp_avg"].dtype
        assert torch.equal(sd["state"][k]["exp_avg"], sd2["state"][k]["exp_avg"])
    for p, q in ((w, w2), (b, b2), (c, c2)):
        assert torch.equal(p, q)
    # a param never stepped has no state after loading either
    d = torch.nn.Parameter(torch.ones(2))
    opt3 = LionK([d], lr=0.1)
    save(tmp_path / "u.safetensors", opt3)
    d2 = torch.nn.Parameter(torch.zeros(2))
    opt4 = LionK([d2], lr=0.1)
    load(tmp_path / "u.safetensors", into=opt4)
    assert len(opt4.state) == 0 and torch.equal(d2, d)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_into_errors_change_nothing(tmp_path) -> None:
    import torch

    from lionk.torch import LionK

    x = {"w": np.ones(3, np.float32)}
    save(tmp_path / "d.safetensors", x, lionk.init(x))
    p = torch.nn.Parameter(torch.full((3,), 2.0))
    opt = LionK([p], lr=0.1)
    with pytest.raises(TypeError, match=r"like: expected a dict \(as saved\); received a list"):
        load(tmp_path / "d.safetensors", into=opt)
    assert torch.equal(p, torch.full((3,), 2.0)) and len(opt.state) == 0
    with pytest.raises(TypeError, match="into: expected a lionk.LionK, a lionk.torch.LionK or "
                                        r"an optax LionKState \(or an optax.chain state "
                                        r"holding one\); received AdamW"):
        load(tmp_path / "d.safetensors", into=torch.optim.AdamW([p]))
    with pytest.raises(TypeError, match="params: expected a lionk.torch.LionK .*received the "
                                        "torch optimizer AdamW"):
        save(tmp_path / "e.safetensors", torch.optim.AdamW([p]))
    opt_np = lionk.LionK({"w": np.full(3, 2.0, np.float32)}, state_dtype="float64")
    with pytest.raises(TypeError, match=r"momentum\['w'\]: the optimizer's momentum is float64; "
                                        "the checkpoint's is float32"):
        load(tmp_path / "d.safetensors", into=opt_np)
    assert np.array_equal(opt_np.params["w"], np.full(3, 2.0, np.float32))
    with pytest.raises(TypeError, match="load: into= a lionk.LionK loads into its own params"):
        load(tmp_path / "d.safetensors", into=opt_np, xp="numpy")


# ---------------------------------------------------------------------------------------------
# Memory-mapped loading, forward compatibility


def test_mmap_load_gives_copy_on_write_maps(tmp_path) -> None:
    params, state = model_tree()
    path = tmp_path / "m.safetensors"
    save(path, params, state)
    before = path.read_bytes()
    p, s = load(path, mmap=True)
    assert isinstance(p["layer1"]["w"], np.memmap) and p["layer1"]["w"].flags.writeable
    assert_tree_bitwise(p, params, "params")
    assert_tree_bitwise(s.momentum, state.momentum, "momentum")
    p["layer1"]["w"][...] = 0.0  # private to this process: the file is unchanged
    assert path.read_bytes() == before
    p2, _ = load(path, mmap=True)
    assert_bitwise_equal(p2["layer1"]["w"], params["layer1"]["w"], "reloaded")
    # corruption is still detected
    data = bytearray(before)
    data[data.find(params["layer1"]["w"].tobytes()) + 5] ^= 0x04
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"params\['layer1'\]\['w'\]: checksum error"):
        load(tmp_path / "bad.safetensors", mmap=True)
    with pytest.raises(TypeError, match="mmap: expected a bool; received str"):
        load(path, mmap="yes")


def test_unknown_metadata_fields_are_ignored(good, tmp_path) -> None:
    """Forward compatibility: a later lionk may add fields to the metadata (and safetensors
    metadata keys); this reader ignores what it does not know."""
    head, rest = _header(good)
    _edit_lionk(head, lambda m: m.update(future_option={"a": 1}))
    head["__metadata__"]["added_later"] = "x"
    other = tmp_path / "future.safetensors"
    other.write_bytes(_with_header(head, rest))
    p, s = load(other)
    params, state = model_tree()
    assert_tree_bitwise(p, params, "params")
    assert (s.count, s.skipped) == (7, 1)


_SAVE_FOREVER = """
import sys
import numpy as np
import lionk
path = sys.argv[1]
print("ready", flush=True)
k = 1
while True:
    p = {"w": np.full(1 << 19, float(k)), "b": [np.full(1 << 18, float(k), np.float32)]}
    m = lionk.tree.tree_map(lambda a: -a, p)
    lionk.save(path, p, lionk.State(k, m, 0))
    k += 1
"""


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_kill_during_saves_leaves_a_complete_checkpoint(tmp_path) -> None:
    """kill -9 at random moments of a process that saves one checkpoint after another: the file
    always loads, as one complete state (its params and momentum all say the same step); the
    next save removes the temporary file the killed one left."""
    path = tmp_path / "c.safetensors"
    p0 = {"w": np.zeros(1 << 19), "b": [np.zeros(1 << 18, np.float32)]}
    save(path, p0, lionk.init(p0))
    rng = np.random.default_rng(1)
    counts = []
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _SAVE_FOREVER, str(path)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        import time

        time.sleep(float(rng.uniform(0.05, 0.6)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
        p, s = load(path)
        k = s.count
        counts.append(k)
        assert np.all(p["w"] == k) and np.all(p["b"][0] == k)
        assert np.all(s.momentum["w"] == -k) and np.all(s.momentum["b"][0] == -k)
        stale = [f for f in files_in(tmp_path) if f.endswith(".tmp")]
        assert len(stale) <= 1
    assert max(counts) > 0  # the saves did happen
    save(path, p0, lionk.init(p0))
    assert files_in(tmp_path) == ["c.safetensors"]


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_torch_named_parameters_give_the_tensor_names(tmp_path) -> None:
    import torch
    from safetensors.torch import load_file

    from lionk.torch import LionK

    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    opt = LionK(model.named_parameters(), lr=0.01)
    model(torch.ones(4, 2)).sum().backward()
    opt.step()
    save(tmp_path / "n.safetensors", opt)
    tensors = load_file(str(tmp_path / "n.safetensors"))
    names = [n for n, _ in model.named_parameters()]
    assert sorted(tensors) == sorted(f"{part}/0/{n}" for n in names
                                     for part in ("params", "momentum"))
    for n, p in model.named_parameters():
        assert torch.equal(tensors[f"params/0/{n}"], p.detach())
        assert torch.equal(tensors[f"momentum/0/{n}"], opt.state[p]["exp_avg"])
    model2 = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    opt2 = LionK(model2.named_parameters(), lr=0.5)
    load(tmp_path / "n.safetensors", into=opt2)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q) and torch.equal(opt.state[p]["exp_avg"],
                                                 opt2.state[q]["exp_avg"])


# ---------------------------------------------------------------------------------------------
# Random trees

_NT = collections.namedtuple("NT", ["p", "q"])


def _trees():
    from hypothesis import strategies as st

    dtypes = st.sampled_from(["float16", "bfloat16", "float32", "float64"])
    shapes = st.sampled_from([(), (0,), (3,), (2, 3)])

    @st.composite
    def leaf(draw):
        dt = draw(dtypes)
        shape = draw(shapes)
        seed = draw(st.integers(0, 2**16))
        a = np.random.default_rng(seed).standard_normal(shape)
        return a.astype(NP_BFLOAT16 if dt == "bfloat16" else dt)

    keys = st.one_of(st.integers(-3, 3), st.text("ab/_'", min_size=0, max_size=3))

    def containers(children):
        pairs = st.lists(st.tuples(keys, children), max_size=3, unique_by=lambda kv: repr(kv[0]))
        # (a defaultdict with a built-in factory: other factories come back as None)
        return st.one_of(
            st.lists(children, max_size=3),
            st.lists(children, max_size=3).map(tuple),
            st.builds(_NT, children, children),
            pairs.map(dict),
            pairs.map(collections.OrderedDict),
            pairs.map(lambda kv: collections.defaultdict(list, kv)),
        )

    return st.recursive(st.one_of(leaf(), st.none()), containers, max_leaves=8)


def test_random_trees_round_trip(tmp_path) -> None:
    """Random trees (dict, OrderedDict, defaultdict with mixed int/str keys, lists, tuples,
    namedtuples, None; every dtype; 0-d and empty leaves): the file loads with and without
    like= to the same containers, paths and bits, leaf i being leaf i of lionk.tree.flatten."""
    from hypothesis import HealthCheck, given, settings

    path = tmp_path / "r.safetensors"

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(_trees())
    def check(params):
        momentum = lionk.tree.tree_map(lambda a: (a * 0.5).astype(a.dtype), params)
        save(path, params, lionk.State(3, momentum, 0))
        _, treedef, paths = lionk.tree.flatten(params)
        assert [r["path"] for r in info(path)["leaves"]] == paths
        for like in (None, params):
            p, s = load(path, like=like)
            if like is None:  # namedtuples rebuilt from name and fields: equal as text
                assert str(lionk.tree.flatten(p)[1]) == str(treedef)
                assert str(lionk.tree.flatten(s.momentum)[1]) == str(treedef)
            else:
                assert lionk.tree.flatten(p)[1] == treedef
                assert lionk.tree.flatten(s.momentum)[1] == treedef
            assert_tree_bitwise(p, params, "params")
            assert_tree_bitwise(s.momentum, momentum, "momentum")

    check()


@pytest.mark.skipif(not HAVE_JAX, reason="jax not installed")
def test_optax_chain_state(tmp_path) -> None:
    """The LionKState inside an optax.chain state is saved, and restored into a chain
    template; a chain whose other parts hold arrays is refused (their state would be lost)."""
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    from lionk.optax import lion_k

    params = {"w": jnp.asarray(np.linspace(-1, 1, 4))}
    tx = optax.chain(optax.clip_by_global_norm(1.0), lion_k(0.01, weight_decay=0.1))
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update({"w": params["w"] ** 3}, state, params)
        params = optax.apply_updates(params, updates)
    save(tmp_path / "c.safetensors", params, state)
    assert info(tmp_path / "c.safetensors")["count"] == 3
    fresh = tx.init(params)
    p2, s2 = load(tmp_path / "c.safetensors", like=params, into=fresh)
    assert type(s2) is type(state) and type(s2[0]) is type(state[0])
    assert int(s2[1].count) == 3 and s2[1].count.dtype == state[1].count.dtype
    assert_tree_bitwise(s2[1].mu, state[1].mu, "mu")
    assert_tree_bitwise(p2, params, "params")
    u1, _ = tx.update({"w": params["w"]}, state, params)
    u2, _ = tx.update({"w": p2["w"]}, s2, p2)
    assert_tree_bitwise(u2, u1, "next update")
    sched = optax.chain(optax.scale_by_schedule(lambda n: 1.0), lion_k(0.01))
    with pytest.raises(TypeError, match=r"state: an optax state whose parts other than the "
                                        r"LionKState hold arrays \(\['state\[0\]\.count'\]\)"):
        save(tmp_path / "d.safetensors", params, sched.init(params))
