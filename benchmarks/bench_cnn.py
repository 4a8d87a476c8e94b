"""Head-to-head: training a small CNN with vecnn, PyTorch eager and (optionally) Keras/TensorFlow on the CPU.

The network (issue 4): conv3x3(1->32)-ReLU-maxpool2-conv3x3(32->64)-ReLU-maxpool2-
dense(1600->128)-ReLU-dense(10), batch 128, Adam lr 1e-3, Fashion-MNIST (or random data of the
same shape with --synthetic) already in memory on both sides, no data loader.

Each contender runs in its own worker process (so one's thread pools and memory never touch the
other's) with the same thread count. Each warms up on a few batches; then whole epochs alternate,
vecnn's through ``model.fit(..., epochs=1)``, at least 3 each. Reported: the ratio of median
epoch times, samples per second, test accuracy after the timed epochs, and the peak resident-set
increase during an epoch (the kernel's high-water mark, reset before each epoch).

    python benchmarks/bench_cnn.py                  # Fashion-MNIST, 3 epochs each
    python benchmarks/bench_cnn.py --quick          # 12,800-sample subset
    python benchmarks/bench_cnn.py --synthetic --epochs 5 --json out.json
    python benchmarks/bench_cnn.py --contenders vecnn,torch,keras --keras-python /path/to/tf-venv/bin/python

The machine is shared and has 2 cores: other work running at the same time slows both sides,
usually not equally; alternating epochs and taking medians limits, but does not remove, that.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


# -- memory ------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024


def rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return (kib or 0) / 1024


# -- the contenders ----------------------------------------------------------------------------
class VecnnRunner:
    name = "vecnn"

    def __init__(self, threads, batch_size, lr, seed):
        import vecnn as vn
        from vecnn import layers as L

        vn.set_num_threads(threads)
        self.vn, self.batch_size = vn, batch_size
        self.model = vn.Sequential(
            [
                L.Conv2D(1, 32, 3),
                L.ReLU(),
                L.MaxPool2D(2),
                L.Conv2D(32, 64, 3),
                L.ReLU(),
                L.MaxPool2D(2),
                L.Flatten(),
                L.Dense(1600, 128),
                L.ReLU(),
                L.Dense(128, 10),
            ],
            seed=seed,
        )
        self.optimizer = vn.optim.Adam(lr=lr)
        self.seed = seed

    def epoch(self, X, y):
        # the same optimizer object every time: its state carries over between fit calls
        self.model.fit(
            X, y, loss="cross_entropy", optimizer=self.optimizer, epochs=1, batch_size=self.batch_size, verbose=0
        )

    def accuracy(self, X, y):
        return float(self.model.evaluate(X, y)["accuracy"])


class TorchRunner:
    name = "torch"

    def __init__(self, threads, batch_size, lr, seed):
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        nn = torch.nn
        self.torch, self.batch_size = torch, batch_size
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(1600, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.loss = nn.CrossEntropyLoss()
        self.gen = torch.Generator().manual_seed(seed)
        self._data = None

    def _tensors(self, X, y):
        if self._data is None or self._data[0] is not X:
            self._data = (X, self.torch.from_numpy(X), self.torch.from_numpy(y))
        return self._data[1:]

    def epoch(self, X, y):
        torch = self.torch
        Xt, yt = self._tensors(X, y)
        self.net.train()
        order = torch.randperm(len(Xt), generator=self.gen)
        for start in range(0, len(Xt), self.batch_size):
            idx = order[start : start + self.batch_size]
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.net(Xt[idx]), yt[idx]).backward()
            self.opt.step()

    def accuracy(self, X, y):
        torch = self.torch
        self.net.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(X), 1024):
                out = self.net(torch.from_numpy(X[start : start + 1024]))
                correct += int((out.argmax(1).numpy() == y[start : start + 1024]).sum())
        return correct / len(X)


class KerasRunner:
    """Keras 3 on TensorFlow, the same network in its native channels-last layout (the NCHW
    arrays are transposed once, outside the timing), trained with ``model.fit`` on in-memory
    arrays, as Keras users do."""

    name = "keras"

    def __init__(self, threads, batch_size, lr, seed):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf.keras.utils.set_random_seed(seed)
        k = tf.keras
        self.model = k.Sequential(
            [
                k.Input((28, 28, 1)),
                k.layers.Conv2D(32, 3, activation="relu"),
                k.layers.MaxPooling2D(2),
                k.layers.Conv2D(64, 3, activation="relu"),
                k.layers.MaxPooling2D(2),
                k.layers.Flatten(),
                k.layers.Dense(128, activation="relu"),
                k.layers.Dense(10),
            ]
        )
        self.model.compile(
            optimizer=k.optimizers.Adam(lr),
            loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        self.batch_size = batch_size
        self._nhwc = {}

    def _data(self, X):
        if id(X) not in self._nhwc:
            self._nhwc[id(X)] = (X, np.ascontiguousarray(X.transpose(0, 2, 3, 1)))
        return self._nhwc[id(X)][1]

    def epoch(self, X, y):
        self.model.fit(self._data(X), y, batch_size=self.batch_size, epochs=1, shuffle=True, verbose=0)

    def accuracy(self, X, y):
        return float(self.model.evaluate(self._data(X), y, batch_size=1024, verbose=0)[1])


RUNNERS = {"vecnn": VecnnRunner, "torch": TorchRunner, "keras": KerasRunner}


def worker(args):
    """Serve one contender: a line ``epoch`` trains one epoch, ``accuracy`` evaluates, ``quit`` ends."""
    data = np.load(args.data)
    X, y, Xt, yt = (np.ascontiguousarray(data[k]) for k in ("X", "y", "Xt", "yt"))
    base = rss_mib()
    runner = RUNNERS[args.worker](args.threads, args.batch_size, args.lr, args.seed)
    n_warm = min(len(X), args.batch_size * args.warmup_batches)
    runner.epoch(X[:n_warm], y[:n_warm])  # warm-up: kernels, buffers, caches
    print(json.dumps({"ready": True, "rss_data_mib": base}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "epoch":
            reset_peak()
            before = rss_mib()
            t = time.perf_counter()
            runner.epoch(X, y)
            dt = time.perf_counter() - t
            print(json.dumps({"seconds": dt, "peak_increase_mib": peak_rss_mib() - before}), flush=True)
        elif cmd == "accuracy":
            print(json.dumps({"accuracy": runner.accuracy(Xt, yt)}), flush=True)
        elif cmd == "quit":
            break


class Worker:
    def __init__(self, name, args, data_path):
        python = args.keras_python if name == "keras" and args.keras_python else sys.executable
        cmd = [
            python,
            __file__,
            "--worker",
            name,
            "--data",
            str(data_path),
            "--threads",
            str(args.threads),
            "--batch-size",
            str(args.batch_size),
            "--lr",
            str(args.lr),
            "--seed",
            str(args.seed),
            "--warmup-batches",
            str(args.warmup_batches),
        ]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(args.threads),
            "OPENBLAS_NUM_THREADS": str(args.threads),
            "MKL_NUM_THREADS": str(args.threads),
            "NUMBA_NUM_THREADS": str(args.threads),
        }
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self._read()

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker died (exit code {self.proc.wait()})")
        return json.loads(line)

    def ask(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=60)


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
    return (
        np.ascontiguousarray(X, np.float32),
        y.astype(np.int64),
        np.ascontiguousarray(Xt, np.float32),
        yt.astype(np.int64),
        source,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per contender (>= 3)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup-batches", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a 12,800-sample training subset")
    p.add_argument("--synthetic", action="store_true", help="random data of Fashion-MNIST's shape")
    p.add_argument(
        "--contenders", default="vecnn,torch", help="comma-separated, of vecnn, torch, keras (default: vecnn,torch)"
    )
    p.add_argument(
        "--keras-python",
        metavar="PYTHON",
        help="interpreter with TensorFlow for the keras contender (default: this one)",
    )
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.epochs < 3:
        p.error("--epochs: at least 3 epochs per contender give a meaningful median")

    X, y, Xt, yt, source = load_data(args)
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    print(
        f"data: {source}, {len(X)} training / {len(Xt)} test samples; batch {args.batch_size}, "
        f"Adam lr {args.lr}, {args.threads} thread(s), {args.epochs} alternating epochs each",
        flush=True,
    )
    results = {n: {"seconds": [], "peak_increase_mib": []} for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "data.npz"
        np.savez(data_path, X=X, y=y, Xt=Xt, yt=yt)
        del X, Xt
        workers = [Worker(n, args, data_path) for n in names]
        try:
            for epoch in range(args.epochs):
                order = workers if epoch % 2 == 0 else workers[::-1]  # alternate who goes first
                for w in order:
                    r = w.ask("epoch")
                    results[w.name]["seconds"].append(r["seconds"])
                    results[w.name]["peak_increase_mib"].append(r["peak_increase_mib"])
                    print(
                        f"  epoch {epoch + 1} {w.name:6s} {r['seconds']:7.2f} s  "
                        f"{len(y) / r['seconds']:8.0f} samples/s",
                        flush=True,
                    )
            for w in workers:
                results[w.name]["accuracy"] = w.ask("accuracy")["accuracy"]
        finally:
            for w in workers:
                w.close()

    print(f"\n{'':8s}{'median epoch':>14s}{'best epoch':>12s}{'samples/s':>12s}{'test acc':>10s}{'peak RSS +':>12s}")
    for n in names:
        r = results[n]
        r["median_seconds"] = statistics.median(r["seconds"])
        r["best_seconds"] = min(r["seconds"])
        r["samples_per_second"] = len(y) / r["median_seconds"]
        r["peak_increase_mib_max"] = max(r["peak_increase_mib"])
        print(
            f"{n:8s}{r['median_seconds']:12.2f} s{r['best_seconds']:10.2f} s{r['samples_per_second']:12.0f}"
            f"{r['accuracy']:10.4f}{r['peak_increase_mib_max']:9.0f} MiB"
        )
    if "vecnn" in results and "keras" in results:
        ratio = results["keras"]["median_seconds"] / results["vecnn"]["median_seconds"]
        results["speedup_vs_keras"] = ratio
        print(f"vecnn / Keras-TensorFlow throughput, ratio of median epoch times: {ratio:.2f}x (target > 1x)")
    if "vecnn" in results and "torch" in results:
        ratio = results["torch"]["median_seconds"] / results["vecnn"]["median_seconds"]
        best = results["torch"]["best_seconds"] / results["vecnn"]["best_seconds"]
        results["speedup_vs_torch"], results["speedup_vs_torch_best"] = ratio, best
        print(
            f"\nvecnn / PyTorch eager throughput, ratio of median epoch times: {ratio:.2f}x "
            f"(target >= 1.5x); of best epoch times: {best:.2f}x"
        )
    results["config"] = {k: v for k, v in vars(args).items() if k not in ("worker", "data")}
    results["config"]["data"] = source
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
