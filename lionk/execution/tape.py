"""Record the one Lion-κ step once, replay it on NumPy chunks with ``out=`` buffers.

This is *how* the chunked NumPy path runs :func:`lionk._step.update_leaves`, not a second copy
of its formulas. The step is called once with symbolic arrays (:class:`_Node`) in place of a
chunk of ``x``, ``g`` and ``m``; every operation it performs on them is recorded (the NumPy ufunc
or array-API function, its arguments, the Python-float coefficients). The record becomes a
straight-line Python function that calls the same functions, in the same order, on the same
dtypes, but writes each ufunc's result into a reused scratch buffer (``out=``) and the new
parameters and momentum straight into the parameter and momentum arrays. So a chunk costs one
call per operation, allocates nothing, and copies nothing, and the results are the ones eager
execution computes, bit for bit:

* every recorded call is replayed with the same function and operands (NumPy picks the same
  loop: the ``out`` buffers have the dtypes the calls return);
* before a program is used it is run on probe vectors that contain ±0, ±inf, NaN, subnormals
  and values on both sides of each κ's kinks, and its results are compared byte for byte with
  eager :func:`update_leaves` on the same probes; a program that differs, or a step that cannot
  be recorded (data-dependent Python control flow, a reduction, an unknown object), is not used:
  the chunked path then calls :func:`update_leaves` on each chunk as before.

A program depends on the κ, the step function and the dtypes of the parameters and the
momentum, not on the coefficients: ``lr``, ``b1``, ``1 - b1``, ``b2``, ``1 - b2`` and ``1 - lr*wd``
(the fields of :class:`lionk.core.step.Hyper`, Python floats computed in double precision) are
arguments of the program, passed to the same ufuncs as eager execution passes them. The step is
recorded with two different sets of coefficients; the two records must be the same program (a
step whose operations or constants depend on the coefficient values is not recorded), and the
program must give eager's bytes on the probes with both sets. So a learning-rate schedule records
once. Programs are kept in a bounded cache (:func:`lionk.clear_caches` empties it).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.caches import BoundedCache

__all__ = ["Program", "BoundProgram", "program_for", "why_not", "record", "probes",
           "differs_from_eager", "Untraceable", "fresh_hyper", "alternative_hyper",
           "COEFFICIENTS"]

# the fields of lionk.core.step.Hyper, in order: the run-time arguments of a recorded program
COEFFICIENTS = ("lr", "b1", "one_minus_b1", "b2", "one_minus_b2", "decay")


class Untraceable(Exception):
    """The step cannot be recorded as a straight-line elementwise program."""


class _Node:
    """A symbolic chunk-sized array while the step is being recorded.

    Carries a small real ``probe`` array (what the recorded operations give on the probe
    inputs), from which dtypes are known exactly; operators, NumPy ufuncs, NumPy functions and
    the array-API namespace all record into the same tape.
    """

    __lionk_numpy_tape__ = True  # lets _array_api.native_exact_sign treat it as a NumPy array
    __array_priority__ = 1000.0
    __slots__ = ("tape", "index", "probe")

    def __init__(self, tape: _Tape, index: int, probe: np.ndarray) -> None:
        self.tape, self.index, self.probe = tape, index, probe

    # array attributes ---------------------------------------------------------------------
    @property
    def dtype(self) -> Any:
        return self.probe.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.probe.shape

    @property
    def ndim(self) -> int:
        return 1

    @property
    def size(self) -> int:
        return int(self.probe.size)

    @property
    def device(self) -> str:
        return "cpu"

    def __array_namespace__(self, api_version: Any = None) -> Any:
        return self.tape.namespace

    # NumPy protocols: every ufunc and array function on a node is recorded --------------------
    def __array_ufunc__(self, ufunc: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if method != "__call__" or ufunc.nout != 1:
            raise Untraceable(f"{ufunc.__name__}.{method}")
        return self.tape.record(ufunc, args, kwargs)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return self.tape.record(func, args, kwargs)

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise Untraceable("conversion of a symbolic chunk to a concrete array")

    # anything that needs values is not a straight-line program -------------------------------
    def __bool__(self) -> bool:
        raise Untraceable("Python control flow on array values")

    def __float__(self) -> float:
        raise Untraceable("Python control flow on array values")

    __int__ = __index__ = __float__  # type: ignore[assignment]

    def __getitem__(self, key: Any) -> Any:
        raise Untraceable("indexing")

    def __setitem__(self, key: Any, value: Any) -> None:
        raise Untraceable("in-place assignment")

    def __len__(self) -> int:
        return int(self.probe.shape[0])

    # operators: exactly what ndarray's operators call ----------------------------------------
    def __add__(self, o: Any) -> Any: return np.add(self, o)
    def __radd__(self, o: Any) -> Any: return np.add(o, self)
    def __sub__(self, o: Any) -> Any: return np.subtract(self, o)
    def __rsub__(self, o: Any) -> Any: return np.subtract(o, self)
    def __mul__(self, o: Any) -> Any: return np.multiply(self, o)
    def __rmul__(self, o: Any) -> Any: return np.multiply(o, self)
    def __truediv__(self, o: Any) -> Any: return np.true_divide(self, o)
    def __rtruediv__(self, o: Any) -> Any: return np.true_divide(o, self)
    def __pow__(self, o: Any) -> Any: return np.power(self, o)
    def __rpow__(self, o: Any) -> Any: return np.power(o, self)
    def __neg__(self) -> Any: return np.negative(self)
    def __pos__(self) -> Any: return np.positive(self)
    def __abs__(self) -> Any: return np.absolute(self)
    def __gt__(self, o: Any) -> Any: return np.greater(self, o)
    def __ge__(self, o: Any) -> Any: return np.greater_equal(self, o)
    def __lt__(self, o: Any) -> Any: return np.less(self, o)
    def __le__(self, o: Any) -> Any: return np.less_equal(self, o)
    def __eq__(self, o: Any) -> Any: return np.equal(self, o)  # type: ignore[override]
    def __ne__(self, o: Any) -> Any: return np.not_equal(self, o)  # type: ignore[override]
    def __and__(self, o: Any) -> Any: return np.bitwise_and(self, o)
    def __rand__(self, o: Any) -> Any: return np.bitwise_and(o, self)
    def __or__(self, o: Any) -> Any: return np.bitwise_or(self, o)
    def __ror__(self, o: Any) -> Any: return np.bitwise_or(o, self)
    def __invert__(self) -> Any: return np.invert(self)

    __hash__ = None  # type: ignore[assignment]


class _Namespace:
    """The array-API namespace seen by the step while recording: the real NumPy namespace of
    array-api-compat, whose functions record when given a node and run when not."""

    def __init__(self, tape: _Tape, real: Any) -> None:
        self._tape, self._real = tape, real

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes, finfo, constants

        def call(*args: Any, **kwargs: Any) -> Any:
            if not (_has_node(args) or _has_node(kwargs.values())):
                return attr(*args, **kwargs)
            return self._tape.record(attr, args, kwargs)

        call.__name__ = name
        return call


def _has_node(items: Any) -> bool:
    for a in items:
        if isinstance(a, _Node) or (isinstance(a, (list, tuple)) and _has_node(a)):
            return True
    return False


class _Call:
    __slots__ = ("fn", "args", "kwargs", "node")

    def __init__(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], node: _Node):
        self.fn, self.args, self.kwargs, self.node = fn, args, kwargs, node

    @property
    def out_capable(self) -> bool:
        """The call can write its result into a given buffer: a one-output ufunc called without
        keywords, or a function with such a ufunc-like replacement (:func:`_lowered`)."""
        if self.kwargs:
            return False
        fn = _lowered(self.fn)
        return isinstance(fn, np.ufunc) and fn.nout == 1 or fn is np.clip


def _lowered(fn: Any) -> Any:
    """The function a recorded call is replayed with: itself, or for array-api-compat's NumPy
    ``clip`` (bounds cast to the array's dtype, then ``np.clip``; about 12 µs of Python per call
    on top), ``np.clip`` with ``out=``, which gives the same dtype and values for Python-float
    bounds (NEP 50). Checked, like everything, by running the program on the probes."""
    import array_api_compat.numpy as compat_numpy

    return np.clip if fn is getattr(compat_numpy, "clip", None) else fn


class _Tape:
    def __init__(self, real_namespace: Any) -> None:
        self.calls: list[_Call] = []
        self.nodes: list[_Node] = []
        self.namespace = _Namespace(self, real_namespace)

    def input(self, probe: np.ndarray) -> _Node:
        node = _Node(self, len(self.nodes), probe)
        self.nodes.append(node)
        return node

    def record(self, fn: Any, args: Any, kwargs: dict[str, Any]) -> _Node:
        args = tuple(args)
        for a in (*args, *kwargs.values()):
            _check_literal(a)
        probe_args = tuple(_probe(a) for a in args)
        probe_kwargs = {k: _probe(v) for k, v in kwargs.items()}
        out = fn(*probe_args, **probe_kwargs)
        n = self.nodes[0].probe.shape
        if not isinstance(out, np.ndarray) or out.shape != n:
            raise Untraceable(f"{getattr(fn, '__name__', fn)!s} is not elementwise")
        node = self.input(out)
        self.calls.append(_Call(fn, args, dict(kwargs), node))
        return node


def _probe(a: Any) -> Any:
    if isinstance(a, _Node):
        return a.probe
    if isinstance(a, (list, tuple)):
        return type(a)(_probe(b) for b in a)
    return a


def _check_literal(a: Any) -> None:
    """Arguments other than nodes must be chunk-independent: scalars, dtypes, 0-d arrays."""
    if isinstance(a, _Node) or a is None or isinstance(a, (bool, int, float, str, np.generic)):
        return
    if isinstance(a, (list, tuple)):
        for b in a:
            _check_literal(b)
        return
    if isinstance(a, np.ndarray):
        if a.ndim == 0:
            return
        raise Untraceable("an array constant with a shape (not elementwise)")
    if isinstance(a, (type, np.dtype)):
        return
    raise Untraceable(f"an argument of type {type(a).__name__}")


# ---------------------------------------------------------------------------------------------
# From a tape to a straight-line function.

_INPUT_NAMES = ("x", "g", "m")
# ufuncs much slower with ``out`` equal to their input (measured: np.sign on 64K float32 in
# cache, 163 µs in place against 41 µs into another buffer); they get a buffer of their own
_SLOW_IN_PLACE = frozenset({np.sign})


class Program:
    """A recorded step for one (step function, κ, dtypes): ``bind(hyper)`` gives the function
    ``run(x, g, m, *buffers)`` updating the 1-D chunks ``x`` and ``m`` in place with those
    coefficients. ``buffers(n)`` makes the scratch arrays for a chunk of n elements; ``source``
    is the generated code (for inspection): the coefficients are its arguments ``c_lr``,
    ``c_b1``, ... (:data:`COEFFICIENTS`)."""

    def __init__(self, source: str, factory: Callable[..., Callable[..., None]],
                 buffer_dtypes: list[np.dtype]) -> None:
        self.source = source
        self.factory = factory
        self.buffer_dtypes = buffer_dtypes

    def bind(self, hyper: Any) -> BoundProgram:
        """The program with these coefficients (a :class:`lionk.core.step.Hyper` of floats)."""
        return BoundProgram(self, self.factory(*(float(c) for c in hyper)))

    def buffers(self, n: int) -> list[np.ndarray]:
        return [np.empty(n, dtype=dt) for dt in self.buffer_dtypes]

    @property
    def buffer_bytes_per_element(self) -> int:
        return sum(np.dtype(dt).itemsize for dt in self.buffer_dtypes)


class BoundProgram:
    """A :class:`Program` with its coefficients: ``run(x, g, m, *buffers)``."""

    __slots__ = ("program", "run")

    def __init__(self, program: Program, run: Callable[..., None]) -> None:
        self.program = program
        self.run = run

    def buffers(self, n: int) -> list[np.ndarray]:
        return self.program.buffers(n)

    @property
    def buffer_bytes_per_element(self) -> int:
        return self.program.buffer_bytes_per_element

    @property
    def source(self) -> str:
        return self.program.source


def coefficient_name(a: Any, hyper: Any) -> str | None:
    """The :data:`COEFFICIENTS` name of a recorded scalar, by identity with a field of
    ``hyper`` (the step passes the field's own float object to the operation; the record is
    made with :func:`fresh_hyper`, so no other constant is the same object), else None."""
    if type(a) is not float or hyper is None:
        return None
    for name, value in zip(COEFFICIENTS, hyper):
        if a is value:
            return name
    return None


def _compile(tape: _Tape, inputs: list[_Node], outputs: dict[int, _Node],
             hyper: Any = None) -> Program:
    """Generate the replay function. ``outputs`` maps an input index (0: x, 2: m) to the node
    holding its new value; the fields of ``hyper`` (by identity) become arguments."""
    calls = tape.calls
    position = {c.node.index: k for k, c in enumerate(calls)}
    # last instruction reading each node (outputs count as read at the end)
    end = len(calls)
    last_read: dict[int, int] = {}
    for k, c in enumerate(calls):
        for a in _flat_nodes((c.args, tuple(c.kwargs.values()))):
            last_read[a.index] = k
    for node in outputs.values():
        last_read[node.index] = end
    # which inputs each node may share memory with (results of non-ufunc calls may be views)
    aliases: dict[int, set[int]] = {n.index: {i} for i, n in enumerate(inputs)}
    for c in calls:
        if c.out_capable:
            aliases[c.node.index] = set()
        else:
            s: set[int] = set()
            for a in _flat_nodes((c.args, tuple(c.kwargs.values()))):
                s |= aliases.get(a.index, set())
            aliases[c.node.index] = s
    # the last instruction reading input i, through any alias of it
    last_input_read = {i: -1 for i in range(len(inputs))}
    for idx, k in last_read.items():
        for i in aliases.get(idx, ()):
            last_input_read[i] = max(last_input_read[i], k)
    # outputs written straight into their input's array when nothing reads that input later
    direct: dict[int, int] = {}  # node index -> input index
    for i, node in outputs.items():
        pos = position.get(node.index)
        if (pos is not None and calls[pos].out_capable and node.dtype == inputs[i].dtype
                and last_input_read[i] <= pos and node.index not in direct):
            direct[node.index] = i

    names: dict[int, str] = {n.index: _INPUT_NAMES[i] for i, n in enumerate(inputs)}
    consts: dict[str, Any] = {}
    lines: list[str] = []
    free: dict[Any, list[str]] = {}
    buffer_dtypes: list[np.dtype] = []
    held: dict[str, int] = {}  # buffer name -> the index of the live node occupying it
    buffer_dtype: dict[str, Any] = {}

    def literal(a: Any) -> str:
        if isinstance(a, _Node):
            return names[a.index]
        if isinstance(a, (list, tuple)):
            inner = ", ".join(literal(b) for b in a)
            return f"({inner},)" if isinstance(a, tuple) else f"[{inner}]"
        coef = coefficient_name(a, hyper)
        if coef is not None:
            return f"c_{coef}"
        if type(a) is float and math.isfinite(a):
            return repr(a)  # repr round-trips a double exactly
        name = f"c{len(consts)}"
        consts[name] = a
        return name

    def function(fn: Any) -> str:
        base = getattr(fn, "__name__", "f")
        base = base if base.isidentifier() else "f"
        name, j = base, 1
        while consts.get(name, fn) is not fn or name in _INPUT_NAMES:
            name, j = f"{base}_{j}", j + 1
        consts[name] = fn
        return name

    for k, c in enumerate(calls):
        fname = function(_lowered(c.fn) if c.out_capable else c.fn)
        args = ", ".join(literal(a) for a in c.args)
        kw = ", ".join(f"{key}={literal(v)}" for key, v in c.kwargs.items())
        call = f"{fname}({args}{', ' if args and kw else ''}{kw}"
        idx = c.node.index
        if idx in direct:
            target = _INPUT_NAMES[direct[idx]]
            lines.append(f"    {call}, out={target})")
            names[idx] = target
        elif c.out_capable:
            dt = c.node.dtype
            pool = free.setdefault(dt, [])
            dying = [names[a.index] for a in _flat_nodes(c.args)
                     if last_read.get(a.index) == k and held.get(names[a.index]) == a.index
                     and buffer_dtype[names[a.index]] == dt]
            if dying and c.fn not in _SLOW_IN_PLACE:
                buf = dying[0]  # in place: the argument's buffer is free after this call
                held.pop(buf)
            elif pool:
                buf = pool.pop()
            else:
                buf = f"b{len(buffer_dtypes)}"
                buffer_dtypes.append(dt)
            held[buf] = idx
            buffer_dtype[buf] = dt
            lines.append(f"    {call}, out={buf})")
            names[idx] = buf
        else:
            names[idx] = f"t{idx}"
            lines.append(f"    {names[idx]} = {call})")
        # free the buffers of nodes read for the last time here and of a result never read
        for a in (*_flat_nodes((c.args, tuple(c.kwargs.values()))), c.node):
            nm = names[a.index]
            if last_read.get(a.index, k) == k and held.get(nm) == a.index:
                del held[nm]
                free[buffer_dtype[nm]].append(nm)
    for i, node in outputs.items():
        if direct.get(node.index) != i:
            lines.append(f"    {_INPUT_NAMES[i]}[...] = {names[node.index]}")
    params = ", ".join([*_INPUT_NAMES, *(f"b{j}" for j in range(len(buffer_dtypes)))])
    coefs = ", ".join(f"c_{c}" for c in COEFFICIENTS)
    body = "\n".join("    " + line for line in lines) or "        pass"
    source = (f"def lionk_program({coefs}):\n    def lionk_chunk({params}):\n{body}\n"
              f"    return lionk_chunk\n")
    scope: dict[str, Any] = dict(consts)
    exec(compile(source, "<lionk._tape>", "exec"), scope)  # noqa: S102 - our own generated code
    return Program(source, scope["lionk_program"], buffer_dtypes)


def _flat_nodes(items: Any) -> list[_Node]:
    out: list[_Node] = []
    for a in items:
        if isinstance(a, _Node):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(_flat_nodes(a))
    return out


# ---------------------------------------------------------------------------------------------
# Recording, verification, cache.


def probes(dtype: np.dtype, mdtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, g, m probe vectors: ±0, ±inf, NaN, tiny and subnormal values, ±1, values around
    common κ thresholds, and random normals, combined so that each appears in every role."""
    specials = [0.0, -0.0, math.inf, -math.inf, math.nan, 1.0, -1.0, 1e-30, -1e-30, 5e-324,
                -5e-324, 1e-45, 3e30, -3e30, 0.05, -0.05, 0.1, -0.1, 0.1000001, 0.5, 2.0, -2.0]
    rng = np.random.default_rng(20261128)
    base = np.concatenate([np.array(specials), rng.standard_normal(42)])
    with np.errstate(all="ignore"):
        x = base.astype(dtype)
        g = np.roll(base, 7).astype(dtype)
        m = np.roll(base[::-1], 3).astype(mdtype)
    return x, g, m


