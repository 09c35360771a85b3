"""Train a small MLP with ``lionk.torch.LionK`` (PyTorch, CPU, a few seconds).

A synthetic two-class problem (8 features uniform in [-1, 1]; the class is the sign of x0·x1,
an XOR pattern no linear model solves; the other 6 features are noise) and a two-layer MLP
trained with Lion (``kappa="sign"``), decoupled weight decay and a cosine learning-rate schedule,
through ``step(closure)``. Two param groups: weights with weight decay, biases without.

With weight decay λ, Lion keeps every weight within the box ``|w| ≤ 1/λ`` (docs/theory.md);
the script reports the largest |w| next to that radius.

When matplotlib is installed, the loss curve is saved as ``torch_mlp_loss.png`` in the working
directory; otherwise that step is skipped silently.

Run: ``python examples/torch_mlp.py``
"""

from __future__ import annotations

import importlib.util


def make_data(n: int = 512, seed: int = 0):
    """Inputs in [-1, 1]² plus 6 noise features; label = 1 where x0·x1 > 0 (XOR)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 8, generator=g) * 2.0 - 1.0
    y = (X[:, 0] * X[:, 1] > 0).long()
    return X, y


def main(steps: int = 300, lr: float = 3e-3, weight_decay: float = 0.5, plot: bool = True) -> dict:
    """Train and return ``initial_loss``, ``final_loss``, ``initial_accuracy``,
    ``final_accuracy``, ``losses``, ``max_abs_weight`` and ``radius`` (= 1/weight_decay)."""
    import torch

    from lionk.torch import LionK

    torch.manual_seed(0)
    X, y = make_data()
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)
    )
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = LionK(
        [{"params": weights, "weight_decay": weight_decay}, {"params": biases, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.99), kappa="sign",
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr / 10)

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            logits = model(X)
            loss = torch.nn.functional.cross_entropy(logits, y)
            acc = (logits.argmax(dim=1) == y).float().mean()
        return float(loss), float(acc)

    loss0, acc0 = evaluate()
    losses = []
    for _ in range(steps):
        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X), y)
            loss.backward()
            return loss

        losses.append(opt.step(closure).item())
        sched.step()
    loss1, acc1 = evaluate()
    max_w = max(float(w.detach().abs().max()) for w in weights)
    print(f"loss {loss0:.4f} -> {loss1:.4f}, accuracy {acc0:.3f} -> {acc1:.3f}, "
          f"max |w| = {max_w:.3f} (radius 1/weight_decay = {1.0 / weight_decay:.3f})")

    if plot and importlib.util.find_spec("matplotlib") is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(losses)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title("LionK (kappa='sign') on an XOR MLP")
        fig.tight_layout()
        fig.savefig("torch_mlp_loss.png", dpi=100)
        plt.close(fig)

    return {
        "initial_loss": loss0,
        "final_loss": loss1,
        "initial_accuracy": acc0,
        "final_accuracy": acc1,
        "losses": losses,
        "max_abs_weight": max_w,
        "radius": 1.0 / weight_decay,
    }


if __name__ == "__main__":
    main()
