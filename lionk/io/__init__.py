"""Input/output: portable checkpoints (:mod:`lionk.io.checkpoint`). Depends on :mod:`lionk.core`."""