def fresh_hyper(hyper: Any) -> Any:
    """``hyper`` with a new float object in every field (same values): recorded with it, each
    coefficient is told apart from every other constant, and from the other coefficients, by
    identity (:func:`coefficient_name`)."""
    fields = []
    for name, c in zip(COEFFICIENTS, hyper):
        if type(c) is not float:
            raise Untraceable(f"the coefficient {name} is {type(c).__name__}, not a Python float")
        fields.append(struct.unpack("<d", struct.pack("<d", c))[0])  # a new object
    return type(hyper)(*fields)


def alternative_hyper(hyper: Any) -> Any:
    """Other valid coefficients (every field a different value): the second recording."""
    from ..core.step import coefficients

    lr, b1, b2 = (3.0e-3, 0.8, 0.95) if hyper.lr != 3.0e-3 else (7.0e-4, 0.7, 0.9)
    return coefficients(lr, b1, b2, 0.25)


def record(update: Callable[..., Any], hyper: Any, kappa: Any, dtype: np.dtype,
           mdtype: np.dtype) -> tuple[_Tape, list[_Node], dict[int, _Node]]:
    """Call ``update`` once on symbolic chunks and return its record. ``hyper`` should come
    from :func:`fresh_hyper` for its fields to be recognised as coefficients."""
    import array_api_compat.numpy as compat_numpy

    px, pg, pm = probes(dtype, mdtype)
    tape = _Tape(compat_numpy)
    inputs = [tape.input(px), tape.input(pg), tape.input(pm)]
    with np.errstate(all="ignore"):
        (nx,), (nm,) = update([inputs[0]], [inputs[1]], [inputs[2]], hyper, kappa)
    for out in (nx, nm):
        if not isinstance(out, _Node):
            raise Untraceable(f"the step returned {type(out).__name__}, not a recorded array")
    return tape, inputs, {0: nx, 2: nm}


