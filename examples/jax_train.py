"""Train a tiny MLP with Lion-κ through optax (plain JAX, synthetic data, a few seconds on a CPU).

The task: classify 2-D points by whether they lie inside a circle (not linearly separable).
The optimizer is an ``optax.chain`` of gradient clipping and ``lionk.optax.lion_k`` with a cosine
learning-rate schedule and weight decay on the weight matrices only (``mask``). With Lion
(κ = sign) and weight decay λ the weights stay in the box ``|w| <= 1/λ`` (docs/theory.md).

Run: ``python examples/jax_train.py``
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lionk.optax import lion_k


def make_data(rng: np.random.Generator, n: int = 512) -> tuple[jax.Array, jax.Array]:
    x = rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32)
    y = (np.sum(x * x, axis=1) < 0.5).astype(np.float32)  # inside the circle of radius 0.71
    return jnp.asarray(x), jnp.asarray(y)


def init_params(rng: np.random.Generator, hidden: int = 32) -> dict:
    f32 = np.float32
    return {
        "hidden": {"w": jnp.asarray(rng.normal(0.0, 0.5, (2, hidden)).astype(f32)),
                   "b": jnp.zeros(hidden, jnp.float32)},
        "out": {"w": jnp.asarray(rng.normal(0.0, 0.1, (hidden, 1)).astype(f32)),
                "b": jnp.zeros(1, jnp.float32)},
    }


def logits(params: dict, x: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return (h @ params["out"]["w"] + params["out"]["b"])[:, 0]


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits(params, x), y))


def main(steps: int = 600, weight_decay: float = 0.1) -> dict:
    rng = np.random.default_rng(0)  # synthetic data and initial weights (numpy: no compiling)
    x, y = make_data(rng)
    params = init_params(rng)

    opt = optax.chain(
        optax.clip_by_global_norm(1.0),
        lion_k(
            learning_rate=optax.cosine_decay_schedule(3e-2, steps, alpha=0.01),
            weight_decay=weight_decay,
            mask=lambda p: jax.tree.map(lambda a: a.ndim == 2, p),  # no decay on biases
        ),
    )
    state = opt.init(params)

    def train_step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = opt.update(grads, state, params)  # lion_k needs the params
        return (optax.apply_updates(params, updates), state), loss

    @jax.jit
    def train(params, state):  # all steps in one compiled loop
        return jax.lax.scan(train_step, (params, state), None, length=steps)

    (params, state), losses = train(params, state)
    initial_loss, final_loss = float(losses[0]), float(loss_fn(params, x, y))
    accuracy = float(jnp.mean((logits(params, x) > 0) == (y > 0.5)))
    max_weight = max(float(jnp.max(jnp.abs(params[k]["w"]))) for k in ("hidden", "out"))
    print(f"loss {initial_loss:.4f} -> {final_loss:.4f}, accuracy {accuracy:.3f}, "
          f"max |w| {max_weight:.3f} (box radius 1/wd = {1 / weight_decay:g})")
    return {
        "initial_loss": initial_loss,
        "final_loss": final_loss,
        "final_accuracy": accuracy,
        "max_abs_weight": max_weight,
    }


if __name__ == "__main__":
    main()
