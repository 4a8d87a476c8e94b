"""vecnn on a device (``model.to(device)``) vs PyTorch eager on the same device, and a CPU-vs-device check.

A one-shot measurement for a machine with an NVIDIA GPU (``--device gpu``, the default); it
runs the same way on the CPU (``--device cpu``), which is how its test exercises it.

Timing: for each network of ``NETWORKS`` (bench_mlp's ``mlp``, 784-256-128-10 ReLU, and the CNN
of ``benchmarks/bench_cnn.py``) and each batch size of ``BATCHES``, vecnn and PyTorch eager
train the same network with Adam lr 1e-3 from the same seed on Fashion-MNIST (random data of
its shape when it is absent, or with ``--synthetic``). The training data is put on the device
once, on both sides (vecnn's ``fit`` would otherwise move it there at every call; the
difference is reported as ``data``). Each side warms up on a few batches (CUDA kernels compile,
cuDNN and cuBLAS choose algorithms), then trains on four times as many, timed, to size the
epochs to the time budget; then whole epochs alternate, who goes first alternating too,
vecnn's through ``model.fit(..., epochs=1)``. Every timed epoch starts and ends with a
device synchronization (``torch.cuda.synchronize()``; for vecnn the synchronize of the array
module of the model's parameters, CuPy's on a GPU), so queued work is never left out of the
timing. Reported: median samples/s of each side and the ratio vecnn / pytorch (above 1: vecnn
faster), and the test accuracy of each after the timed epochs.

PyTorch computes in full float32 (TF32 off for its convolutions, where cuDNN would use it by
default; its matrix products compute in float32 by default), as vecnn's CuPy backend does,
unless ``--tf32``.

Correctness: the digits MLP (``vecnn.presets.mlp``, what ``vecnn train`` builds for the built-in
digits) trained with the same seed on the CPU and on the device, epoch by epoch in lockstep; the
largest absolute difference of their weights after each epoch (goal: at most ``WEIGHT_GOAL``),
of their test logits, and the accuracy of each.

Time: a lent machine is lent for minutes, so the whole run keeps to ``--budget`` seconds
(default 200): each network/batch case gets an equal share of what is left, and trains on fewer
samples per epoch (a whole number of batches, said in the report) or stops after fewer epochs
when the warm-up shows that all of them would not fit. The JSON (``--json``) is rewritten after
every case, so that a run cut short still leaves what it measured.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from .common import load_fashion, median

NETWORKS = {
    "mlp": "784-256-128-10 ReLU (bench_mlp.py's mlp)",
    "cnn": "conv3x3(1->32)-ReLU-maxpool2-conv3x3(32->64)-ReLU-maxpool2-dense(1600->128)-ReLU-dense(10) (bench_cnn.py)",
}
BATCHES = (128, 1024)
LR = 1e-3
WARMUP_BATCHES = 5
#: the largest weight difference between the CPU and the device after training that counts as agreeing
WEIGHT_GOAL = 1e-4
#: an epoch cut short to fit the time budget still trains at least this many batches
MIN_BATCHES = 8


# -- the networks --------------------------------------------------------------------------------
def vecnn_layers(net: str):
    from vecnn import layers as L

    if net == "mlp":
        return [L.Dense(784, 256), L.ReLU(), L.Dense(256, 128), L.ReLU(), L.Dense(128, 10)]
    if net == "cnn":
        return [
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
        ]
    raise ValueError(f"unknown network {net!r}; expected one of {sorted(NETWORKS)}")


def torch_net(net: str, torch):
    nn = torch.nn
    if net == "mlp":
        return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    if net == "cnn":
        return nn.Sequential(
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
    raise ValueError(f"unknown network {net!r}; expected one of {sorted(NETWORKS)}")


def shaped(net: str, X):
    """Fashion-MNIST images as the network takes them: flat rows for the MLP, (n, 1, 28, 28) for the CNN."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    return X.reshape(len(X), -1) if net == "mlp" else X.reshape(len(X), 1, 28, 28)


def synchronize_arrays(a) -> None:
    """Wait for the work queued on the device that owns array ``a`` (nothing to wait for on the CPU).

    The array module comes from ``vecnn.ops`` (CuPy for GPU arrays), never imported here."""
    from vecnn import ops

    cuda = getattr(ops.get(a).xp, "cuda", None)
    if cuda is not None:
        cuda.Device().synchronize()


