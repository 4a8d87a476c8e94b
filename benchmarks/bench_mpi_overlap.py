"""Does overlapping the gradient reduction with the backward pass pay here? Measured, 2 ranks.

PyTorch DDP starts a non-blocking all-reduce of each bucket of gradients as soon as the backward
pass has produced it, so the reduction of the last layers runs while the first layers' gradients
are computed. vecnn's distributed step (``vecnn.distributed.MPIDataParallel.step``) runs the
whole backward pass, then one blocking ``Allreduce`` of the flat gradient buffer. This script
times both in one 2-rank job, blocks of steps alternating, on the same model and batches:

* **blocking**: ``MPIDataParallel.step`` as ``fit`` runs it;
* **overlapped**: the backward pass one step of the model's plan at a time; after each step
  that has parameters, its slice of the flat buffer (contiguous: the layers' gradients are views
  into it) is scaled by the rank's share and handed to ``Iallreduce``, with a ``Testall`` after
  every step to let Open MPI progress the requests (it progresses them only inside MPI calls);
  ``Waitall`` at the end.

Both then take the same optimizer step. It prints the median seconds per step of each, their
ratio, and the time the blocking step spends in its ``Allreduce`` (the most overlap could hide).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_mpi_overlap.py
    options: --net cnn|mlp --batch-size 128 --steps 10 --rounds 8

Needs the mpi extra (pip install 'vecnn[mpi]': mpi4py and Open MPI's mpiexec).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    import vecnn  # noqa: F401
except ImportError:  # run from a checkout that is not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def overlapped_step(dp, xs, ys, m):
    """``dp.step(xs, ys, m)`` with one ``Iallreduce`` per step of the backward pass that has
    parameters, started as soon as that step has written its gradients."""
    model, comm = dp.model, dp.comm
    MPI, grads = comm.MPI, model.flat_grads
    share = len(xs) / m
    # each plan step's slice of the flat gradient buffer (its layers' parameters lie together)
    spans: dict[int, tuple[int, int]] = {}
    for layer, _, start, shape in model._slots:
        lo, hi = spans.get(id(layer), (start, start))
        spans[id(layer)] = (min(lo, start), max(hi, start + math.prod(shape)))
    out = model.forward(xs, training=True)
    value = model.loss.forward(out, ys)
    g = model.loss.backward()
    requests = []
    for layers, _, backward in reversed(model._plan()):
        g = backward(g)
        mine = [spans[id(l)] for l in layers if id(l) in spans]
        if mine:
            part = grads[min(lo for lo, _ in mine) : max(hi for _, hi in mine)]
            part *= share
            requests.append(comm.comm.Iallreduce(MPI.IN_PLACE, part, op=MPI.SUM))
        if requests:
            MPI.Request.Testall(requests)
    MPI.Request.Waitall(requests)
    return value


def job(args) -> dict:
    from threadpoolctl import threadpool_limits

    import vecnn as vn
    from vecnn import distributed, presets
    from vecnn.bench.mpi import allreduce_seconds

    comm = distributed.world()
    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    shape = (1, 28, 28)
    X = rng.standard_normal((n, *shape), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model = presets.build(args.net, shape, 10, seed=0)
    model.loss = vn.losses.get("cross_entropy")
    opt = vn.optim.Adam(lr=1e-3)
    dp = distributed.MPIDataParallel(model, comm)
    threads = comm.threads_per_rank()
    times = {"blocking": [], "overlapped": []}
    with threadpool_limits(threads, user_api="blas"), dp:
        lo, hi = dp.rows(args.batch_size)  # both give the same reduced gradient (checked, printed)
        rngs = [l.rng for l in model.layers if isinstance(getattr(l, "rng", None), np.random.Generator)]
        states = [r.bit_generator.state for r in rngs]  # the same dropout masks for both
        dp.step(X[lo:hi], y[lo:hi], args.batch_size)
        blocking = model.flat_grads.copy()
        for r, state in zip(rngs, states):
            r.bit_generator.state = state
        overlapped_step(dp, X[lo:hi], y[lo:hi], args.batch_size)
        same = float(np.abs(model.flat_grads - blocking).max())
        for rnd in range(args.rounds + 1):  # the first round warms up
            for kind in ("blocking", "overlapped") if rnd % 2 == 0 else ("overlapped", "blocking"):
                comm.comm.Barrier()
                t = time.perf_counter()
                for s in range(args.steps):
                    lo, hi = dp.rows(args.batch_size)
                    rows = slice(s * args.batch_size + lo, s * args.batch_size + hi)
                    if kind == "blocking":
                        dp.step(X[rows], y[rows], args.batch_size)
                    else:
                        overlapped_step(dp, X[rows], y[rows], args.batch_size)
                    opt.step(model.flat_params, model.flat_grads)
                if rnd:
                    times[kind].append((time.perf_counter() - t) / args.steps)
    reduce_s = allreduce_seconds(comm, model.flat_params.size, 50)
    return {
        "rank": comm.rank, "threads": threads, "parameters": int(model.flat_params.size),
        "blocking_s": statistics.median(times["blocking"]), "overlapped_s": statistics.median(times["overlapped"]),
        "blocking_all": times["blocking"], "overlapped_all": times["overlapped"],
        "allreduce_s": reduce_s, "gradient_difference": same,
    }  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", default="cnn", choices=("cnn", "mlp"))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--rounds", type=int, default=8, help="timed blocks of each kind")
    p.add_argument("--job", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.job:  # inside mpiexec: every rank measures, rank 0 writes
        result = job(args)
        if result["rank"] == 0:
            Path(args.job).write_text(json.dumps(result))
        return 0
    from vecnn.bench.common import machine
    from vecnn.bench.mpi import launch

    argv = [__file__, "--net", args.net, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
            "--rounds", str(args.rounds)]  # fmt: skip
    r = launch(2, argv, "bench_mpi_overlap")
    info = machine()
    print(f"machine: {info}")
    print(f"{args.net} preset, {r['parameters']:,} parameters, global batch {args.batch_size}, 2 ranks x "
          f"{r['threads']} BLAS thread(s), {args.rounds} blocks of {args.steps} steps each, alternating")  # fmt: skip
    b, o = r["blocking_s"], r["overlapped_s"]
    print(f"  blocking Allreduce after backward: {b * 1e3:.2f} ms/step")
    print(f"  Iallreduce per layer step:         {o * 1e3:.2f} ms/step  (blocking/overlapped {b / o:.3f})")
    a = r["allreduce_s"]
    print(f"  one Allreduce of the flat buffer:  {a * 1e6:.0f} us ({a / b:.1%} of a step)")
    print(f"  the two steps' reduced gradients differ by at most {r['gradient_difference']:.3g}")
    ratios = [x / z for x, z in zip(r["blocking_all"], r["overlapped_all"])]
    print(f"  per-block ratios: {', '.join(f'{x:.3f}' for x in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
