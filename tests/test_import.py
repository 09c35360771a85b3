"""``import lionk`` must not import any heavy backend (torch, jax, cupy)."""

from __future__ import annotations

import subprocess
import sys


def test_import_lionk_imports_no_backend() -> None:
    """A fresh interpreter that imports lionk (and all its public submodules) has none of
    torch, jax or cupy in ``sys.modules``: backends are looked up only when their arrays arrive."""
    code = (
        "import lionk, lionk.kappa, lionk.lyapunov, lionk.tree, sys; "
        "bad = {'torch', 'jax', 'cupy'} & set(sys.modules); "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_numpy_step_without_backends_loaded() -> None:
    """A numpy step in a fresh interpreter works and still loads no backend (the pure-python
    tree code path, used when jax is absent, is exercised here: in the pytest process jax is
    always imported and lionk then flattens trees with jax.tree_util)."""
    code = (
        "import numpy as np, lionk, sys\n"
        "p = {'b': [np.ones(2, np.float32)], 'a': (np.zeros(1, np.float32), None)}\n"
        "g = {'b': [np.full(2, 0.5, np.float32)], 'a': (np.full(1, -1.0, np.float32), None)}\n"
        "p2, s = lionk.step(p, g, lionk.init(p), lr=0.25)\n"
        "assert type(p2['b']) is list and type(p2['a']) is tuple and p2['a'][1] is None\n"
        "assert p2['b'][0].tolist() == [0.75, 0.75] and p2['a'][0].tolist() == [0.25], p2\n"
        "assert s.count == 1\n"
        "try:\n"
        "    lionk.step(p, {'b': [np.ones(3, np.float32)], 'a': (np.zeros(1, np.float32), None)}, s)\n"
        "except ValueError as e:\n"
        "    assert \"grads['b'][0]\" in str(e) and '(3,)' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
        "assert not {'torch', 'jax', 'cupy'} & set(sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