# -- the contenders ------------------------------------------------------------------------------
class VecnnSide:
    name = "vecnn"

    def __init__(self, net, device, batch_size, X, y, seed=0):
        import vecnn as vn
        from vecnn import ops

        self.model = vn.Sequential(vecnn_layers(net), seed=seed).to(device)
        self.optimizer = vn.optim.Adam(lr=LR)
        self.batch_size = batch_size
        self.host = (X, y)
        backend = ops.get(self.model.flat_params)
        # on the device once, as the PyTorch side holds its tensors (fit would move host arrays at every call)
        self.X, self.y = backend.asarray(X), backend.asarray(y)
        self.data = "on the device" if backend.device != "cpu" else "in memory"
        self.note = None

    def sync(self):
        synchronize_arrays(self.model.flat_params)

    def epoch(self, n):
        try:
            self.model.fit(
                self.X[:n],
                self.y[:n],
                loss="cross_entropy",
                optimizer=self.optimizer,
                epochs=1,
                batch_size=self.batch_size,
                verbose=0,
            )
        except Exception as e:
            if self.X is self.host[0]:
                raise
            # device-resident data refused: fall back to what fit documents (NumPy in, moved by fit)
            self.note = f"fit refused device-resident data ({type(e).__name__}: {e}); host arrays used instead"
            self.X, self.y = self.host
            self.data = "on the host, moved by fit at every call"
            self.model.fit(
                self.X[:n],
                self.y[:n],
                loss="cross_entropy",
                optimizer=self.optimizer,
                epochs=1,
                batch_size=self.batch_size,
                verbose=0,
            )

    def accuracy(self, X, y):
        return float(self.model.evaluate(X, y)["accuracy"])


class TorchSide:
    name = "pytorch"

    def __init__(self, net, device, batch_size, X, y, seed=0):
        import torch

        self.torch = torch
        self.dev = torch.device("cuda" if device == "gpu" else "cpu")
        torch.manual_seed(seed)
        self.net = torch_net(net, torch).to(self.dev)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=LR)
        self.loss = torch.nn.CrossEntropyLoss()
        self.batch_size = batch_size
        self.X = torch.from_numpy(X).to(self.dev)
        self.y = torch.from_numpy(y.astype(np.int64)).to(self.dev)
        self.gen = torch.Generator(device=self.dev).manual_seed(seed)
        self.data = "on the device" if self.dev.type == "cuda" else "in memory"
        self.note = None

    def sync(self):
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize()

    def epoch(self, n):
        torch = self.torch
        self.net.train()
        order = torch.randperm(n, generator=self.gen, device=self.dev)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.net(self.X[idx]), self.y[idx]).backward()
            self.opt.step()

    def accuracy(self, X, y):
        torch = self.torch
        self.net.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(X), 1024):
                out = self.net(torch.from_numpy(X[start : start + 1024]).to(self.dev))
                correct += int((out.argmax(1).cpu().numpy() == y[start : start + 1024]).sum())
        return correct / len(X)


def torch_precision(torch, tf32: bool) -> str:
    """Full float32 for PyTorch's convolutions (cuDNN uses TF32 for them by default; its matrix
    products already compute in float32), unless ``tf32``; returns what is in force, in words.

    Only the convolution setting is written, through the newer per-backend API where there is
    one (PyTorch >= 2.9 refuses a mix of the legacy ``allow_tf32`` flags and the new one)."""
    conv: Any = getattr(torch.backends.cudnn, "conv", None)
    matmul = torch.backends.cuda.matmul
    new_api = hasattr(conv, "fp32_precision")
    if not tf32:
        if new_api:
            conv.fp32_precision = "ieee"
        else:
            torch.backends.cudnn.allow_tf32 = False
    if new_api:
        modes = f"convolutions {conv.fp32_precision}, matrix products {matmul.fp32_precision}"
    else:
        modes = (
            f"convolutions {'tf32' if torch.backends.cudnn.allow_tf32 else 'ieee'}, "
            f"matrix products {'tf32' if matmul.allow_tf32 else 'ieee'}"
        )
    return ("PyTorch's TF32 defaults" if tf32 else "float32, TF32 off") + f" ({modes}; 'none' is ieee)"


# -- one case: a network and a batch size ----------------------------------------------------------
SIDES = (VecnnSide, TorchSide)


