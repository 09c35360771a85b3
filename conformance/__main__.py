"""``python -m conformance``: run the matrix, print the report, exit non-zero on any failure."""

from __future__ import annotations

import argparse
import json
import sys

from . import report as report_mod
from .backends import KNOWN_BACKENDS
from .runner import DEFAULT_KAPPAS, run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    ap.add_argument("--backends", nargs="+", choices=list(KNOWN_BACKENDS), default=None,
                    help="backends to run (default: every one this machine has)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"],
                    choices=["float32", "float64"])
    ap.add_argument("--kappas", nargs="+", default=DEFAULT_KAPPAS,
                    help="kappa names, norm kappa as name:global for the global scope")
    ap.add_argument("--steps", type=int, default=200, help="trajectory length (>= 200 for the report)")
    ap.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                    help="only backends on this kind of device (numpy always runs as the reference)")
    ap.add_argument("--report", metavar="DIR", default=None, help="write report.md and report.json here")
    ap.add_argument("--json-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--quiet", action="store_true", help="no per-cell progress lines")
    ap.add_argument("--distributed", action=argparse.BooleanOptionalAction, default=None,
                    help="the distributed section (DDP, sign vote, FSDP2, JAX sharding); "
                         "default: on when --backends is not given")
    args = ap.parse_args(argv)
    distributed = args.backends is None if args.distributed is None else args.distributed
    rep = run(args.backends, args.dtypes, args.kappas, args.steps, args.device,
              progress=not args.quiet, distributed=distributed and args.device != "cuda")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(rep, fh, default=str)
    if args.report:
        report_mod.write(rep, args.report)
    if not args.json_out:
        print(report_mod.render(rep))
    return 0 if rep["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
