"""Data-parallel training over MPI: measured with 1 and 2 ranks here, predicted for a cluster.

Measured, in one run, jobs alternating (``--repeats`` times each):

* **samples/s** of ``fit(distributed=True)`` for the MLP and CNN presets (the CLI's, on
  Fashion-MNIST or its synthetic stand-in, global batch ``--batch-size``) under
  ``mpiexec -n 1`` (one process, all the machine's cores) and ``mpiexec -n 2`` (two ranks, one
  core each: the ranks split the node's cores);
* **compute per step** on the whole machine (one process) at batch B, B/8 and B/64: what one
  node of a cluster computes per step for weak scaling (B per node) and for strong scaling
  (global batch B over 8 or 64 nodes);
* **one Allreduce** of the flat gradient buffer (the model's parameter count in float32, the
  call a distributed step makes), timed on its own between the 2 ranks here.

Predicted for K nodes, each this machine, with the standard ring all-reduce::

    T_allreduce(K) = 2 (K-1)/K * bytes / bandwidth + 2 (K-1) * latency

    weak   (B per node):   efficiency = t(B) / (t(B) + T_allreduce(K))
    strong (B in all):     efficiency = t(B) / (K * (t(B/K) + T_allreduce(K)))

with ``t(b)`` the measured compute per step at batch ``b`` and no overlap of the reduction with
the backward pass (what vecnn does). Networks: 10 Gbit/s Ethernet (1.25 GB/s, 25 us per
message over TCP) and 100 Gbit/s InfiniBand/RoCE (12.5 GB/s, 3 us); the nominal bandwidth is an
upper bound (real links reach 80-95% of it). The goal: at least 90% weak-scaling efficiency
predicted at 8 nodes on 10 Gbit/s for the CNN.

    python benchmarks/bench_mpi.py                      # both presets, 2 repeats
    python benchmarks/bench_mpi.py --nets cnn --limit 6400 --repeats 3 --json mpi.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import load_fashion, machine, median, publish

#: (name, bytes per second, seconds per message) of the networks in the prediction
NETWORKS = [("10 Gbit/s", 10e9 / 8, 25e-6), ("100 Gbit/s", 100e9 / 8, 3e-6)]
NODES = (8, 64)
GOAL = ("cnn", "10 Gbit/s", 8, 0.90)  # weak-scaling efficiency at least this


def ring_allreduce_seconds(nbytes: float, k: int, bandwidth: float, latency: float) -> float:
    """The standard ring all-reduce (reduce-scatter then all-gather): each of ``2 (k-1)`` rounds
    sends ``nbytes / k`` to the next node."""
    if k <= 1:
        return 0.0
    return 2 * (k - 1) / k * nbytes / bandwidth + 2 * (k - 1) * latency


def weak_efficiency(t_step: float, t_reduce: float) -> float:
    return t_step / (t_step + t_reduce)


def strong_efficiency(t_whole: float, t_share: float, t_reduce: float, k: int) -> float:
    return t_whole / (k * (t_share + t_reduce))


# -- one MPI job (every rank runs this) ----------------------------------------------------------


def _epoch_timer():
    from vecnn.callbacks import Callback

    class EpochTimer(Callback):
        """Seconds of every epoch (on every rank)."""

        def __init__(self):
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t)

    return EpochTimer()


def _model(net, seed=0):
    from vecnn import presets

    return presets.build(net, (1, 28, 28), 10, seed=seed)


def _epochs_per_second(model, X, y, batch_size, epochs, distributed):
    """Whole-epoch samples/s of ``fit`` (median over ``epochs`` epochs, after one warm-up fit)."""
    import vecnn as vn

    model.fit(X[: 4 * batch_size], y[: 4 * batch_size], optimizer=vn.optim.Adam(1e-3), epochs=1,
              batch_size=batch_size, verbose=0, distributed=distributed)  # fmt: skip
    timer = _epoch_timer()
    model.fit(X, y, epochs=epochs, batch_size=batch_size, callbacks=[timer], verbose=0, distributed=distributed)
    return len(X) / median(timer.seconds)


def _step_seconds(net, X, y, batch_size, steps=40):
    """Compute per training step at ``batch_size`` on this process (median of 3 epochs of
    ``steps`` steps)."""
    model = _model(net)
    n = min(len(X), steps * batch_size)
    return 1 / _epochs_per_second(model, X[:n], y[:n], batch_size, 3, False) * n / (n // batch_size)


def job(args) -> dict:
    from vecnn import distributed

    comm = distributed.world()
    X, y, _, _, source = load_fashion(args.limit, args.synthetic)
    X = X.reshape(len(X), 1, 28, 28)
    out: dict = {"ranks": comm.size, "source": source, "machine": machine() if comm.is_root else None}
    model = _model(args.net)
    out["parameters"] = int(model.flat_params.size)
    out["samples_per_s"] = _epochs_per_second(model, X, y, args.batch_size, args.epochs, comm.size > 1)
    if comm.size > 1:
        out["allreduce_s"] = allreduce_seconds(comm, model.flat_params.size, args.reduces)
    else:
        out["step_s"] = {b: _step_seconds(args.net, X, y, b) for b in _batches(args.batch_size)}
    return out


def allreduce_seconds(comm, size: int, repeats: int) -> float:
    """Median seconds of one in-place Allreduce of ``size`` float32 values (the flat gradient
    buffer) across ``comm``'s ranks, each after a Barrier."""
    buf = np.ones(size, np.float32)
    times = []
    for _ in range(repeats):
        comm.comm.Barrier()
        t = time.perf_counter()
        comm.allreduce_(buf)
        times.append(time.perf_counter() - t)
    return median(times)


