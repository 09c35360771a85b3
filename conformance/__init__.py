"""lionk's conformance suite: identical trajectories and Lyapunov monotonicity across backends.

Run ``python -m conformance --help``.
"""
