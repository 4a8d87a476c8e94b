"""Head-to-head: training a small CNN on the CPU with vecnn and every CPU peer, each in its own process.

The network (issue 4): conv3x3(1->32)-ReLU-maxpool2-conv3x3(32->64)-ReLU-maxpool2-
dense(1600->128)-ReLU-dense(10), batch 128, Adam lr 1e-3, Fashion-MNIST (or random data of the
same shape with --synthetic) already in memory on every side, no data loader, float32.

Contenders (``vecnn.bench.peers``; default all, each optional but vecnn):

- ``vecnn``: ``model.fit(..., epochs=1)`` per epoch;
- ``pytorch``: PyTorch eager (``torch`` also accepted);
- ``torch.compile``: the same model and its Adam step through ``torch.compile`` (mode default;
  needs a C++ compiler, ``$CXX`` or g++);
- ``jax``: a ``jax.jit``-ed step (loss, grad, optax Adam update), channels-last;
- ``keras``: Keras 3 ``model.fit`` (TensorFlow backend in the documented environment), channels-last.

Each contender runs in its own worker process, started with its own environment's interpreter
(``--jax-python``, ``--keras-python``, ``--torch-python``; default this one), with the same
thread count; one whose environment or package is missing, or whose compilation fails, is
skipped with the reason. Each warms up on a few batches (the compiled ones: the first call of
each batch shape, reported apart as compile seconds); then whole epochs alternate, at least 3
each for a meaningful median. Reported per contender: median and best epoch, samples per
second, vecnn's speed-up (ratio of median epoch times), test accuracy after the timed epochs,
compile seconds, the peak resident-set increase during an epoch, and the BLAS it ran on
(threadpoolctl) besides the framework's own kernels.

    python benchmarks/bench_cnn.py                  # Fashion-MNIST, 3 epochs each
    python benchmarks/bench_cnn.py --quick          # 12,800-sample subset
    python benchmarks/bench_cnn.py --synthetic --epochs 5 --json out.json
    python benchmarks/bench_cnn.py --jax-python /work/envs/jax/bin/python --keras-python /work/envs/keras/bin/python
    python benchmarks/bench_cnn.py --contenders vecnn,torch --limit 512 --epochs 1   # a smoke run

Environments for the peers outside this one (any Python with NumPy; threadpoolctl for the BLAS line):
    python3 -m venv ENV_JAX && ENV_JAX/bin/pip install jax jaxlib optax numpy threadpoolctl
    python3 -m venv ENV_TF && ENV_TF/bin/pip install tensorflow keras numpy threadpoolctl

The machine is shared and has 2 cores: other work running at the same time slows both sides,
usually not equally; alternating epochs and taking medians limits, but does not remove, that.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from vecnn.bench import peers
from vecnn.bench.common import machine

CONTENDERS = ("vecnn", "pytorch", "torch.compile", "jax", "keras")


def load_data(args):
    if not args.synthetic:
        try:
            import vecnn as vn

            X, y, Xt, yt = vn.data.load("fashion-mnist")
            source = "fashion-mnist"
        except (ValueError, OSError) as e:
            print(f"Fashion-MNIST not available ({e}); using --synthetic data", file=sys.stderr)
            args.synthetic = True
    if args.synthetic:
        rng = np.random.default_rng(args.seed)
        X = rng.random((60000, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, 60000)
        Xt = rng.random((10000, 1, 28, 28), dtype=np.float32)
        yt = rng.integers(0, 10, 10000)
        source = "synthetic (random)"
    if args.quick:
        X, y, Xt, yt = X[:12800], y[:12800], Xt[:2000], yt[:2000]
    if args.limit:
        X, y, Xt, yt = X[: args.limit], y[: args.limit], Xt[: args.limit], yt[: args.limit]
    return (
        np.ascontiguousarray(X, np.float32),
        y.astype(np.int64),
        np.ascontiguousarray(Xt, np.float32),
        yt.astype(np.int64),
        source,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per contender (3 or more for a median)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup-batches", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a 12,800-sample training subset")
    p.add_argument("--limit", type=int, help="the first N training (and at most N test) samples only")
    p.add_argument("--synthetic", action="store_true", help="random data of Fashion-MNIST's shape")
    p.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, of {', '.join(CONTENDERS)} (default: all; torch = pytorch)",
    )
    peers.add_python_options(p)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    for opt in ("epochs", "threads", "batch_size", "warmup_batches"):
        if getattr(args, opt) < 1:
            p.error(f"--{opt.replace('_', '-')}: at least 1, got {getattr(args, opt)}")
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit: at least 1, got {args.limit}")
    try:
        names = list(dict.fromkeys(peers.canonical(n) for n in args.contenders.split(",") if n.strip()))
    except ValueError as e:
        p.error(str(e))
    if not names:
        p.error("--contenders: name at least one contender")

    X, y, Xt, yt, source = load_data(args)
    m = machine()
    print(
        f"data: {source}, {len(X)} training / {len(Xt)} test samples; batch {args.batch_size}, "
        f"Adam lr {args.lr}, {args.threads} thread(s), {args.epochs} alternating epochs each\n"
        f"machine: {m['cpu']}, {m['cores']} cores; this process's BLAS: {peers.blas_text(m['blas'])}",
        flush=True,
    )
    if args.epochs < 3:
        print("(fewer than 3 epochs each: a smoke run, not a meaningful median)", flush=True)
    spec = {
        "net": "cnn",
        "n_in": 784,
        "hidden": [],
        "n_out": 10,
        "optimizer": "adam",
        "lr": args.lr,
        "momentum": 0.9,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "seed": args.seed,
        "warmup_batches": args.warmup_batches,
    }
    results, skipped = peers.run_peers(
        names, spec, (X, y, Xt, yt), args.epochs, peers.pythons_from_args(args), echo=lambda s: print(s, flush=True)
    )
    peers.summarize(results, len(X))
    print()
    print(peers.format_table(results, skipped))
    for name, target in (("pytorch", ">= 1.5x"), ("torch.compile", None), ("jax", None), ("keras", "> 1x")):
        if "vecnn" in results and name in results:
            r = results[name]
            print(
                f"vecnn / {name}: {r['vecnn_speedup']:.2f}x (ratio of median epoch times), "
                f"{r['vecnn_speedup_best']:.2f}x (of best epochs)" + (f"; target {target}" if target else "")
            )
    report: dict = {"contenders": results, "skipped": skipped}
    if "vecnn" in results:
        for n in results:
            if n != "vecnn":
                key = "speedup_vs_" + {"pytorch": "torch", "torch.compile": "torch_compile"}.get(n, n)
                report[key] = results[n]["vecnn_speedup"]
        if "pytorch" in results:
            report["speedup_vs_torch_best"] = results["pytorch"]["vecnn_speedup_best"]
    report["config"] = {k: v for k, v in vars(args).items()}
    report["config"]["data"] = source
    report["machine"] = m
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
