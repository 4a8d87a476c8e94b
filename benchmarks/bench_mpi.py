"""Data-parallel training over MPI: samples/s with 1 and 2 ranks here, one Allreduce of the flat
gradients timed on its own, compute per step at batch B, B/8, B/64, and the predicted weak and
strong scaling at 8 and 64 nodes on 10 and 100 Gbit/s networks (ring all-reduce).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_mpi.py --json mpi.json
    options: --nets mlp,cnn --batch-size 128 --epochs 3 --limit 12800 --repeats 2 --reduces 200 --synthetic

Needs the mpi extra (pip install 'vecnn[mpi]': mpi4py and Open MPI's mpiexec).
"""

import sys
from pathlib import Path

try:
    import vecnn  # noqa: F401
except ImportError:  # run from a checkout that is not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vecnn.bench.mpi import main

if __name__ == "__main__":
    sys.exit(main())
