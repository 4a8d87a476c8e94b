"""Head-to-head MLP training: vecnn against every CPU peer, each in its own worker process.

Two configurations (``CONFIGS``):

- ``mlp``: 784-256-128-10 (ReLU), batch 128, Adam lr 1e-3: the everyday network.
- ``wide``: 784-2048-2048-10, batch 512, SGD with momentum 0.9: big enough that the matrix
  products dominate, reported as a share of this machine's measured matrix-multiply peak
  (FLOPs counted as 6 x parameters x samples, the usual forward + backward estimate).

Contenders (``vecnn.bench.peers``): vecnn, PyTorch eager, torch.compile, JAX (a jitted step with
optax), Keras and scikit-learn's MLPClassifier (``mlp`` only), each optional but vecnn, each in
its own worker process started with its own environment's interpreter (``--jax-python``,
``--keras-python``, ``--torch-python``, ``--sklearn-python``; default this one). A contender
whose environment or package is missing, or whose compilation fails, is skipped with the reason.

Same network, optimizer and thread count on every side, data already in memory, no data
loader. Each contender warms up (compiled ones: the first call of each batch shape, timed and
reported apart as compile seconds); then whole epochs alternate between contenders (vecnn's
through ``model.fit(..., epochs=1)``, input checks included) and the medians are compared. Each
worker reports its peak resident-set increase during an epoch and the BLAS it runs on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import peers
from .common import load_fashion, machine, publish

CONFIGS: dict[str, dict[str, Any]] = {
    "mlp": {
        "hidden": (256, 128),
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 1e-3,
        "contenders": ("vecnn", "pytorch", "torch.compile", "jax", "keras", "scikit-learn"),
    },
    "wide": {
        "hidden": (2048, 2048),
        "batch_size": 512,
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "contenders": ("vecnn", "pytorch", "torch.compile", "jax", "keras"),
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


CONTENDERS = {"vecnn": VecnnMLP, "pytorch": TorchMLP, "scikit-learn": SklearnMLP}  # in-process (bench_contention)


def n_params(sizes) -> int:
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def run(
    config="mlp",
    epochs=3,
    threads=None,
    limit=None,
    synthetic=False,
    names=None,
    memory=True,
    seed=0,
    pythons=None,
    warmup_batches=5,
    echo=None,
) -> dict:
    """Time alternating epochs, each contender in its own worker; return a report dict.

    ``names``: contenders (default: the config's); ``pythons``: interpreter per contender
    (``{"jax": ".../bin/python"}``); ``memory``: keep the peak resident-set increases.
    """
    import os

    if config not in CONFIGS:
        raise ValueError(f"config: {config!r} is not one of {sorted(CONFIGS)}")
    if epochs < 1:
        raise ValueError(f"epochs: at least 1, got {epochs}")
    cfg = CONFIGS[config]
    threads = threads or os.cpu_count() or 1
    peak = None
    if config == "wide":
        from vecnn import backend

        from .peak import measure_peak

        backend.set_num_threads(threads)
        peak = measure_peak()
    Xtr, ytr, Xte, yte, source = load_fashion(limit, synthetic, seed)
    X = np.ascontiguousarray(Xtr.reshape(len(Xtr), -1), np.float32)
    Xt = np.ascontiguousarray(Xte.reshape(len(Xte), -1), np.float32)
    ytr, yte = ytr.astype(np.int64), yte.astype(np.int64)
    sizes = [X.shape[1], *cfg["hidden"], 10]
    spec = {
        "net": "mlp",
        "n_in": sizes[0],
        "hidden": list(cfg["hidden"]),
        "n_out": sizes[-1],
        "optimizer": cfg["optimizer"],
        "lr": cfg["lr"],
        "momentum": cfg.get("momentum", 0.9),
        "batch_size": cfg["batch_size"],
        "threads": threads,
        "seed": seed,
        "warmup_batches": warmup_batches,
    }
    names = [peers.canonical(n) for n in (names or cfg["contenders"])]
    results, skipped = peers.run_peers(names, spec, (X, ytr, Xt, yte), epochs, pythons, echo)
    peers.summarize(results, len(X))
    opt = "Adam" if cfg["optimizer"] == "adam" else f"SGD momentum {cfg['momentum']}"
    report: dict[str, Any] = {
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
    for n, r in results.items():
        c = dict(r, epoch_seconds=r["seconds"], test_accuracy=r["accuracy"])
        c["peak_rss_increase_mb"] = r["peak_increase_mib_max"] if memory else None
        if peak:
            gflops = 6 * n_params(sizes) * len(X) / r["median_seconds"] / 1e9
            c.update(gflops=gflops, share_of_peak=gflops / peak["gflops"])
        report["contenders"][n] = c
    return report


def format_report(r: dict) -> str:
    lines = [
        f"{r['benchmark']} on {r['data']} ({r['samples_per_epoch']} samples/epoch, "
        f"{r['epochs']} alternating epochs each, {r['threads']} threads)",
        f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores; this process's BLAS: "
        + peers.blas_text(r["machine"]["blas"]),
    ]
    if r.get("peak"):
        lines.append(
            f"matrix-multiply peak (best of {r['peak']['repeats']} float32 {r['peak']['n']}^3 products): "
            f"{r['peak']['gflops']:.0f} GFLOP/s"
        )
    extra = []
    if r.get("peak"):
        extra = [("GFLOP/s", lambda c: f"{c['gflops']:.0f}"), ("of peak", lambda c: f"{c['share_of_peak']:.0%}")]
    lines.append(peers.format_table(r["contenders"], r["skipped"], extra))
    return "\n".join(lines)


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default="mlp", choices=sorted(CONFIGS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int)
    p.add_argument("--limit", type=int, help="train on the first N samples only")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--no-memory", action="store_true", help="leave the peak resident-set increases out")
    p.add_argument(
        "--contenders",
        help="comma-separated, of " + ", ".join(peers.PEERS) + " (default: all the config's)",
    )
    p.add_argument("--warmup-batches", type=int, default=5)
    peers.add_python_options(p)
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    if a.epochs < 1:
        p.error("--epochs: at least 1")
    if a.threads is not None and a.threads < 1:
        p.error("--threads: at least 1")
    if a.limit is not None and a.limit < 1:
        p.error("--limit: at least 1")
    try:
        names = [peers.canonical(n) for n in a.contenders.split(",") if n.strip()] if a.contenders else None
    except ValueError as e:
        p.error(str(e))
    r = run(
        a.config,
        a.epochs,
        a.threads,
        a.limit,
        a.synthetic,
        names=names,
        memory=not a.no_memory,
        pythons=peers.pythons_from_args(a),
        warmup_batches=a.warmup_batches,
        echo=lambda s: print(s, flush=True),
    )
    publish(r, format_report(r), a.json)


if __name__ == "__main__":
    main()
