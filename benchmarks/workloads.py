"""What is benchmarked: one flat tensor of 2^k float32, or a list of tensors shaped like a model.

A size is given on the command line as ``16`` (one tensor of 2^16 elements), ``model`` (the
~10.7M-parameter, 220-tensor transformer below: many small tensors, from 64 to 2^20 elements),
``model:B`` (the same widths with B blocks) or ``digits`` (the 6-tensor MLP a user trains on
scikit-learn's digits: 64-128-64-10).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A small GPT-like transformer: d_model 256, 4 heads of 64, MLP 4x, 12 blocks, vocabulary 4096,
# context 512. Every weight and bias is its own tensor (separate q, k, v, o projections; QK-norm
# weights of one head's width), as in a PyTorch module: 220 tensors of 64 to 2^20 elements.
D_MODEL = 256
HEAD_DIM = 64
D_MLP = 4 * D_MODEL
VOCAB = 4096
CONTEXT = 512
BLOCKS = 12


def model_shapes(blocks: int = BLOCKS) -> list[tuple[int, ...]]:
    """Leaf shapes: token and position embeddings, then per block two layer norms (weight,
    bias), q / k / v / o weights and biases, q-norm and k-norm weights (one head's width) and
    the MLP's two weights and biases, then the final layer norm. 12 blocks: 220 leaves of 64 to
    2^20 elements, 10.66M parameters."""
    d, f, h = D_MODEL, D_MLP, HEAD_DIM
    shapes: list[tuple[int, ...]] = [(VOCAB, d), (CONTEXT, d)]
    for _ in range(blocks):
        shapes += [(d,), (d,)]                 # ln1 weight, bias
        for _proj in "qkvo":
            shapes += [(d, d), (d,)]           # attention q, k, v, o: weight, bias
        shapes += [(h,), (h,)]                 # q-norm, k-norm weights (per head dim)
        shapes += [(d,), (d,)]                 # ln2 weight, bias
        shapes += [(d, f), (f,), (f, d), (d,)]  # mlp in, mlp out: weight, bias
    shapes += [(d,), (d,)]                     # final layer norm
    return shapes


# A small MLP for scikit-learn's 8x8 digits (64 inputs, 10 classes): weights and biases of
# 64-128-64-10, 6 tensors, 17,226 parameters.
DIGITS_WIDTHS = (64, 128, 64, 10)


def digits_shapes() -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    for a, b in zip(DIGITS_WIDTHS[:-1], DIGITS_WIDTHS[1:]):
        shapes += [(a, b), (b,)]
    return shapes


@dataclass(frozen=True)
class Workload:
    """One benchmarked parameter set: ``shapes`` of float32 leaves, ``n`` elements in all."""

    label: str
    shapes: tuple[tuple[int, ...], ...]

    @property
    def n(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    @property
    def leaves(self) -> int:
        return len(self.shapes)

    @property
    def param_bytes(self) -> int:
        return 4 * self.n

    @property
    def step_bytes(self) -> int:
        """Bytes one step must move: read x, g, m and write x, m (5 float32 arrays)."""
        return 5 * self.param_bytes

    @property
    def is_model(self) -> bool:
        return self.label.startswith("model") or self.label == "digits"

    def describe(self) -> str:
        if self.is_model:
            return f"{self.label} ({self.leaves} tensors, {self.n / 1e6:.2f}M params)"
        return f"{self.label} (1 tensor)"

    def base_arrays(self, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Float32 params (scale 0.02) and grads, one numpy array per leaf; backends copy them."""
        rng = np.random.default_rng(seed)
        xs, gs = [], []
        for s in self.shapes:
            xs.append(rng.standard_normal(s, dtype=np.float32) * np.float32(0.02))
            gs.append(rng.standard_normal(s, dtype=np.float32))
        return xs, gs


def parse_size(token: str) -> Workload:
    """``"16"`` / ``"2^16"`` -> one tensor of 2^16; ``"model"`` / ``"model:B"`` -> the model;
    ``"digits"`` -> the digits MLP. (``"minimize"``, the minimize section, is not a workload:
    :func:`parse_sizes` leaves it to the caller.)"""
    t = token.strip().lower()
    if t == "digits":
        return Workload("digits", tuple(digits_shapes()))
    if t.startswith("model"):
        blocks = BLOCKS
        if ":" in t:
            blocks = int(t.split(":", 1)[1])
            if blocks < 0:
                raise ValueError(f"--sizes: model blocks must be >= 0; received {token!r}")
        label = "model" if blocks == BLOCKS else f"model:{blocks}"
        return Workload(label, tuple(model_shapes(blocks)))
    if t.startswith("2^"):
        t = t[2:]
    k = int(t)
    if not 1 <= k <= 31:
        raise ValueError(f"--sizes: expected a power of two 2^1..2^31 as its exponent; received {token!r}")
    return Workload(f"2^{k}", ((1 << k,),))


SECTIONS = ("minimize",)


def split_sizes(spec: str) -> tuple[list[Workload], list[str]]:
    """The workloads of a ``--sizes`` spec and the sections it names (``minimize``)."""
    sizes, sections = [], []
    for tok in spec.split(","):
        t = tok.strip().lower()
        if not t:
            continue
        if t in SECTIONS:
            if t not in sections:
                sections.append(t)
        else:
            sizes.append(parse_size(t))
    return sizes, sections


def parse_sizes(spec: str) -> list[Workload]:
    return split_sizes(spec)[0]
