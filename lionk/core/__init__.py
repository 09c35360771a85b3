"""Core: the math and its validation, on NumPy and array-api-compat only.

* :mod:`lionk.core.array_api` — the array-API glue: the one module that knows about backends;
* :mod:`lionk.core.trees` — flattening nested containers of arrays into leaves with paths;
* :mod:`lionk.core.kappa` — the κ registry: each convex K with ∇K, K, K* and its facts;
* :mod:`lionk.core.validation` — every hyper-parameter, choice, counter and dtype check, written
  once and called by every front-end;
* :mod:`lionk.core.step` — the Lion-κ step, written once (:func:`update_leaves`), and the
  pure ``init``/``step``.

Nothing in this package imports torch, jax, cupy or any other layer of lionk.
"""
