"""`vecnn bench`: the vectorization ladder on this machine, as a table, JSON and PNG charts."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "measure the vectorization ladder: scalar loops vs per-sample loops vs whole-batch matrices"
DESCRIPTION = """\
Measure what vectorization buys on this machine.

First this machine's float32 matrix-multiply peak (best of several 4096x4096x4096 products).
Then, for Dense, Conv2D, ReLU, softmax cross-entropy (forward+backward) and one MLP
784-256-128-10 training step with Adam, the same math four ways: scalar Python loops (the
loop twins in vecnn.reference), per-sample loops (vectorized inside one sample), whole-batch
matrices (vecnn) and PyTorch eager (when installed, same thread count). For each: time,
speedup over the loops, GFLOP/s and share of the peak (FLOPs count matrix products only).
Scalar loops run on the first few samples and are scaled to the batch; the table says so.
Last, a batch-size sweep of Dense 784->256 forward+backward shows where BLAS saturates.

examples:
  vecnn bench --quick                       # under a minute
  vecnn bench --json ladder.json --plots plots/
"""


def positive_int(text):
    """An argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def configure(parser):
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats, a smaller sweep and smaller loop slices (under a minute)"
    )
    parser.add_argument(
        "--threads", type=positive_int, metavar="N", help="threads for BLAS and PyTorch (default: all cores)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    parser.add_argument("--plots", metavar="DIR", help="also draw ladder.png and sweep.png into DIR")
    parser.add_argument("--no-torch", action="store_true", help="leave out the PyTorch rung")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # seconds-long run, for tests


def config_from(args):
    from .ladder import Config

    make = Config.tiny if getattr(args, "tiny", False) else Config.quick if args.quick else Config.full
    return make(use_torch=not args.no_torch)


def main(args) -> int:
    from .ladder import run
    from .table import format_report

    report = run(config_from(args), threads=args.threads)
    print(format_report(report), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plots:
        from .charts import write_charts

        for path in write_charts(report, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0
