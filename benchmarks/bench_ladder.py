"""The vectorization ladder (scalar loops, per-sample loops, whole batch, PyTorch) and the batch sweep.

    python benchmarks/bench_ladder.py [--quick] [--threads 2] [--json ladder.json] [--plots plots/]

The same code and options as ``vecnn bench``.
"""

import argparse
import sys

from vecnn.bench import cli

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=cli.DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.configure(parser)
    sys.exit(cli.main(parser.parse_args()))
