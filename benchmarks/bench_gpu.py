"""vecnn with model.to("gpu") vs PyTorch eager on the same GPU (MLP and CNN, batches 128 and 1024), plus a
CPU-vs-GPU weight check on the digits MLP; one run, within a time budget (for a lent GPU machine).

    python benchmarks/bench_gpu.py --json gpu.json         # on a machine with an NVIDIA GPU and CuPy
    python benchmarks/bench_gpu.py --device cpu --limit 2048 --epochs 1   # the same on the CPU
    options: --epochs 3 --limit N --synthetic --budget 200 --check-epochs 20 --networks mlp,cnn
             --batches 128,1024 --tf32 --json PATH

Without a GPU (and --device gpu) it exits with status 2, saying what is missing.
"""

import sys
from pathlib import Path

try:
    import vecnn  # noqa: F401
except ImportError:  # run from a checkout that is not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vecnn.bench.gpu import main

if __name__ == "__main__":
    sys.exit(main())