def measure(net, batch_size, device, data, epochs, seconds, seed=0, say=print) -> dict:
    """Train both sides, epochs alternating, within about ``seconds``; the case's report.

    A side that fails (to build, or in an epoch) is reported with its error, and the other one
    goes on alone: a one-shot run should bring back whatever could be measured."""
    Xtr, ytr, Xte, yte = data
    X, Xt = shaped(net, Xtr), shaped(net, Xte)
    y = np.ascontiguousarray(ytr, dtype=np.int64)
    t_case = time.perf_counter()
    failed = {}
    sides = []
    for make in SIDES:
        try:
            sides.append(make(net, device, batch_size, X, y, seed))
        except Exception as e:
            failed[make.name] = _error(e)

    def attempt(side, what):
        try:
            what()
            return True
        except Exception as e:
            failed[side.name] = _error(e)
            say(f"  {net} batch {batch_size}: {side.name} failed: {failed[side.name]}")
            sides.remove(side)
            return False

    warm = min(len(X), batch_size * WARMUP_BATCHES)
    for s in list(sides):  # compile kernels, choose algorithms, fill the memory pools
        attempt(s, lambda: (s.sync(), s.epoch(warm), s.sync()))
    per_sample = {}
    sized = min(len(X), 4 * warm)  # a second, timed warm-up sizes the epochs to the budget
    for s in list(sides):
        t0 = time.perf_counter()
        if attempt(s, lambda: (s.sync(), s.epoch(sized), s.sync())):
            per_sample[s.name] = (time.perf_counter() - t0) / sized
    if not sides:
        raise RuntimeError("; ".join(f"{k}: {v.splitlines()[-1]}" for k, v in failed.items()))
    left = seconds - (time.perf_counter() - t_case) - 5.0  # the accuracies and a margin
    n, cut = len(X), None
    fits = int(left / (epochs * sum(per_sample.values()) * 1.3)) if left > 0 else 0
    if fits < n:
        n = min(n, max(MIN_BATCHES * batch_size, fits // batch_size * batch_size))
        cut = (
            f"epochs of {n} of the {len(X)} samples, to fit the time budget "
            f"(warm-up: {1e6 * sum(per_sample.values()):.1f} us per sample, all sides)"
        )
    times: dict[str, list[float]] = {s.name: [] for s in sides}
    stopped = None
    for epoch in range(epochs):
        if epoch and sides:
            last = sum(times[s.name][-1] for s in sides)
            if time.perf_counter() - t_case + last > seconds:
                stopped = f"stopped after {epoch} of {epochs} epochs each, to fit the time budget"
                break
        for s in list(sides) if epoch % 2 == 0 else sides[::-1]:
            t0 = time.perf_counter()
            if attempt(s, lambda: (s.sync(), s.epoch(n), s.sync())):
                times[s.name].append(time.perf_counter() - t0)
        say(
            f"  {net} batch {batch_size} epoch {epoch + 1}: "
            + ", ".join(f"{s.name} {times[s.name][-1]:.3f} s ({n / times[s.name][-1]:,.0f} samples/s)" for s in sides)
        )
    steps = -(-n // batch_size)
    r = {
        "network": net,
        "batch_size": batch_size,
        "samples_per_epoch": n,
        "steps_per_epoch": steps,
        "epochs": max((len(times[s.name]) for s in sides), default=0),
        "warmup_seconds_per_sample": per_sample,
        "contenders": {},
        "failed": failed,
    }
    for s in sides:
        med = median(times[s.name])
        c = r["contenders"][s.name] = {
            "epoch_seconds": times[s.name],
            "median_seconds": med,
            "best_seconds": min(times[s.name]),
            "samples_per_second": n / med,
            "ms_per_step": 1e3 * med / steps,
            "data": s.data,
        }
        try:
            c["test_accuracy"] = s.accuracy(Xt, yte)
        except Exception as e:
            c["test_accuracy"], c["accuracy_error"] = None, _error(e)
        if s.note:
            c["note"] = s.note
    v, t = r["contenders"].get("vecnn"), r["contenders"].get("pytorch")
    r["ratio"] = v["samples_per_second"] / t["samples_per_second"] if v and t else None
    r["ratio_best"] = t["best_seconds"] / v["best_seconds"] if v and t else None
    r["notes"] = [x for x in (cut, stopped) if x]
    r["seconds"] = time.perf_counter() - t_case
    return r


# -- the correctness check ---------------------------------------------------------------------
def device_check(device, epochs=20, batch_size=128, seed=0) -> dict:
    """The digits MLP trained on the CPU and on ``device`` in lockstep from the same seed."""
    import vecnn as vn
    from vecnn import ops, presets
    from vecnn.backend import to_numpy

    t = time.perf_counter()
    X, y, Xt, yt = vn.data.load("digits")
    models: dict[str, Any] = {}
    for where in ("cpu", device):
        m = vn.Sequential(presets.mlp(X.shape[1:], 10), seed=seed)
        models["device" if models else "cpu"] = m.to(where)
    per_epoch = []
    for e in range(epochs):
        for m in models.values():
            m.fit(
                X,
                y,
                loss="cross_entropy",
                optimizer=vn.optim.Adam(lr=LR) if e == 0 else None,
                epochs=1,
                batch_size=batch_size,
                verbose=0,
                workers=1,
            )
        a, b = (to_numpy(m.flat_params) for m in models.values())
        per_epoch.append(float(np.max(np.abs(a - b))))
    logits = [m.predict(Xt) for m in models.values()]
    acc = {k: float(m.evaluate(Xt, yt)["accuracy"]) for k, m in models.items()}
    return {
        "model": "vecnn.presets.mlp on the built-in digits (Flatten-64-512-ReLU-Dropout-256-ReLU-Dropout-10)",
        "optimizer": f"Adam lr {LR}",
        "batch_size": batch_size,
        "epochs": epochs,
        "seed": seed,
        "cpu_backend": ops.get(models["cpu"].flat_params).name,
        "device_backend": ops.get(models["device"].flat_params).name,
        "max_abs_weight_diff": per_epoch[-1],
        "max_abs_weight_diff_per_epoch": per_epoch,
        "max_abs_test_logit_diff": float(np.max(np.abs(logits[0] - logits[1]))),
        "max_abs_weight": float(np.max(np.abs(to_numpy(models["cpu"].flat_params)))),
        "accuracy_cpu": acc["cpu"],
        "accuracy_device": acc["device"],
        "goal": WEIGHT_GOAL,
        "ok": per_epoch[-1] <= WEIGHT_GOAL,
        "seconds": time.perf_counter() - t,
    }


# -- the machine -------------------------------------------------------------------------------
def describe(device) -> dict:
    """The CPU and BLAS (``common.machine``, when threadpoolctl is here), and the GPU with the
    versions of CuPy, CUDA and PyTorch."""
    import platform

    try:
        from .common import machine

        info = machine()
    except Exception as e:  # threadpoolctl missing: describe what can be described
        info = {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "blas": [],
            "blas_error": f"{type(e).__name__}: {e}",
        }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
    except ImportError as e:
        info["torch"] = f"missing ({e})"
    if device == "gpu":
        from vecnn import ops

        xp = ops.gpu().xp
        info["cupy"] = xp.__version__
        try:
            rt = xp.cuda.runtime
            props = rt.getDeviceProperties(xp.cuda.Device().id)
            name = props["name"]
            info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
            info["gpu_memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
            v, d = rt.runtimeGetVersion(), rt.driverGetVersion()
            info["cuda_runtime"] = f"{v // 1000}.{v % 1000 // 10}"
            info["cuda_driver"] = f"{d // 1000}.{d % 1000 // 10}"
        except Exception as e:
            info["gpu"] = f"unknown ({type(e).__name__}: {e})"
    return info


def machine_line(m: dict) -> str:
    blas = ", ".join(
        f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} threads, {b.get('architecture')})"
        for b in m.get("blas") or []
    ) or m.get("blas_error", "unknown")
    line = f"machine: {m['cpu']}, {m['cores']} cores; BLAS: {blas}; numpy {m['numpy']}, torch {m.get('torch')}"
    if "gpu" in m:
        line += (
            f"\ngpu: {m['gpu']}, {m.get('gpu_memory_gib')} GiB; CuPy {m.get('cupy')}, CUDA runtime "
            f"{m.get('cuda_runtime')} (driver {m.get('cuda_driver')}); torch CUDA {m.get('torch_cuda')}"
        )
    return line


# -- the run -----------------------------------------------------------------------------------
def run(
    device="gpu",
    epochs=3,
    limit=None,
    synthetic=False,
    budget=200.0,
    check_epochs=20,
    seed=0,
    networks=tuple(NETWORKS),
    batches=BATCHES,
    tf32=False,
    json_path=None,
    say=print,
) -> dict:
    """Everything: the correctness check, then each network/batch case within ``budget`` seconds."""
    import torch

    t0 = time.perf_counter()
    report = {
        "benchmark": "vecnn model.to(device) vs PyTorch eager on the same device",
        "device": device,
        "complete": False,
        "networks": {n: NETWORKS[n] for n in networks},
        "batch_sizes": list(batches),
        "optimizer": f"Adam lr {LR}",
        "epochs": epochs,
        "budget_seconds": budget,
        "seed": seed,
        "cases": [],
        "errors": [],
    }
    try:
        report["machine"] = describe(device)
    except Exception as e:
        report["machine"] = {"cpu": "?", "cores": os.cpu_count(), "numpy": np.__version__, "error": _error(e)}
        report["errors"].append(f"machine description: {type(e).__name__}: {e}")
    try:
        report["torch_precision"] = torch_precision(torch, tf32)
    except Exception as e:
        report["torch_precision"] = f"PyTorch's defaults (setting float32 failed: {type(e).__name__}: {e})"
    say(machine_line(report["machine"]))

    def save():
        report["seconds"] = time.perf_counter() - t0
        if json_path:
            Path(json_path).write_text(json.dumps(report, indent=2))

    say(f"correctness: the digits MLP on the CPU and on the {device}, {check_epochs} epochs in lockstep ...")
    try:
        report["weight_check"] = device_check(device, check_epochs, seed=seed)
        say(format_check(report["weight_check"]))
    except Exception as e:
        report["weight_check"] = {"error": _error(e)}
        report["errors"].append(f"weight check: {type(e).__name__}: {e}")
        say(f"correctness check failed: {report['weight_check']['error']}")
    save()

    Xtr, ytr, Xte, yte, source = load_fashion(limit, synthetic, seed)
    if limit:  # a tiny run evaluates on as few test samples
        Xte, yte = Xte[:limit], yte[:limit]
    report["data"] = source
    say(
        f"data: {source}, {len(Xtr)} training / {len(Xte)} test samples; {epochs} alternating epochs each, "
        f"PyTorch in {report['torch_precision']}; budget {budget:.0f} s"
    )
    cases = [(n, b) for n in networks for b in batches]
    for i, (net, bs) in enumerate(cases):
        share = (budget - (time.perf_counter() - t0)) / (len(cases) - i)
        if share < 5:
            report["cases"].append({"network": net, "batch_size": bs, "skipped": "time budget spent"})
            report["errors"].append(f"{net} batch {bs}: skipped, time budget spent")
            continue
        try:
            r = measure(net, bs, device, (Xtr, ytr, Xte, yte), epochs, share, seed, say)
        except Exception as e:
            r = {"network": net, "batch_size": bs, "error": _error(e)}
            report["errors"].append(f"{net} batch {bs}: {type(e).__name__}: {e}")
            say(f"  {net} batch {bs} failed: {r['error']}")
        for name, err in r.get("failed", {}).items():
            report["errors"].append(f"{net} batch {bs}: {name}: {err.splitlines()[-1]}")
        report["cases"].append(r)
        save()
    report["complete"] = True
    save()
    return report


def _error(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:]).strip()


def format_check(c: dict) -> str:
    if "error" in c:
        return f"CPU vs device weights: failed: {c['error']}"
    return (
        f"CPU ({c['cpu_backend']}) vs device ({c['device_backend']}) after {c['epochs']} epochs: max |weight diff| "
        f"{c['max_abs_weight_diff']:.2e} ({'ok' if c['ok'] else 'ABOVE'} the goal {c['goal']:.0e}; after "
        f"epoch 1: {c['max_abs_weight_diff_per_epoch'][0]:.2e}), max |test logit diff| "
        f"{c['max_abs_test_logit_diff']:.2e}; test accuracy CPU {c['accuracy_cpu']:.4f}, "
        f"device {c['accuracy_device']:.4f}"
    )


def format_report(r: dict) -> str:
    lines = [
        machine_line(r["machine"]),
        f"data: {r.get('data')}; {r['optimizer']}; PyTorch {r['torch_precision']}",
        format_check(r.get("weight_check", {"error": "not run"})),
        "",
        f"{'network':<8}{'batch':>6}{'samples':>9}{'epochs':>7}{'vecnn samples/s':>17}{'pytorch samples/s':>19}"
        f"{'vecnn/pytorch':>15}{'vecnn ms/step':>15}{'torch ms/step':>15}{'acc vecnn':>11}{'acc torch':>11}",
    ]
    for c in r["cases"]:
        if "contenders" not in c:
            why = c.get("skipped") or "failed: " + c["error"].splitlines()[-1]
            lines.append(f"{c['network']:<8}{c['batch_size']:>6}  {why}")
            continue
        v, t = c["contenders"].get("vecnn", {}), c["contenders"].get("pytorch", {})
        lines.append(
            f"{c['network']:<8}{c['batch_size']:>6}{c['samples_per_epoch']:>9}{c['epochs']:>7}"
            f"{_num(v.get('samples_per_second'), '17,.0f')}{_num(t.get('samples_per_second'), '19,.0f')}"
            f"{_num(c['ratio'], '14.2f')}{'x' if c['ratio'] else ' '}"
            f"{_num(v.get('ms_per_step'), '15.3f')}{_num(t.get('ms_per_step'), '15.3f')}"
            f"{_num(v.get('test_accuracy'), '11.4f')}{_num(t.get('test_accuracy'), '11.4f')}"
        )
        for note in c["notes"] + [x["note"] for x in (v, t) if x.get("note")]:
            lines.append(f"{'':14}note: {note}")
        for name, err in c["failed"].items():
            lines.append(f"{'':14}{name} failed: {err.splitlines()[-1]}")
    lines.append(
        f"(medians of the timed epochs; vecnn/pytorch above 1x: vecnn faster; data {_data_words(r)}; "
        f"{r['seconds']:.0f} s in all)"
    )
    for e in r["errors"]:
        lines.append(f"error: {e}")
    return "\n".join(lines)


def _num(x, fmt: str) -> str:
    width = int(fmt.split(",")[0].split(".")[0])
    return f"{'-':>{width}}" if x is None else format(x, fmt)


def _data_words(r: dict) -> str:
    where = {c["contenders"]["vecnn"]["data"] for c in r["cases"] if "vecnn" in c.get("contenders", {})}
    pytorch = "on the device" if r["device"] == "gpu" else "in memory"
    return f"vecnn's {', '.join(sorted(where)) or '-'}, PyTorch's {pytorch}"


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per side and case (default 3)")
    p.add_argument("--limit", type=int, help="train (and test) on the first N samples only")
    p.add_argument("--synthetic", action="store_true", help="random data of Fashion-MNIST's shape")
    p.add_argument(
        "--budget", type=float, default=200.0, help="seconds for the whole run; epochs are cut to fit (default 200)"
    )
    p.add_argument("--check-epochs", type=int, default=20, help="epochs of the CPU-vs-device check (default 20)")
    p.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated, of mlp, cnn")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    p.add_argument("--tf32", action="store_true", help="leave PyTorch's TF32 defaults on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the report here (rewritten after every case)")
    a = p.parse_args(argv)
    for name in ("epochs", "check_epochs"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected a positive integer")
    networks = [n.strip() for n in a.networks.split(",") if n.strip()]
    if not networks or any(n not in NETWORKS for n in networks):
        p.error(f"--networks: expected names from {', '.join(NETWORKS)}, received {a.networks!r}")
    try:
        batches = [int(b) for b in a.batches.split(",") if b.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        p.error(f"--batches: expected positive integers, received {a.batches!r}")
    if a.device == "gpu":
        from vecnn import ops

        problem = ops.gpu_problem()
        if problem is not None:
            print(
                f"bench_gpu: no GPU here: {problem}\n(--device cpu runs the same measurement on the CPU)",
                file=sys.stderr,
            )
            return 2
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print(f"bench_gpu: PyTorch is needed for the comparison ({e}); pip install torch", file=sys.stderr)
        return 2
    r = run(
        a.device,
        a.epochs,
        a.limit,
        a.synthetic,
        a.budget,
        a.check_epochs,
        a.seed,
        networks,
        batches,
        a.tf32,
        a.json,
        say=lambda s: print(s, flush=True),
    )
    print()
    print(format_report(r), flush=True)
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
