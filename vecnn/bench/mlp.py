"""Head-to-head MLP training: vecnn vs PyTorch eager vs scikit-learn's MLPClassifier.

Two configurations (``CONFIGS``):

- ``mlp``: 784-256-128-10 (ReLU), batch 128, Adam lr 1e-3: the everyday network.
- ``wide``: 784-2048-2048-10, batch 512, SGD with momentum 0.9: big enough that the matrix
  products dominate, reported as a share of this machine's measured matrix-multiply peak
  (FLOPs counted as 6 x parameters x samples, the usual forward + backward estimate).

Same network, optimizer and thread count on every side, data already in memory, no data
loader. Each contender warms up on a few batches; then whole epochs alternate between
contenders (vecnn's through ``model.fit(..., epochs=1)``, input checks included) and the
medians are compared. Peak memory is measured separately, each contender in its own process,
as the resident-set increase during one training epoch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np

from .common import Timer, load_fashion, machine, median, peak_rss_bytes, publish, reset_peak_rss, rss_bytes

CONFIGS: dict[str, dict[str, Any]] = {
    "mlp": {
        "hidden": (256, 128),
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 1e-3,
        "contenders": ("vecnn", "pytorch", "scikit-learn"),
    },
    "wide": {
        "hidden": (2048, 2048),
        "batch_size": 512,
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "contenders": ("vecnn", "pytorch"),
    },
}


class VecnnMLP:
    name = "vecnn"

    def __init__(self, X, y, cfg, seed=0):
        import vecnn as vn
        from vecnn import layers as L

        hidden, batch_size = cfg["hidden"], cfg["batch_size"]

        sizes = [X.shape[1], *hidden]
        layers = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [L.Dense(a, b), L.ReLU()]
        layers.append(L.Dense(sizes[-1], int(y.max()) + 1))
        self.model = vn.Sequential(layers, seed=seed)
        self.X, self.y, self.bs = X, y, batch_size
        self.opt = (
            vn.optim.Adam(lr=cfg["lr"])
            if cfg["optimizer"] == "adam"
            else vn.optim.SGD(lr=cfg["lr"], momentum=cfg["momentum"])
        )

    def warmup(self, batches=5):
        n = min(batches * self.bs, len(self.X))
        self.model.fit(self.X[:n], self.y[:n], optimizer=self.opt, epochs=1, batch_size=self.bs, verbose=0)

    def epoch(self):
        self.model.fit(self.X, self.y, epochs=1, batch_size=self.bs, verbose=0)

    def accuracy(self, X, y):
        return float(np.mean(self.model.predict(X).argmax(1) == y))


class TorchMLP:
    name = "pytorch"

    def __init__(self, X, y, cfg, seed=0, threads=None):
        import torch

        hidden, batch_size, lr = cfg["hidden"], cfg["batch_size"], cfg["lr"]
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        sizes = [X.shape[1], *hidden]
        mods = []
        for a, b in zip(sizes, sizes[1:]):
            mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        mods.append(torch.nn.Linear(sizes[-1], int(y.max()) + 1))
        self.torch = torch
        self.net = torch.nn.Sequential(*mods)
        self.opt = (
            torch.optim.Adam(self.net.parameters(), lr=lr)
            if cfg["optimizer"] == "adam"
            else torch.optim.SGD(self.net.parameters(), lr=lr, momentum=cfg["momentum"])
        )
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
        self.bs = batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def _batches(self, n):
        torch, F = self.torch, self.torch.nn.functional
        perm = torch.randperm(n, generator=self.gen)
        for i in range(0, n, self.bs):
            idx = perm[i : i + self.bs]
            xb, yb = self.X[idx], self.y[idx]
            self.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.net(xb), yb)
            loss.backward()
            self.opt.step()

    def warmup(self, batches=5):
        self._batches(min(batches * self.bs, len(self.X)))

    def epoch(self):
        self.net.train()
        self._batches(len(self.X))

    def accuracy(self, X, y):
        with self.torch.no_grad():
            return float((self.net(self.torch.from_numpy(X)).argmax(1).numpy() == y).mean())


class SklearnMLP:
    name = "scikit-learn"

    def __init__(self, X, y, cfg, seed=0):
        from sklearn.neural_network import MLPClassifier

        batch_size = cfg["batch_size"]
        self.clf = MLPClassifier(
            hidden_layer_sizes=cfg["hidden"],
            batch_size=batch_size,
            learning_rate_init=cfg["lr"],
            solver=cfg["optimizer"],
            momentum=cfg.get("momentum", 0.9),
            nesterovs_momentum=False,
            alpha=0.0,
            random_state=seed,
            shuffle=True,
        )
        self.X, self.y = X, y
        self.classes = np.unique(y)
        self.bs = batch_size

    def warmup(self, batches=5):
        n = min(batches * self.bs, len(self.X))
        self.clf.partial_fit(self.X[:n], self.y[:n], classes=self.classes)

    def epoch(self):
        self.clf.partial_fit(self.X, self.y)

    def accuracy(self, X, y):
        return float(np.mean(self.clf.predict(X) == y))


CONTENDERS = {"vecnn": VecnnMLP, "pytorch": TorchMLP, "scikit-learn": SklearnMLP}


def _make(name, X, y, cfg, threads, seed=0):
    if name == "pytorch":
        return TorchMLP(X, y, cfg, seed=seed, threads=threads)
    return CONTENDERS[name](X, y, cfg, seed=seed)


def n_params(sizes) -> int:
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def available(names):
    ok, skipped = [], {}
    for name in names:
        module = {"pytorch": "torch", "scikit-learn": "sklearn"}.get(name)
        if module:
            try:
                __import__(module)
            except ImportError:
                skipped[name] = f"{module} is not installed (pip install 'vecnn[test]')"
                continue
        ok.append(name)
    return ok, skipped


def run(config="mlp", epochs=3, threads=None, limit=None, synthetic=False, names=None, memory=True, seed=0) -> dict:
    """Time alternating epochs; return a report dict (medians, ratios, accuracy, memory)."""
    import os

    from vecnn import backend

    cfg = CONFIGS[config]
    threads = threads or os.cpu_count()
    backend.set_num_threads(threads)
    peak = None
    if config == "wide":
        from .peak import measure_peak

        peak = measure_peak()
    Xtr, ytr, Xte, yte, source = load_fashion(limit, synthetic, seed)
    X, Xt = Xtr.reshape(len(Xtr), -1), Xte.reshape(len(Xte), -1)
    names, skipped = available(names or cfg["contenders"])
    contenders = {n: _make(n, X, ytr, cfg, threads, seed) for n in names}
    for c in contenders.values():
        c.warmup()
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(epochs):
        for n, c in contenders.items():
            with Timer() as t:
                c.epoch()
            times[n].append(t.seconds)
    sizes = [X.shape[1], *cfg["hidden"], 10]
    opt = "Adam" if cfg["optimizer"] == "adam" else f"SGD momentum {cfg['momentum']}"
    report = {
        "benchmark": f"{config} {'-'.join(map(str, sizes))}, batch {cfg['batch_size']}, {opt} lr {cfg['lr']}",
        "config": config,
        "data": source,
        "peak": peak,
        "samples_per_epoch": len(X),
        "epochs": epochs,
        "threads": threads,
        "machine": machine(),
        "skipped": skipped,
        "contenders": {},
    }
    for n, c in contenders.items():
        med = median(times[n])
        report["contenders"][n] = {
            "epoch_seconds": times[n],
            "median_seconds": med,
            "samples_per_second": len(X) / med,
            "test_accuracy": c.accuracy(Xt, yte),
        }
        if peak:
            gflops = 6 * n_params(sizes) * len(X) / med / 1e9
            report["contenders"][n].update(gflops=gflops, share_of_peak=gflops / peak["gflops"])
    if "vecnn" in report["contenders"]:
        v = report["contenders"]["vecnn"]["median_seconds"]
        for n, r in report["contenders"].items():
            r["vecnn_speedup"] = r["median_seconds"] / v
    if memory:
        for n in names:
            report["contenders"][n]["peak_rss_increase_mb"] = memory_in_subprocess(config, n, threads, limit, synthetic)
    return report


def memory_in_subprocess(config, name, threads, limit, synthetic) -> float | None:
    """Resident-set increase (MB) while ``name`` trains one epoch, in a fresh process."""
    cmd = [sys.executable, "-m", "vecnn.bench.mlp", config, "--memory-child", name, "--threads", str(threads)]
    if limit:
        cmd += ["--limit", str(limit)]
    if synthetic:
        cmd.append("--synthetic")
    out = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_increase_mb"]
    except (IndexError, ValueError, KeyError):
        return None


def _memory_child(config, name, threads, limit, synthetic):
    from vecnn import backend

    backend.set_num_threads(threads)
    Xtr, ytr, *_ = load_fashion(limit, synthetic)
    X = np.ascontiguousarray(Xtr.reshape(len(Xtr), -1))
    c = _make(name, X, ytr, CONFIGS[config], threads)
    c.warmup(1)
    reset_peak_rss()
    before = rss_bytes()
    c.epoch()
    print(json.dumps({"peak_rss_increase_mb": (peak_rss_bytes() - before) / 2**20}))


def format_report(r: dict) -> str:
    lines = [
        f"{r['benchmark']} on {r['data']} ({r['samples_per_epoch']} samples/epoch, "
        f"{r['epochs']} alternating epochs each, {r['threads']} threads)",
        f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores; BLAS: "
        + ", ".join(
            f"{b['internal_api']} {b['version']} ({b['num_threads']} threads, {b['architecture']})"
            for b in r["machine"]["blas"]
        ),
        f"{'contender':<14}{'median epoch':>14}{'samples/s':>12}{'vecnn speedup':>15}{'test acc':>10}"
        f"{'peak RSS +MB':>14}" + (f"{'GFLOP/s':>10}{'of peak':>9}" if r.get("peak") else ""),
    ]
    if r.get("peak"):
        lines.insert(
            2,
            f"matrix-multiply peak (best of {r['peak']['repeats']} float32 {r['peak']['n']}^3 products): "
            f"{r['peak']['gflops']:.0f} GFLOP/s",
        )
    for n, c in r["contenders"].items():
        mem = c.get("peak_rss_increase_mb")
        lines.append(
            f"{n:<14}{c['median_seconds']:>13.3f}s{c['samples_per_second']:>12,.0f}"
            f"{c.get('vecnn_speedup', float('nan')):>14.2f}x{c['test_accuracy']:>10.4f}"
            f"{'' if mem is None else f'{mem:.1f}':>14}"
            + (f"{c['gflops']:>10.0f}{c['share_of_peak']:>9.0%}" if "gflops" in c else "")
        )
    for n, why in r["skipped"].items():
        lines.append(f"{n}: skipped, {why}")
    return "\n".join(lines)


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default="mlp", choices=sorted(CONFIGS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int)
    p.add_argument("--limit", type=int, help="train on the first N samples only")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.memory_child:
        return _memory_child(a.config, a.memory_child, a.threads, a.limit, a.synthetic)
    r = run(a.config, a.epochs, a.threads, a.limit, a.synthetic, memory=not a.no_memory)
    publish(r, format_report(r), a.json)


if __name__ == "__main__":
    main()