def record_twice(update: Callable[..., Any], hyper: Any, kappa: Any, dtype: np.dtype,
                 mdtype: np.dtype, generate: Callable[..., Any]) -> tuple[Any, Any]:
    """Record the step with ``hyper`` and with :func:`alternative_hyper`, ``generate(tape,
    inputs, outputs, hyper)`` code from each; the two must be equal (then the code depends on
    the coefficients only through its arguments). Returns ``(code, the hyper of the second
    recording)``; raises :class:`Untraceable` when they differ."""
    first = fresh_hyper(hyper)
    code = generate(*record(update, first, kappa, dtype, mdtype), first)
    other = fresh_hyper(alternative_hyper(hyper))
    again = generate(*record(update, other, kappa, dtype, mdtype), other)
    if _code_text(code) != _code_text(again):
        raise Untraceable("the recorded step depends on the coefficient values (an operation "
                          "or a constant changes with lr, betas or weight_decay)")
    return code, other


def _code_text(code: Any) -> Any:
    return getattr(code, "source", code)


def differs_from_eager(run: Callable[[np.ndarray, np.ndarray, np.ndarray], None],
                       update: Callable[..., Any], hyper: Any, kappa: Any, dtype: np.dtype,
                       mdtype: np.dtype) -> str:
    """Run ``run(x, g, m)`` (updating x and m in place) and eager ``update`` on the probes:
    "" when byte-identical, else which output differs ("params" or "momentum")."""
    x, g, m = probes(dtype, mdtype)
    with np.errstate(all="ignore"):
        (ex,), (em,) = update([x.copy()], [g.copy()], [m.copy()], hyper, kappa)
        px, pm = x.copy(), m.copy()
        run(px, g.copy(), pm)
    for label, got, want in (("params", px, ex), ("momentum", pm, em)):
        want = np.asarray(want)
        if got.dtype != want.dtype or got.tobytes() != want.tobytes():
            return label
    return ""


