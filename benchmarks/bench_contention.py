"""Two trainings at once on one machine: samples/s of each against one alone, and the share kept.

env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_contention.py
options: --contenders vecnn,vecnn-fixed,pytorch,numpy --seconds 10 --repeats 2 --synthetic --json out.json
(vecnn-fixed: vecnn with its thread governor off, as before it; target: each of two keeps >= 40%)
"""

from vecnn.bench.contention import main

if __name__ == "__main__":
    main()
