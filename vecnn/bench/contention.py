"""Two trainings on one machine: how much of its solo speed does each keep?

Every contender trains the everyday MLP (784-256-128-10, batch 128, Adam, Fashion-MNIST or
its synthetic stand-in) in its own process with default threads, as a user would start it:
first alone, then two processes at once, started together and timed over the same seconds.
Each reports samples per second over whole epochs; the share kept is the pair's speed over the
solo speed. Scenarios repeat ``--repeats`` times, alternating, so that the machine's own drift
falls on every side.

    python -m vecnn.bench.contention                     # vecnn, and vecnn with fixed threads
    python -m vecnn.bench.contention --contenders vecnn,vecnn-fixed,pytorch,numpy
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from .common import load_fashion, machine, publish
from .mlp import CONFIGS

#: what each contender is; "fixed": vecnn with its thread governor off (the behaviour before it)
DESCRIPTIONS = {
    "vecnn": "vecnn fit, default threads",
    "vecnn-fixed": "vecnn fit, all BLAS threads always (no governor)",
    "pytorch": "PyTorch eager, default threads",
    "numpy": "plain NumPy training loop (the same math, no vecnn), default threads",
}


class NumpyMLP:
    """The MLP's training step written directly in NumPy: what a user's own code would do."""

    def __init__(self, X, y, cfg, seed=0):
        rng = np.random.default_rng(seed)
        sizes = [X.shape[1], *cfg["hidden"], int(y.max()) + 1]
        self.W = [(rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype(np.float32) for a, b in zip(sizes, sizes[1:])]
        self.b = [np.zeros(b, np.float32) for b in sizes[1:]]
        self.X, self.y, self.bs, self.lr, self.rng = X, y, cfg["batch_size"], np.float32(cfg["lr"]), rng

    def _step(self, x, y):
        acts = [x]
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            z = acts[-1] @ W + b
            acts.append(np.maximum(z, 0) if i < len(self.W) - 1 else z)
        z = acts[-1] - acts[-1].max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        g = p / len(y)
        for i in reversed(range(len(self.W))):
            gW, gb = acts[i].T @ g, g.sum(0)
            if i:
                g = (g @ self.W[i].T) * (acts[i] > 0)
            self.W[i] -= self.lr * gW
            self.b[i] -= self.lr * gb

    def warmup(self, batches=5):
        for i in range(batches):
            self._step(self.X[i * self.bs : (i + 1) * self.bs], self.y[i * self.bs : (i + 1) * self.bs])

    def epoch(self):
        order = self.rng.permutation(len(self.X))
        for i in range(0, len(order), self.bs):
            idx = order[i : i + self.bs]
            self._step(self.X[idx], self.y[idx])


def _contender(name, X, y, cfg):
    from . import mlp

    if name in ("vecnn", "vecnn-fixed"):
        if name == "vecnn-fixed":
            from vecnn import threads

            threads.governor = lambda: (None, None)  # the behaviour before the governor
        return mlp.VecnnMLP(X, y, cfg)
    if name == "pytorch":
        return mlp.TorchMLP(X, y, cfg)
    if name == "numpy":
        return NumpyMLP(X, y, cfg)
    raise ValueError(f"unknown contender {name!r}; expected one of {', '.join(DESCRIPTIONS)}")


def child(name, start_at, seconds, limit, synthetic):
    """Train ``name`` from ``start_at`` (a ``time.time()``) for about ``seconds`` of whole
    epochs of ``limit`` samples; print one JSON line ``{"samples": ..., "seconds": ...}``."""
    Xtr, ytr, *_ = load_fashion(limit, synthetic)
    X = np.ascontiguousarray(Xtr.reshape(len(Xtr), -1))
    model = _contender(name, X, ytr, CONFIGS["mlp"])
    model.warmup()
    time.sleep(max(0.0, start_at - time.time()))
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        model.epoch()
        n += len(X)
    print(json.dumps({"samples": n, "seconds": time.perf_counter() - t0}), flush=True)


def _spawn(names, seconds, limit, synthetic, lead=8.0):
    start_at = time.time() + lead  # imports, data and warm-up first
    cmd = [
        sys.executable,
        "-m",
        "vecnn.bench.contention",
        "--seconds",
        str(seconds),
        "--limit",
        str(limit),
        "--start-at",
        repr(start_at),
    ] + (["--synthetic"] if synthetic else [])
    procs = [subprocess.Popen(cmd + ["--child", n], stdout=subprocess.PIPE, text=True) for n in names]
    rates = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"contender process failed (exit {p.returncode})")
        r = json.loads(out.strip().splitlines()[-1])
        rates.append(r["samples"] / r["seconds"])
    return rates


def run(names, seconds=10.0, repeats=2, limit=12_800, synthetic=False, lead=8.0):
    report = {"machine": machine(), "seconds": seconds, "limit": limit, "results": {}}
    for name in names:
        report["results"][name] = {"solo": [], "pair": []}
    for _ in range(repeats):
        for name in names:  # alternate: drift falls on every side
            res = report["results"][name]
            res["solo"] += _spawn([name], seconds, limit, synthetic, lead)
            res["pair"].append(_spawn([name, name], seconds, limit, synthetic, lead))
    for name, res in report["results"].items():
        solo = float(np.median(res["solo"]))
        pair = [min(p) for p in res["pair"]]
        res["solo_median"] = solo
        res["share_kept_worst"] = min(pair) / solo
        res["share_kept_median"] = float(np.median([x for p in res["pair"] for x in p])) / solo
    return report


def format_report(r) -> str:
    m = r["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores; BLAS: "
        + "; ".join(
            f"{b['internal_api']} {b['version']} {b['architecture']} ({b['num_threads']} threads)" for b in m["blas"]
        ),
        f"MLP 784-256-128-10, batch 128, Adam; {r['seconds']:.0f} s per measurement, epochs of {r['limit']} samples",
        "",
        f"{'contender':<12} {'alone':>12} {'two at once (each)':>28} {'share kept':>12}",
    ]
    for name, res in r["results"].items():
        pairs = "  ".join(f"{a:,.0f}/{b:,.0f}" for a, b in res["pair"])
        lines.append(
            f"{name:<12} {res['solo_median']:>10,.0f}/s {pairs:>28} "
            f"{100 * res['share_kept_median']:>6.0f}% (worst {100 * res['share_kept_worst']:.0f}%)"
        )
    lines += ["", *(f"  {n}: {DESCRIPTIONS[n]}" for n in r["results"])]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="bench_contention", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--contenders", default="vecnn,vecnn-fixed")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--limit", type=int, default=12_800, help="samples per epoch")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--lead", type=float, default=8.0, help="seconds for the processes to start and warm up")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child(a.child, a.start_at, a.seconds, a.limit, a.synthetic)
    names = [n.strip() for n in a.contenders.split(",") if n.strip()]
    for n in names:
        if n not in DESCRIPTIONS:
            p.error(f"--contenders: unknown {n!r}; expected some of {', '.join(DESCRIPTIONS)}")
    r = run(names, a.seconds, a.repeats, a.limit, a.synthetic, a.lead)
    publish(r, format_report(r), a.json)


if __name__ == "__main__":
    main()
