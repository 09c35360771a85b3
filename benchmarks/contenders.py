"""The contenders: lionk's execution paths, its peers, hand-written references and the floor.

Each contender is a name plus a ``build(ctx, workload)`` that returns a :class:`Runner` holding
its own copies of the params, grads and optimizer state. ``build`` (or the first steps) may
raise: the harness then marks the contender *skipped* with the exception as the reason. That is
how a lionk path that does not exist yet (``execution="compiled"``, ``lionk.jit_step``) or raises
``NotImplementedError`` shows up in the results, and how a missing peer library does.

Roles: ``lionk`` (the library under test), ``peer`` (another optimizer library), ``reference``
(hand-written steps: what the backend reaches with the obvious code), ``floor`` (the bandwidth
kernels the floor is computed from).

Scopes (the workloads a contender is timed on): ``all`` (the floors, each front-end's default,
the peers and the cheap references: every size), ``opt-in`` (the explicit ``execution=`` rows,
``lionk.jit_step``, the schedule rows and the torch.compile reference: 2^16 and above and the
models, where they matter), ``small`` (the NumPy functional step and its hand-written reference:
up to 2^16 elements).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from conformance.libraries import Library, library

from . import memory
from .workloads import Workload

LR = 1e-4
BETAS = (0.9, 0.99)
WD = 0.1


@dataclass
class Runner:
    step: Callable[[], None]
    sync: Callable[[], None] = lambda: None
    memory: Callable[[], tuple[int | None, str]] | None = None
    note: Callable[[], str] | str = ""
    # floor kernels: bytes one call moves (the bandwidth is bytes / time)
    moved_bytes: int | None = None


@dataclass
class Contender:
    name: str
    backend: str  # numpy | torch | jax | cupy
    role: str  # lionk | peer | reference | floor
    build: Callable[[Context, Workload], Runner]
    compiles: bool = False  # uses torch.compile (skippable with --skip compile)
    floor_kind: str = ""  # for floors: "inplace-add" or "copy"
    scope: str = "all"  # all | opt-in | small (see SCOPES)


#: Where each scope is timed (``--every-size`` times every contender everywhere).
SCOPES = {
    "all": "every size",
    "opt-in": "2^16 and above, and the models",
    "small": "up to 2^16 elements (and the digits MLP)",
}
SMALL_MAX = 1 << 16


def in_scope(c: Contender, w: Workload, every_size: bool = False) -> bool:
    """Whether contender ``c`` is timed on workload ``w``."""
    if every_size or c.scope == "all":
        return True
    if c.scope == "opt-in":
        return w.is_model or w.n >= SMALL_MAX
    if c.scope == "small":
        return w.n <= SMALL_MAX
    raise ValueError(f"scope: expected one of {tuple(SCOPES)}; received {c.scope!r}")


@dataclass
class Context:
    device: str = "cpu"
    seed: int = 0
    _base: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = field(default_factory=dict)

    def base(self, w: Workload) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if w.label not in self._base:
            self._base.clear()
            self._base[w.label] = w.base_arrays(self.seed)
        return self._base[w.label]

    def library(self, family: str) -> Library:
        """The array library of ``family`` ("numpy", "torch" or "jax") on this run's device
        (NumPy's family is CuPy on CUDA): copies of the workload and ``sync`` come from it."""
        name = "cupy" if family == "numpy" and self.device == "cuda" else family
        return library(name, self.device)

    def flat_base(self, w: Workload) -> tuple[np.ndarray, np.ndarray]:
        xs, gs = self.base(w)
        if len(xs) == 1:
            return xs[0].reshape(-1), gs[0].reshape(-1)
        return np.concatenate([x.reshape(-1) for x in xs]), np.concatenate([g.reshape(-1) for g in gs])


# ---------------------------------------------------------------------------------------------
# NumPy (CPU) / CuPy (CUDA)


def _xp(ctx: Context) -> Any:
    if ctx.device == "cuda":
        import cupy

        return cupy
    return np


def _xp_sync(ctx: Context) -> Callable[[], None]:
    return ctx.library("numpy").sync


def _xp_memory(ctx: Context, step: Callable[[], None]) -> Callable[[], tuple[int | None, str]]:
    if ctx.device == "cuda":
        return lambda: _cupy_peak(step)
    return lambda: memory.tracemalloc_peak(step)


def _cupy_peak(step: Callable[[], None]) -> tuple[int | None, str]:  # pragma: no cover - GPU
    import cupy
    from cupy.cuda import memory_hook

    class Peak(memory_hook.MemoryHook):
        name = "lionk-bench-peak"

        def __init__(self) -> None:
            self.cur = self.peak = 0

        def malloc_postprocess(self, **kw: Any) -> None:
            self.cur += kw["mem_size"]
            self.peak = max(self.peak, self.cur)

        def free_postprocess(self, **kw: Any) -> None:
            self.cur -= kw["mem_size"]

    hook = Peak()
    cupy.cuda.Device().synchronize()
    with hook:
        step()
        cupy.cuda.Device().synchronize()
    return hook.peak, "cupy memory hook (peak of pool mallocs - frees)"


def _copies(ctx: Context, family: str, w: Workload) -> tuple[list[Any], list[Any]]:
    """Copies of the workload's params and grads in ``family``'s library on the run's device."""
    lib = ctx.library(family)
    xs, gs = ctx.base(w)
    return [lib.asarray(x) for x in xs], [lib.asarray(g) for g in gs]


def _xp_copies(ctx: Context, w: Workload) -> tuple[list[Any], list[Any]]:
    return _copies(ctx, "numpy", w)


def build_np_floor(ctx: Context, w: Workload) -> Runner:
    xp = _xp(ctx)
    fx, fg = ctx.flat_base(w)
    x, y = xp.array(fx, copy=True), xp.array(fg, copy=True) * xp.float32(1e-3)

    def step() -> None:
        xp.add(x, y, out=x)

    return Runner(step, _xp_sync(ctx), moved_bytes=3 * w.param_bytes,
                  note="in-place x += y, one thread")


SCHEDULE_STEPS = 1000


def cosine_lr(t: int) -> float:
    """A 1,000-step cosine schedule from LR towards 0, repeated (the schedule benchmark rows)."""
    return 0.5 * LR * (1.0 + math.cos(math.pi * (t % SCHEDULE_STEPS) / SCHEDULE_STEPS))


def _lionk_inplace(ctx: Context, xs: list[Any], gs: list[Any], execution: str | None,
                   sync: Callable[[], None], memory: Any, schedule: bool = False) -> Runner:
    """``lionk.LionK`` over arrays it updates in place; the note says which path ran. With
    ``schedule`` the learning rate follows :func:`cosine_lr` (a new value every step)."""
    import lionk

    kw = {} if execution is None else {"execution": execution}
    opt = lionk.LionK(xs, lr=LR, betas=BETAS, weight_decay=WD, kappa="sign", **kw)
    t = [0]

    def step() -> None:
        if schedule:
            t[0] += 1
            opt.lr = cosine_lr(t[0])
        opt.step(gs)

    def note() -> str:
        ran = getattr(opt, "last_execution", None)
        if not ran:
            return ""
        extra = ""
        if type(xs[0]).__module__ == "numpy" and ran in ("chunked", "compiled"):
            from lionk.execution.paths import default_threads

            th = getattr(opt, "threads", None) or f"default={default_threads()}"
            cs = getattr(opt, "chunk_size", None) or "default"
            extra = (f" (threads={th}, chunk_size={cs})" if ran == "chunked" else
                     f" (threads={th}; numba kernel)")
        report = getattr(opt, "execution_report", None)
        fallbacks = report()["fallbacks"] if report else []
        if fallbacks:
            extra += f"; fallback: {fallbacks[0][:100]}"
        return f"ran {ran}{extra}"

    return Runner(step, sync, memory(ctx, step), note)


def build_lionk_np(execution: str | None,
                   schedule: bool = False) -> Callable[[Context, Workload], Runner]:
    """``lionk.LionK`` on NumPy arrays (CuPy with ``--device cuda``); ``schedule``: a new
    learning rate every step (cosine)."""

    def build(ctx: Context, w: Workload) -> Runner:
        xs, gs = _xp_copies(ctx, w)
        return _lionk_inplace(ctx, xs, gs, execution, _xp_sync(ctx), _xp_memory, schedule)

    return build


def build_lionk_np_step(ctx: Context, w: Workload) -> Runner:
    """``lionk.step`` on NumPy arrays (CuPy with ``--device cuda``), the functional form: new
    params and state every step, nothing updated in place; no options beyond the
    hyper-parameters every contender shares."""
    import lionk

    xs, gs = _xp_copies(ctx, w)
    cur = [xs, lionk.init(xs)]

    def step() -> None:
        cur[0], cur[1] = lionk.step(cur[0], gs, cur[1], lr=LR, betas=BETAS, weight_decay=WD,
                                    kappa="sign")

    return Runner(step, _xp_sync(ctx), _xp_memory(ctx, step))


def build_np_hand_functional(ctx: Context, w: Workload) -> Runner:
    """A hand-written functional NumPy Lion: returns new arrays, the formulas and expression
    order of lionk.step (coefficients as Python floats), no validation, no state count."""
    xp = _xp(ctx)
    xs, gs = _xp_copies(ctx, w)
    b1, b2 = BETAS
    c1, c2, decay = 1.0 - b1, 1.0 - b2, 1.0 - LR * WD

    def hand(p: list[Any], g: list[Any], m: list[Any]) -> tuple[list[Any], list[Any]]:
        nx = [(decay * x) - (LR * xp.sign((b1 * mi) + (c1 * gi))) for x, gi, mi in zip(p, g, m)]
        nm = [(b2 * mi) + (c2 * gi) for gi, mi in zip(g, m)]
        return nx, nm

    cur = [xs, [xp.zeros_like(x) for x in xs]]

    def step() -> None:
        cur[0], cur[1] = hand(cur[0], gs, cur[1])

    return Runner(step, _xp_sync(ctx), _xp_memory(ctx, step))


def build_np_naive(ctx: Context, w: Workload) -> Runner:
    """The obvious NumPy Lion: whole-array expressions with temporaries."""
    xp = _xp(ctx)
    xs, gs = _xp_copies(ctx, w)
    ms = [xp.zeros_like(x) for x in xs]
    b1, b2 = BETAS

    def step() -> None:
        for x, g, m in zip(xs, gs, ms):
            x[...] = x * (1 - LR * WD) - LR * xp.sign(b1 * m + (1 - b1) * g)
            m[...] = b2 * m + (1 - b2) * g

    return Runner(step, _xp_sync(ctx), _xp_memory(ctx, step))


# ---------------------------------------------------------------------------------------------
# torch


def _tdev(ctx: Context) -> str:
    return "cuda" if ctx.device == "cuda" else "cpu"


def _tsync(ctx: Context) -> Callable[[], None]:
    return ctx.library("torch").sync


def _tmemory(ctx: Context, step: Callable[[], None]) -> Callable[[], tuple[int | None, str]]:
    if ctx.device == "cuda":
        return lambda: memory.torch_cuda_peak(step, _tsync(ctx))
    return lambda: memory.torch_cpu_peak(step)


def _tcopies(ctx: Context, w: Workload) -> tuple[list[Any], list[Any]]:
    return _copies(ctx, "torch", w)


def _tparams(ctx: Context, w: Workload) -> list[Any]:
    """nn.Parameters with ``.grad`` set (for torch.optim-style optimizers)."""
    import torch

    xs, gs = _tcopies(ctx, w)
    ps = []
    for x, g in zip(xs, gs):
        p = torch.nn.Parameter(x)
        p.grad = g
        ps.append(p)
    return ps


def build_torch_floor(kind: str) -> Callable[[Context, Workload], Runner]:
    def build(ctx: Context, w: Workload) -> Runner:
        import torch

        fx, fg = ctx.flat_base(w)
        dev = _tdev(ctx)
        x = torch.from_numpy(fx).to(dev, copy=True)
        y = torch.from_numpy(fg).to(dev, copy=True).mul_(1e-3)
        if kind == "copy":
            def step() -> None:
                y.copy_(x)
            moved, note = 2 * w.param_bytes, "device-to-device copy y.copy_(x)"
        else:
            def step() -> None:
                x.add_(y)
            moved = 3 * w.param_bytes
            note = "in-place x += y" + ("" if dev == "cuda" else f", {torch.get_num_threads()} threads")
        return Runner(step, _tsync(ctx), moved_bytes=moved, note=note)

    return build


def build_lionk_torch_imperative(execution: str | None) -> Callable[[Context, Workload], Runner]:
    """``lionk.LionK`` on a list of torch tensors (updated in place)."""

    def build(ctx: Context, w: Workload) -> Runner:
        xs, gs = _tcopies(ctx, w)
        return _lionk_inplace(ctx, xs, gs, execution, _tsync(ctx), _tmemory)

    return build


def torch_optimizer_default_execution() -> tuple[bool, Any]:
    """(whether ``lionk.torch.LionK`` takes ``execution=``, its default)."""
    from lionk.torch import LionK

    p = inspect.signature(LionK.__init__).parameters.get("execution")
    if p is None:
        return False, None
    return True, p.default


def build_lionk_torch_optimizer(execution: str | None) -> Callable[[Context, Workload], Runner]:
    """``lionk.torch.LionK`` (a torch.optim.Optimizer): ``.grad`` set, then ``.step()``."""

    def build(ctx: Context, w: Workload) -> Runner:
        from lionk.torch import LionK

        ps = _tparams(ctx, w)
        kw = {} if execution is None else {"execution": execution}
        opt = LionK(ps, lr=LR, betas=BETAS, weight_decay=WD, kappa="sign", **kw)

        def step() -> None:
            opt.step()

        def note() -> str:
            ran = getattr(opt, "last_execution", None)
            return f"ran {ran}" if ran else ""

        return Runner(step, _tsync(ctx), _tmemory(ctx, step), note)

    return build


def build_lion_pytorch(variant: str) -> Callable[[Context, Workload], Runner]:
    def build(ctx: Context, w: Workload) -> Runner:
        ps = _tparams(ctx, w)
        if variant == "foreach":
            from lion_pytorch.foreach import Lion
            opt = Lion(ps, lr=LR, betas=BETAS, weight_decay=WD)
        else:
            from lion_pytorch import Lion
            opt = Lion(ps, lr=LR, betas=BETAS, weight_decay=WD, use_triton=(variant == "triton"))
        return Runner(opt.step, _tsync(ctx), _tmemory(ctx, opt.step))

    return build


def build_adamw_default(ctx: Context, w: Workload) -> Runner:
    """``torch.optim.AdamW(params)``, no options at all (lr 1e-3, weight decay 1e-2: its
    defaults; the cost of a step does not depend on the values)."""
    import torch

    ps = _tparams(ctx, w)
    opt = torch.optim.AdamW(ps)
    return Runner(opt.step, _tsync(ctx), _tmemory(ctx, opt.step))


def build_adamw_fused(ctx: Context, w: Workload) -> Runner:
    import torch

    ps = _tparams(ctx, w)
    opt = torch.optim.AdamW(ps, lr=LR, weight_decay=WD, fused=True)
    return Runner(opt.step, _tsync(ctx), _tmemory(ctx, opt.step))


def _hand_torch_lion(xs: list[Any], gs: list[Any], ms: list[Any]) -> None:
    """The obvious in-place torch Lion (mul_/add_/sign_), one temporary per tensor."""
    b1, b2 = BETAS
    for x, g, m in zip(xs, gs, ms):
        u = m.mul(b1).add_(g, alpha=1 - b1).sign_()
        x.mul_(1 - LR * WD).add_(u, alpha=-LR)
        m.mul_(b2).add_(g, alpha=1 - b2)


def build_hand_torch(compiled: bool) -> Callable[[Context, Workload], Runner]:
    def build(ctx: Context, w: Workload) -> Runner:
        import torch

        xs, gs = _tcopies(ctx, w)
        ms = [torch.zeros_like(x) for x in xs]
        # static shapes, as lionk's compiled path (no "automatic dynamic" kernels across sizes)
        fn = torch.compile(_hand_torch_lion, dynamic=False) if compiled else _hand_torch_lion

        def step() -> None:
            fn(xs, gs, ms)

        return Runner(step, _tsync(ctx), _tmemory(ctx, step))

    return build


# ---------------------------------------------------------------------------------------------
# JAX


def _jcopies(ctx: Context, w: Workload) -> tuple[list[Any], list[Any]]:
    return _copies(ctx, "jax", w)


class _JaxLoop:
    """Holds the (donated, replaced every step) params and state of a functional step."""

    def __init__(self, fn: Any, params: Any, grads: Any, state: Any, order: str) -> None:
        self.fn, self.p, self.g, self.s, self.order = fn, params, grads, state, order
        self.donation_warnings: list[str] = []
        self.calls = 0

    def args(self) -> tuple[Any, ...]:
        return (self.p, self.g, self.s) if self.order == "pgs" else (self.p, self.s, self.g)

    def step(self) -> None:
        # donation warnings come from the first calls (compilation); recording warnings costs
        # tens of microseconds per call, more than a small model's step, so it stops after them
        self.calls += 1
        if self.calls > 3:
            self.p, self.s = self.fn(*self.args())
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.p, self.s = self.fn(*self.args())
        for c in caught:
            msg = str(c.message)
            if "donat" in msg.lower() and msg not in self.donation_warnings:
                self.donation_warnings.append(msg)
            elif "donat" not in msg.lower():
                warnings.warn_explicit(c.message, c.category, c.filename, c.lineno)

    def sync(self) -> None:
        import jax

        jax.block_until_ready((self.p, self.s))

    def memory(self) -> tuple[int | None, str]:
        size, how = memory.jax_compiled_extra(self.fn, self.args())
        if size is None and "not a jitted" in how:
            size, how = memory.jax_intercepted_extra(self.fn, self.step)
            if size is None and "no jitted" in how:
                return memory.jax_live_delta(self.step, self.sync)
        return size, how

    def note(self) -> str:
        return "donation NOT used: " + self.donation_warnings[0][:120] if self.donation_warnings else ""

    def runner(self) -> Runner:
        return Runner(self.step, self.sync, self.memory, self.note)


def build_lionk_jit_step(ctx: Context, w: Workload, fused: bool = False) -> Runner:
    import lionk

    jit_step = getattr(lionk, "jit_step", None)
    if jit_step is None:
        raise NotImplementedError("lionk.jit_step does not exist in this lionk")
    if fused and ctx.device != "cpu":
        raise NotImplementedError("jit_step(fused=True) runs on CPU")
    xs, gs = _jcopies(ctx, w)
    kw = {"fused": True} if fused else {}
    fn = jit_step(lr=LR, betas=BETAS, weight_decay=WD, kappa="sign", donate=True, **kw)
    return _JaxLoop(fn, xs, gs, lionk.init(xs), "pgs").runner()


def build_lionk_jit_step_fused(ctx: Context, w: Workload) -> Runner:
    """jit_step(fused=True): the fused kernel as an XLA FFI call (built by the C++ compiler)."""
    return build_lionk_jit_step(ctx, w, fused=True)


def build_lionk_user_jit(ctx: Context, w: Workload) -> Runner:
    """What a user writes without jit_step: ``jax.jit(lionk.step)`` donating params and state."""
    import jax

    import lionk

    xs, gs = _jcopies(ctx, w)

    def f(p: Any, g: Any, s: Any) -> Any:
        return lionk.step(p, g, s, lr=LR, betas=BETAS, weight_decay=WD, kappa="sign")

    fn = jax.jit(f, donate_argnums=(0, 2))
    return _JaxLoop(fn, xs, gs, lionk.init(xs), "pgs").runner()


def build_optax_lion(ctx: Context, w: Workload) -> Runner:
    import jax
    import optax

    xs, gs = _jcopies(ctx, w)
    tx = optax.lion(LR, b1=BETAS[0], b2=BETAS[1], weight_decay=WD)

    def f(p: Any, s: Any, g: Any) -> Any:
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    fn = jax.jit(f, donate_argnums=(0, 1))
    return _JaxLoop(fn, xs, gs, tx.init(xs), "psg").runner()


def build_lionk_optax(ctx: Context, w: Workload) -> Runner:
    """``lionk.optax.lion_k`` in the same jitted program as the optax.lion row (update, then
    ``optax.apply_updates``; params and state donated): what an optax user runs."""
    import jax
    import optax

    from lionk.optax import lion_k

    xs, gs = _jcopies(ctx, w)
    tx = lion_k(LR, b1=BETAS[0], b2=BETAS[1], weight_decay=WD)

    def f(p: Any, s: Any, g: Any) -> Any:
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    fn = jax.jit(f, donate_argnums=(0, 1))
    return _JaxLoop(fn, xs, gs, tx.init(xs), "psg").runner()


def build_hand_jax(ctx: Context, w: Workload) -> Runner:
    import jax
    import jax.numpy as jnp

    xs, gs = _jcopies(ctx, w)
    b1, b2 = BETAS

    def f(p: Any, g: Any, m: Any) -> Any:
        nx = [x * (1 - LR * WD) - LR * jnp.sign(b1 * mi + (1 - b1) * gi) for x, gi, mi in zip(p, g, m)]
        nm = [b2 * mi + (1 - b2) * gi for gi, mi in zip(g, m)]
        return nx, nm

    fn = jax.jit(f, donate_argnums=(0, 2))
    return _JaxLoop(fn, xs, gs, [jnp.zeros_like(x) for x in xs], "pgs").runner()


# ---------------------------------------------------------------------------------------------
# The list


def all_contenders(device: str) -> list[Contender]:
    """Every contender, in table order. The defaults (no options: ``lionk.torch.LionK``,
    ``lionk.LionK``, ``lionk.step``, ``jax.jit(lionk.step)``, ``lionk.optax.lion_k``) run at
    every size; the opt-in rows where they matter (see :data:`SCOPES`)."""
    cuda = device == "cuda"
    np_backend = "cupy" if cuda else "numpy"
    out: list[Contender] = []

    def add(name: str, backend: str, role: str, build: Callable[[Context, Workload], Runner],
            **kw: Any) -> None:
        out.append(Contender(name, backend, role, build, **kw))

    # floors first: the bandwidth kernels
    if not cuda:
        add("floor: numpy x+=y", "numpy", "floor", build_np_floor, floor_kind="inplace-add")
    add("floor: torch x+=y", "torch", "floor", build_torch_floor("add"), floor_kind="inplace-add")
    if cuda:
        add("floor: torch copy", "torch", "floor", build_torch_floor("copy"), floor_kind="copy")
    # NumPy / CuPy
    add(f"lionk.LionK {np_backend} default", np_backend, "lionk", build_lionk_np(None))
    add(f"lionk.step {np_backend}", np_backend, "lionk", build_lionk_np_step, scope="small")
    add(f"lionk.LionK {np_backend} eager", np_backend, "lionk", build_lionk_np("eager"),
        scope="opt-in")
    add(f"lionk.LionK {np_backend} chunked", np_backend, "lionk", build_lionk_np("chunked"),
        scope="opt-in")
    # NumPy: the fused kernel compiled by numba; CuPy: the same kernel (C body) via NVRTC
    add(f"lionk.LionK {np_backend} compiled", np_backend, "lionk", build_lionk_np("compiled"),
        compiles=True, scope="opt-in")
    # coefficients are run-time arguments: a schedule costs what a fixed lr costs
    add(f"lionk.LionK {np_backend} default, cosine lr", np_backend, "lionk",
        build_lionk_np(None, schedule=True), scope="opt-in")
    add(f"lionk.LionK {np_backend} chunked, cosine lr", np_backend, "lionk",
        build_lionk_np("chunked", schedule=True), scope="opt-in")
    add(f"{np_backend} naive Lion", np_backend, "reference", build_np_naive)
    add(f"{np_backend} hand Lion functional", np_backend, "reference", build_np_hand_functional,
        scope="small")
    # torch
    add("lionk.torch.LionK default", "torch", "lionk", build_lionk_torch_optimizer(None))
    for ex in ("eager", "chunked", "compiled"):
        add(f"lionk.LionK torch {ex}", "torch", "lionk", build_lionk_torch_imperative(ex),
            compiles=(ex == "compiled"), scope="opt-in")
    for ex in ("eager", "chunked", "compiled"):
        add(f"lionk.torch.LionK {ex}", "torch", "lionk", build_lionk_torch_optimizer(ex),
            compiles=(ex == "compiled"), scope="opt-in")
    add("lion_pytorch.Lion default", "torch", "peer", build_lion_pytorch("default"))
    add("lion_pytorch foreach.Lion", "torch", "peer", build_lion_pytorch("foreach"))
    if cuda:
        add("lion_pytorch.Lion use_triton", "torch", "peer", build_lion_pytorch("triton"))
    add("torch AdamW default", "torch", "peer", build_adamw_default)
    add("torch AdamW fused", "torch", "peer", build_adamw_fused)
    add("torch hand Lion eager", "torch", "reference", build_hand_torch(False))
    add("torch hand Lion compiled", "torch", "reference", build_hand_torch(True), compiles=True,
        scope="opt-in")
    # JAX
    add("lionk.step + jax.jit (user)", "jax", "lionk", build_lionk_user_jit)
    add("lionk.optax.lion_k jit", "jax", "lionk", build_lionk_optax)
    add("lionk.jit_step jax", "jax", "lionk", build_lionk_jit_step, scope="opt-in")
    add("lionk.jit_step jax fused", "jax", "lionk", build_lionk_jit_step_fused, compiles=True,
        scope="opt-in")
    add("optax.lion jit", "jax", "peer", build_optax_lion)
    add("jax hand Lion jit", "jax", "reference", build_hand_jax)
    return out


def fresh_compile_caches() -> str:
    """Before each size: forget torch.compile's graphs, so that every size compiles as in a
    fresh process (static shapes, no "automatic dynamic" recompilation carried over from the
    previous size), and allow more recompilations than the default limit (several contenders
    compile the same lionk function in one process; a real program compiles it once)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return ""
    try:
        import torch._dynamo as dynamo

        dynamo.reset()
        for attr in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo.config, attr):
                setattr(dynamo.config, attr, max(64, getattr(dynamo.config, attr)))
        return "torch._dynamo.reset() before each size; recompile limit raised to 64"
    except Exception as exc:  # noqa: BLE001
        return f"torch._dynamo reset failed ({type(exc).__name__})"


def default_is_alias() -> tuple[str | None, str]:
    """Whether ``lionk.torch.LionK default`` duplicates an explicit row, and a note on it."""
    try:
        takes, default = torch_optimizer_default_execution()
    except Exception as exc:  # noqa: BLE001
        return None, f"lionk.torch unavailable ({type(exc).__name__})"
    if not takes:
        return None, "lionk.torch.LionK takes no execution= argument (default = its only path)"
    if default in ("eager", "chunked", "compiled"):
        return f"lionk.torch.LionK {default}", f"lionk.torch.LionK default execution={default!r}"
    return None, f"lionk.torch.LionK default execution={default!r}"


def human_bytes(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover
