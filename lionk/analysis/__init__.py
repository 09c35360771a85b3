"""Analysis: the Lyapunov certificate (:mod:`lionk.analysis.lyapunov`), constrained minimisation
(:mod:`lionk.analysis.minimize`) and plots (:mod:`lionk.analysis.plot`).

Built on :mod:`lionk.core` and never imported by it.
"""