def _verify(program: Program, update: Callable[..., Any], hypers: Any, kappa: Any,
            dtype: np.dtype, mdtype: np.dtype) -> None:
    """Raise unless the program gives eager ``update``'s bytes on the probes, with each of
    the coefficient sets ``hypers``."""
    for hyper in hypers:
        run_h = program.bind(hyper).run

        def run(x: np.ndarray, g: np.ndarray, m: np.ndarray) -> None:
            run_h(x, g, m, *program.buffers(x.shape[0]))  # noqa: B023 - called right away

        label = differs_from_eager(run, update, hyper, kappa, dtype, mdtype)
        if label:
            raise Untraceable(f"the recorded program's {label} differ from the eager step")


CACHE_SIZE = 64
_CACHE: BoundedCache[tuple[Any, Any, str]] = BoundedCache("execution.tape: recorded steps",
                                                          CACHE_SIZE)


def cache_key(update: Any, kappa: Any, dtype: Any, mdtype: Any) -> tuple[Any, ...]:
    """What a recorded step depends on: the step function, κ and dtypes (not the
    coefficients). κ by equality (``lionk.kappa.resolve("huber")`` twice gives equal objects);
    an unhashable κ by identity."""
    try:
        hash(kappa)
        kap: Any = kappa
    except TypeError:
        kap = ("id", id(kappa))
    return (kap, np.dtype(dtype), np.dtype(mdtype), update)


