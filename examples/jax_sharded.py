"""``lionk.step`` under ``jax.jit`` on params sharded over several devices (here: host CPUs).

A least-squares problem with a (256, 64) weight matrix sharded row-wise over a 1-D mesh of 4
devices (``NamedSharding``). The step is the plain pure ``lionk.step`` inside ``jax.jit``:
XLA keeps params and momentum sharded (each device updates its rows; a norm κ with
``scope="global"`` would be reduced across devices). The script checks that the momentum has
the params' sharding and that, on the same inputs, the sharded step equals the step on one
device bit for bit (the gradient of ``A @ W`` is a cross-device sum, so whole trajectories agree
in the ulp tier only).

XLA must be told to expose 4 CPU devices *before* jax is imported; run directly, the script
sets ``XLA_FLAGS`` itself::

    python examples/jax_sharded.py
    XLA_FLAGS="--xla_force_host_platform_device_count=4 --xla_cpu_max_isa=SSE4_2" \\
        python examples/jax_sharded.py        # SSE4_2: no FMA, so bitwise equal to NumPy too

On a machine with accelerators, the same code shards over ``jax.devices()``.
"""

from __future__ import annotations

import os

DEVICES = 4

if __name__ == "__main__" and "--xla_force_host_platform_device_count" not in os.environ.get(
        "XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={DEVICES}").strip()


def main(steps: int = 200, lr: float = 1e-2, weight_decay: float = 0.5) -> dict:
    """Train sharded and unsharded; return losses, shardings and the largest difference."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import lionk

    devices = jax.devices()[:DEVICES]
    mesh = Mesh(np.array(devices), ("rows",))
    rows = NamedSharding(mesh, PartitionSpec("rows", None))

    rng = np.random.default_rng(0)
    A = jnp.asarray(rng.standard_normal((512, 256)), jnp.float32)
    W_true = jnp.asarray(rng.uniform(-1.5, 1.5, (256, 64)), jnp.float32)
    B = A @ W_true

    def loss(W):
        return jnp.mean((A @ W - B) ** 2)

    @jax.jit
    def train_step(W, state):
        g = jax.grad(loss)(W)
        return lionk.step(W, g, state, lr=lr, weight_decay=weight_decay, kappa="sign")

    def run(W):
        state = lionk.init(W)
        first = float(loss(W))
        for _ in range(steps):
            W, state = train_step(W, state)
            # Wait for each step: with more simulated host devices than cores, XLA:CPU can
            # deadlock when several steps' cross-device reductions are in flight at once
            # (measured on a 2-core machine with 4 devices). Real accelerators do not need it.
            W.block_until_ready()
        return W, state, first

    W0 = jnp.zeros((256, 64), jnp.float32)
    Ws, sts, first = run(jax.device_put(W0, rows))
    same_layout = bool(Ws.sharding.is_equivalent_to(rows, 2)
                       and sts.momentum.sharding.is_equivalent_to(rows, 2))

    # The step itself, given the same inputs, sharded and on one device. (The *gradient* is
    # not bitwise: A @ W contracts over the sharded rows, so XLA sums per-device partial
    # products; free-running trajectories therefore differ in the ulp tier, as on any two
    # reduction orders.)
    g = jax.grad(loss)(Ws)
    step = jax.jit(lambda W, g, st: lionk.step(W, g, st, lr=lr, weight_decay=weight_decay))
    host = [np.asarray(a) for a in (Ws, g, sts.momentum)]
    out_s = step(*[jax.device_put(a, rows) for a in host[:2]],
                 lionk.State(0, jax.device_put(host[2], rows), 0))
    out_u = step(*[jnp.asarray(a) for a in host[:2]], lionk.State(0, jnp.asarray(host[2]), 0))
    step_bitwise = all(np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))
                       for a, b in ((out_s[0], out_u[0]), (out_s[1].momentum, out_u[1].momentum)))
    # with wd = 0.5 Lion solves min loss s.t. |W| <= 1/wd = 2, which contains W_true
    result = {"devices": len(devices), "first_loss": first, "final_loss": float(loss(Ws)),
              "sharding": str(Ws.sharding.spec), "momentum_sharding": str(sts.momentum.sharding.spec),
              "momentum_has_params_sharding": same_layout, "step_bitwise_vs_unsharded": step_bitwise,
              "max_abs_weight": float(jnp.max(jnp.abs(Ws)))}
    print(f"{len(devices)} devices, params {result['sharding']}, momentum "
          f"{result['momentum_sharding']}: loss {first:.3f} -> {result['final_loss']:.5f}; "
          f"sharded step == unsharded step bit for bit: {step_bitwise}; "
          f"max |W| = {result['max_abs_weight']:.3f} (<= 1/wd = {1 / weight_decay:g})")
    return result


if __name__ == "__main__":
    main()
