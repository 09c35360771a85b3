"""Muon as a Lion-κ: train an MLP on scikit-learn's digits with ``lionk.torch.LionK`` (CPU, seconds).

Weight matrices use the nuclear-norm κ with Muon's Newton–Schulz polar and torch.optim.Muon's
defaults (``lionk.kappa.muon_settings``: betas (μ², μ), the shape factor √max(1, rows/cols),
bfloat16 iteration); biases use Lion (``kappa="sign"``) in a second param group. The same model
is trained with ``torch.optim.Muon`` (+ the same Lion group) for comparison.

With weight decay λ, Lion-κ with K = s·‖·‖_* keeps each weight matrix in the spectral-norm ball
``‖W‖_op ≤ s/λ`` (with Newton–Schulz, whose singular values reach p_max = 1.2024 instead of 1,
the invariant ball is ``s·p_max/λ``); the script reports ``‖W‖_op`` against that radius, and the
certificate with the exact (SVD) polar: ``lionk.lyapunov.constraint_violation``.

Run: ``python examples/muon_mlp.py``
"""

from __future__ import annotations


def load_digits():
    """Digits (8×8 images, 10 classes), features scaled to [0, 1], a fixed 75/25 split."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits as _load

    X, y = _load(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    cut = int(0.75 * len(y))
    tr, te = idx[:cut], idx[cut:]
    t = lambda a, dt: torch.as_tensor(a, dtype=dt)  # noqa: E731
    return (t(X[tr], torch.float32), t(y[tr], torch.long),
            t(X[te], torch.float32), t(y[te], torch.long))


def make_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 10))


def train(use_torch_muon: bool, steps: int = 150, lr: float = 0.02, weight_decay: float = 0.1,
          lion_lr: float = 3e-3) -> dict:
    import torch

    import lionk
    from lionk.torch import LionK

    Xtr, ytr, Xte, yte = load_digits()
    model = make_model()
    mats = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    lion = LionK(other, lr=lion_lr, weight_decay=weight_decay, kappa="sign")
    if use_torch_muon:
        opts = [torch.optim.Muon(mats, lr=lr, weight_decay=weight_decay), lion]
    else:
        opts = [LionK(mats, **lionk.kappa.muon_settings(lr=lr, weight_decay=weight_decay)), lion]
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        batch = torch.randint(0, len(ytr), (128,), generator=gen)
        for o in opts:
            o.zero_grad()
        torch.nn.functional.cross_entropy(model(Xtr[batch]), ytr[batch]).backward()
        for o in opts:
            o.step()
    with torch.no_grad():
        acc = float((model(Xte).argmax(1) == yte).float().mean())
        # the spectral-norm ball of each matrix: ‖W‖_op against s/λ (s = √max(1, rows/cols))
        ratios = []
        for w in mats:
            rows, cols = w.shape
            radius = max(1.0, rows / cols) ** 0.5 / weight_decay
            ratios.append(float(torch.linalg.matrix_norm(w, ord=2)) / radius)
        # the certificate's constraint, with the exact (SVD) polar's κ and the same shape factor
        violation = lionk.lyapunov.constraint_violation(
            [w.detach().double().numpy() for w in mats], weight_decay=weight_decay,
            kappa=lionk.kappa.get("nuclear", scale="original"))
    return {"accuracy": acc, "op_norm_over_radius": ratios, "violation": violation}


def main(steps: int = 150) -> dict:
    """Train with lionk's Muon and with torch.optim.Muon; return both results."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is fastest
    try:
        ours = train(False, steps)
        ref = train(True, steps)
    finally:
        torch.set_num_threads(n)
    print(f"lionk Muon (nuclear κ): test accuracy {ours['accuracy']:.3f}, "
          f"max ‖W‖_op/(s/λ) {max(ours['op_norm_over_radius']):.3f}")
    print(f"torch.optim.Muon:       test accuracy {ref['accuracy']:.3f}, "
          f"max ‖W‖_op/(s/λ) {max(ref['op_norm_over_radius']):.3f}")
    return {"lionk": ours, "torch": ref}


if __name__ == "__main__":
    main()