def memoized(cache: BoundedCache[Any], make: Callable[[], Any], update: Any,
             kappa: Any, dtype: Any, mdtype: Any) -> tuple[Any, str]:
    """``(make(), "")`` for this step function (or any hashable that stands for it), κ and
    dtypes, made once and kept in ``cache``; ``(None, reason)`` when ``make`` raised (any
    failure means: do not use what it makes)."""
    key = cache_key(update, kappa, dtype, mdtype)
    hit = cache.get(key)
    if hit is None or (isinstance(key[0], tuple) and hit[0] is not kappa):
        try:
            hit = (kappa, make(), "")
        except Exception as exc:  # noqa: BLE001
            hit = (kappa, None, f"{type(exc).__name__}: {exc}")
        cache.put(key, hit)
    return hit[1], hit[2]


def _verified_program(update: Callable[..., Any], hyper: Any, kappa: Any, dtype: Any,
                      mdtype: Any) -> Program:
    dtype, mdtype = np.dtype(dtype), np.dtype(mdtype)
    program, other = record_twice(update, hyper, kappa, dtype, mdtype, _compile)
    _verify(program, update, (hyper, other), kappa, dtype, mdtype)
    return program


def program_for(update: Callable[..., Any], hyper: Any, kappa: Any, dtype: Any,
                mdtype: Any) -> Program | None:
    """The verified program of ``update`` for this κ and these dtypes (any coefficients:
    ``program.bind(hyper)``), or None when the step cannot be recorded (the reason is in
    :func:`why_not`). ``hyper`` is used for the recording and the probe check of a new
    program; a program in the cache is returned for any ``hyper``."""
    args = (update, hyper, kappa, dtype, mdtype)
    return memoized(_CACHE, lambda: _verified_program(*args), update, kappa, dtype, mdtype)[0]


def why_not(update: Callable[..., Any], hyper: Any, kappa: Any, dtype: Any,
            mdtype: Any) -> str:
    """Why :func:`program_for` returned None for these arguments ("" when it did not)."""
    args = (update, hyper, kappa, dtype, mdtype)
    return memoized(_CACHE, lambda: _verified_program(*args), update, kappa, dtype, mdtype)[1]