def _batches(batch_size):
    return sorted({batch_size, max(1, batch_size // 8), max(2, batch_size // 64)}, reverse=True)


# -- the driver ------------------------------------------------------------------------------------


def _mpiexec() -> str:
    found = Path(sys.executable).parent / "mpiexec"
    path = str(found) if found.exists() else shutil.which("mpiexec")
    if not path:
        raise SystemExit("bench_mpi: no mpiexec; pip install 'vecnn[mpi]' (mpi4py and Open MPI's mpiexec)")
    return path


def launch(ranks: int, argv: list[str], what: str) -> dict:
    """Run ``mpiexec -n ranks python *argv --job FILE`` (Open MPI allowed as root, ranks beyond
    the cores allowed) and return the JSON its rank 0 wrote to FILE; a failed job ends the
    benchmark with its standard error."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "job.json"
        cmd = [_mpiexec(), "--oversubscribe", "-n", str(ranks), sys.executable, *argv, "--job", str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{what}: the {ranks}-rank job failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def _run_job(ranks: int, net: str, args) -> dict:
    argv = ["-m", "vecnn.bench.mpi", "--net", net, "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
            "--reduces", str(args.reduces)]  # fmt: skip
    if args.limit:
        argv += ["--limit", str(args.limit)]
    if args.synthetic:
        argv.append("--synthetic")
    return launch(ranks, argv, "bench_mpi")


def predict(parameters: int, step_s: dict, batch_size: int) -> list[dict]:
    """Weak and strong efficiency for each network and node count (see the module docstring)."""
    nbytes = 4 * parameters
    rows = []
    for name, bandwidth, latency in NETWORKS:
        for k in NODES:
            t_reduce = ring_allreduce_seconds(nbytes, k, bandwidth, latency)
            share = max(2, batch_size // k)
            rows.append({
                "network": name, "nodes": k, "allreduce_s": t_reduce,
                "weak": weak_efficiency(step_s[batch_size], t_reduce),
                "strong": strong_efficiency(step_s[batch_size], step_s[share], t_reduce, k), "strong_batch": share,
            })  # fmt: skip
    return rows


def run(args) -> dict:
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    report: dict = {"batch_size": args.batch_size, "limit": args.limit, "repeats": args.repeats, "nets": {}}
    for net in nets:
        jobs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for ranks in (1, 2):  # alternating, so the machine's drift falls on both
                jobs[ranks].append(_run_job(ranks, net, args))
                print(f"  {net}: {ranks} rank(s): {jobs[ranks][-1]['samples_per_s']:,.0f} samples/s", file=sys.stderr)
        one, two = jobs[1], jobs[2]
        report["machine"] = one[0]["machine"]
        report["source"] = one[0]["source"]
        step_s = {int(b): median([j["step_s"][b] for j in one]) for b in one[0]["step_s"]}
        parameters = one[0]["parameters"]
        report["nets"][net] = {
            "parameters": parameters,
            "one_rank": [j["samples_per_s"] for j in one],
            "two_ranks": [j["samples_per_s"] for j in two],
            "speedup": median([b["samples_per_s"] / a["samples_per_s"] for a, b in zip(one, two)]),
            "allreduce_s": median([j["allreduce_s"] for j in two]),
            "step_s": step_s,
            "prediction": predict(parameters, step_s, args.batch_size),
        }
    return report


def format_report(r: dict) -> str:
    m = r["machine"]
    blas = "; ".join(f"{b['internal_api']} {b['version']} {b['architecture']}" for b in m["blas"])
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores; BLAS: {blas}",
        f"data: {r['source']}, {r['limit'] or 'all'} samples per epoch; global batch {r['batch_size']}; "
        f"{r['repeats']} repeats, 1- and 2-rank jobs alternating",
        "",
        f"{'net':<5} {'params':>9} {'1 rank/s':>10} {'2 ranks/s':>10} {'2 vs 1':>7} {'Allreduce':>10}   "
        "compute per step at batch B, B/8, B/64",
    ]
    for net, n in r["nets"].items():
        steps = ", ".join(f"{1e3 * s:.2f} ms ({b})" for b, s in sorted(n["step_s"].items(), reverse=True))
        lines.append(
            f"{net:<5} {n['parameters']:>9,} {median(n['one_rank']):>10,.0f} {median(n['two_ranks']):>10,.0f} "
            f"{n['speedup']:>6.2f}x {1e6 * n['allreduce_s']:>8.0f}us   {steps}"
        )
    lines += [
        "",
        "predicted (ring all-reduce of the flat gradients, nodes like this one, no overlap):",
        "  T = 2(K-1)/K * bytes/bandwidth + 2(K-1) * latency; weak: t(B)/(t(B)+T); strong: t(B)/(K*(t(B/K)+T))",
        f"{'net':<5} {'network':<11} {'nodes':>5} {'Allreduce':>10} {'weak':>6} {'strong':>7}",
    ]
    for net, n in r["nets"].items():
        for p in n["prediction"]:
            lines.append(
                f"{net:<5} {p['network']:<11} {p['nodes']:>5} {1e3 * p['allreduce_s']:>8.2f}ms "
                f"{100 * p['weak']:>5.0f}% {100 * p['strong']:>6.0f}%"
            )
    net, network, k, goal = GOAL
    if net in r["nets"]:
        weak = next(p["weak"] for p in r["nets"][net]["prediction"] if p["network"] == network and p["nodes"] == k)
        verdict = "met" if weak >= goal else "NOT met"
        lines += ["", f"goal: {net} weak scaling >= {goal:.0%} at {k} nodes on {network}: {weak:.0%}, {verdict}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="bench_mpi", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nets", default="mlp,cnn")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per job")
    p.add_argument("--limit", type=int, default=12_800, help="samples per epoch")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--reduces", type=int, default=200, help="Allreduce calls timed")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--net", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.job:
        from vecnn import distributed

        with distributed.guard(distributed.world(), "bench_mpi"):
            out = job(a)
        if out["ranks"] == 1 or distributed.world().is_root:
            Path(a.job).write_text(json.dumps(out))
        return 0
    r = run(a)
    publish(r, format_report(r), a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
