"""Every CPU peer of the training benchmarks (bench_mlp.py, bench_cnn.py), each in its own worker process.

Contenders (``PEERS``), the same network, batch size, optimizer, float32 data already in memory
and thread count on every side:

- ``vecnn``: ``model.fit(..., epochs=1)`` per epoch, input checks included.
- ``pytorch``: PyTorch eager, a hand-written loop over shuffled in-memory batches.
- ``torch.compile``: the same model compiled with ``torch.compile`` (mode default) and its
  optimizer step compiled too; needs a C++ compiler on the CPU (``$CXX`` or g++).
- ``jax``: one ``jax.jit``-ed training step (forward, loss, ``jax.grad`` and the optax
  Adam / SGD-momentum update; the batch gathered from the in-memory arrays inside the step),
  the CNN in XLA's native channels-last layout.
- ``keras``: Keras 3 ``model.fit`` on in-memory arrays (channels-last for the CNN), on whatever
  backend its environment has (TensorFlow in the documented one).
- ``scikit-learn``: ``MLPClassifier.partial_fit``, one epoch per call (MLP only: it has no CNN).

Each contender runs in its own process, started with the interpreter of its own environment
(``pythons``; default this one), so one's thread pools and memory never touch another's and a
framework missing from this environment costs nothing but a skip. This file imports only NumPy
and the standard library at the top, so any environment with NumPy can run it as a worker.

A worker builds its model, then warms up: for ``torch.compile``, ``jax`` and ``keras`` the first
call of each batch shape the epoch uses (the full batch and the last, smaller one) is timed as
*compile seconds* and reported apart (a cold compilation: torch.compile gets an empty inductor cache
every run; JAX's persistent cache is off by default); then a few batches more. Epochs then alternate between the
workers (the order reversed every other epoch); the reports use medians. Each worker reports the
BLAS library it runs on (threadpoolctl), the framework's own kernels, and the peak resident-set
increase during each epoch. A contender whose environment or package is missing, or whose
compilation fails, is skipped with the reason, never a crash.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PEERS = ("vecnn", "pytorch", "torch.compile", "jax", "keras", "scikit-learn")
ALIASES = {
    "torch": "pytorch",
    "torch-eager": "pytorch",
    "compile": "torch.compile",
    "torch-compile": "torch.compile",
    "torch_compile": "torch.compile",
    "sklearn": "scikit-learn",
    "tensorflow": "keras",
}
# how to put a missing package into a contender's environment
INSTALL = {
    "vecnn": "pip install -e .",
    "pytorch": "pip install 'vecnn[torch]'",
    "torch.compile": "pip install 'vecnn[torch]'",
    "jax": "python3 -m venv ENV && ENV/bin/pip install jax jaxlib optax numpy threadpoolctl, "
    "then --jax-python ENV/bin/python",
    "keras": "pip install 'vecnn[keras]' tensorflow, or in an environment of its own: "
    "python3 -m venv ENV && ENV/bin/pip install tensorflow keras numpy threadpoolctl, "
    "then --keras-python ENV/bin/python",
    "scikit-learn": "pip install 'vecnn[sklearn]'",
}

CNN = "conv3x3(1->32)-ReLU-maxpool2-conv3x3(32->64)-ReLU-maxpool2-dense(1600->128)-ReLU-dense(10)"


def canonical(name: str) -> str:
    """``torch`` -> ``pytorch``, ``compile`` -> ``torch.compile``, ...; ValueError for unknown names."""
    n = ALIASES.get(name.strip().lower(), name.strip().lower())
    if n not in PEERS:
        raise ValueError(f"--contenders: unknown contender {name!r} (known: {', '.join(PEERS)})")
    return n


class Skip(Exception):
    """A contender cannot run here; the message says why."""


# -- memory --------------------------------------------------------------------------------------
def _status_mib(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


# -- helpers shared by the runners ----------------------------------------------------------------
def _sizes(spec) -> list[int]:
    return [spec["n_in"], *spec["hidden"], spec["n_out"]]


def _batch_shapes(n: int, bs: int) -> list[int]:
    """The batch sizes one epoch of ``n`` samples uses: the full batch, and the last one if smaller."""
    return list(dict.fromkeys([min(bs, n), n % bs or min(bs, n)]))


def _uniform(rng, shape, fan_in):
    bound = 1 / np.sqrt(fan_in)  # PyTorch's default Linear / Conv2d initialization range
    return rng.uniform(-bound, bound, shape).astype(np.float32)


# -- the contenders -------------------------------------------------------------------------------
class VecnnPeer:
    def __init__(self, spec):
        import vecnn as vn
        from vecnn import layers as L

        vn.set_num_threads(spec["threads"])
        if spec["net"] == "cnn":
            layers = [L.Conv2D(1, 32, 3), L.ReLU(), L.MaxPool2D(2), L.Conv2D(32, 64, 3), L.ReLU(), L.MaxPool2D(2)]
            layers += [L.Flatten(), L.Dense(1600, 128), L.ReLU(), L.Dense(128, 10)]
        else:
            sizes, layers = _sizes(spec), []
            for a, b in zip(sizes[:-2], sizes[1:-1]):
                layers += [L.Dense(a, b), L.ReLU()]
            layers.append(L.Dense(sizes[-2], sizes[-1]))
        self.model = vn.Sequential(layers, seed=spec["seed"])
        self.opt = (
            vn.optim.Adam(lr=spec["lr"])
            if spec["optimizer"] == "adam"
            else vn.optim.SGD(lr=spec["lr"], momentum=spec["momentum"])
        )
        self.bs = spec["batch_size"]
        self.kernels = f"vecnn {vn.__version__} on NumPy {np.__version__}"

    def n_params(self):
        return int(self.model.n_params)

    def warmup(self, X, y, batches):
        self.epoch(X[: batches * self.bs], y[: batches * self.bs])

    def epoch(self, X, y):
        # the same optimizer object every time: its state carries over between fit calls
        self.model.fit(X, y, loss="cross_entropy", optimizer=self.opt, epochs=1, batch_size=self.bs, verbose=0)

    def accuracy(self, X, y):
        return float(self.model.evaluate(X, y)["accuracy"])


class TorchPeer:
    compiled = False

    def __init__(self, spec):
        try:
            import torch
        except ImportError as e:
            raise Skip(f"torch is not installed in {sys.executable} ({INSTALL['pytorch']})") from e
        torch.set_num_threads(spec["threads"])
        torch.manual_seed(spec["seed"])
        nn = torch.nn
        if spec["net"] == "cnn":
            mods = [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2)]
            mods += [nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10)]
        else:
            sizes, mods = _sizes(spec), []
            for a, b in zip(sizes[:-2], sizes[1:-1]):
                mods += [nn.Linear(a, b), nn.ReLU()]
            mods.append(nn.Linear(sizes[-2], sizes[-1]))
        self.torch, self.net = torch, nn.Sequential(*mods)
        self.opt = (
            torch.optim.Adam(self.net.parameters(), lr=spec["lr"])
            if spec["optimizer"] == "adam"
            else torch.optim.SGD(self.net.parameters(), lr=spec["lr"], momentum=spec["momentum"])
        )
        self.bs, self.gen = spec["batch_size"], torch.Generator().manual_seed(spec["seed"])
        self.forward, self.opt_step = self.net, self.opt.step
        self._data: tuple | None = None
        mkl = "MKL" if torch.backends.mkl.is_available() else "no MKL"
        dnn = "oneDNN" if torch.backends.mkldnn.is_available() else "no oneDNN"
        self.kernels = f"torch {torch.__version__} ({mkl}, {dnn}, {torch.get_num_threads()} threads)"

    def n_params(self):
        return sum(int(p.numel()) for p in self.net.parameters())

    def _tensors(self, X, y):
        if self._data is None or self._data[0] is not X:
            self._data = (X, self.torch.from_numpy(X), self.torch.from_numpy(y))
        return self._data[1:]

    def _step(self, xb, yb):
        self.opt.zero_grad(set_to_none=True)
        self.torch.nn.functional.cross_entropy(self.forward(xb), yb).backward()
        self.opt_step()

    def warmup(self, X, y, batches):
        compile_seconds = None
        if self.compiled:  # the first call of each batch shape an epoch uses compiles
            Xt, yt = self.torch.from_numpy(X), self.torch.from_numpy(y)
            t = time.perf_counter()
            for b in _batch_shapes(len(X), self.bs):
                self._step(Xt[:b], yt[:b])
            compile_seconds = time.perf_counter() - t
        self.epoch(X[: batches * self.bs], y[: batches * self.bs])
        return compile_seconds

    def epoch(self, X, y):
        torch = self.torch
        Xt, yt = self._tensors(X, y)
        self.net.train()
        order = torch.randperm(len(Xt), generator=self.gen)
        for start in range(0, len(Xt), self.bs):
            idx = order[start : start + self.bs]
            self._step(Xt[idx], yt[idx])

    def accuracy(self, X, y):
        torch = self.torch
        self.net.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(X), 1024):
                out = self.forward(torch.from_numpy(X[start : start + 1024]))
                correct += int((out.argmax(1).numpy() == y[start : start + 1024]).sum())
        return correct / len(X)


class TorchCompilePeer(TorchPeer):
    """The PyTorch model and its optimizer step, each through ``torch.compile`` (mode default)."""

    compiled = True

    def __init__(self, spec):
        cxx = os.environ.get("CXX") or "g++"
        if not shutil.which(cxx):
            raise Skip(f"torch.compile on the CPU needs a C++ compiler; {cxx!r} was not found (set CXX)")
        super().__init__(spec)
        torch = self.torch
        self.forward = torch.compile(self.net)
        self.opt_step = torch.compile(self.opt.step)
        self.kernels += f", inductor C++ via {shutil.which(cxx)}"


class JaxPeer:
    compiled = True

    def __init__(self, spec):
        if spec["threads"] < (os.cpu_count() or 1) and hasattr(os, "sched_setaffinity"):
            # XLA sizes its CPU thread pool from the CPUs this process may use
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: spec["threads"]])
        try:
            import jax
            import jax.numpy as jnp
            import optax
        except ImportError as e:
            raise Skip(f"{e.name} is not installed in {sys.executable} ({INSTALL['jax']})") from e
        jax.config.update("jax_platforms", "cpu")
        self.jax, self.jnp, self.net, self.bs = jax, jnp, spec["net"], spec["batch_size"]
        rng = np.random.default_rng(spec["seed"])
        if spec["net"] == "cnn":
            shapes = [((3, 3, 1, 32), 9), ((3, 3, 32, 64), 288), ((1600, 128), 1600), ((128, 10), 128)]
        else:
            sizes = _sizes(spec)
            shapes = [((a, b), a) for a, b in zip(sizes, sizes[1:])]
        self.params = [(jnp.asarray(_uniform(rng, s, f)), jnp.asarray(_uniform(rng, s[-1:], f))) for s, f in shapes]
        tx = optax.adam(spec["lr"]) if spec["optimizer"] == "adam" else optax.sgd(spec["lr"], momentum=spec["momentum"])
        self.opt_state = tx.init(self.params)
        lax = jax.lax

        def logits(params, x):
            if self.net == "cnn":  # NHWC, XLA's native layout on the CPU
                for w, b in params[:2]:
                    x = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
                    x = jax.nn.relu(x + b)
                    x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
                x, params = x.reshape(x.shape[0], -1), params[2:]
            for w, b in params[:-1]:
                x = jax.nn.relu(x @ w + b)
            w, b = params[-1]
            return x @ w + b

        def loss(params, x, y):
            return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()

        def step(params, opt_state, X, y, idx):
            value, grads = jax.value_and_grad(loss)(params, X[idx], y[idx])
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

        self.step, self.predict = jax.jit(step), jax.jit(logits)
        self.rng = np.random.default_rng(spec["seed"])
        self._data: tuple | None = None
        self.kernels = f"jax {jax.__version__}, XLA:CPU ({jax.devices()[0].device_kind})"

    def n_params(self):
        return sum(int(w.size) + int(b.size) for w, b in self.params)

    def _arrays(self, X, y):
        if self._data is None or self._data[0] is not X:
            x = X.transpose(0, 2, 3, 1) if self.net == "cnn" else X
            self._data = (X, self.jnp.asarray(np.ascontiguousarray(x)), self.jnp.asarray(y.astype(np.int32)))
        return self._data[1:]

    def _run(self, X, y, order):
        Xd, yd = self._arrays(X, y)
        for start in range(0, len(order), self.bs):
            self.params, self.opt_state, _ = self.step(
                self.params, self.opt_state, Xd, yd, order[start : start + self.bs]
            )
        self.jax.block_until_ready(self.params)

    def warmup(self, X, y, batches):
        t = time.perf_counter()
        for b in _batch_shapes(len(X), self.bs):
            self._run(X, y, np.arange(b, dtype=np.int32))
        compile_seconds = time.perf_counter() - t
        self._run(X, y, np.arange(min(len(X), batches * self.bs), dtype=np.int32))
        return compile_seconds

    def epoch(self, X, y):
        self._run(X, y, self.rng.permutation(len(X)).astype(np.int32))

    def accuracy(self, X, y):
        x = X.transpose(0, 2, 3, 1) if self.net == "cnn" else X
        out = [
            np.asarray(self.predict(self.params, np.ascontiguousarray(x[i : i + 1000]))) for i in range(0, len(x), 1000)
        ]
        return float(np.mean(np.concatenate(out).argmax(1) == y))


class KerasPeer:
    compiled = True

    def __init__(self, spec):
        try:
            import keras
        except ImportError as e:  # keras missing, or its backend (TensorFlow by default) missing
            raise Skip(f"{e.name} is not installed in {sys.executable} ({INSTALL['keras']})") from e
        backend = keras.backend.backend()
        extra = ""
        if backend == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
            tf.config.threading.set_inter_op_parallelism_threads(spec["threads"])
            extra = f" / TensorFlow {tf.__version__}"
        elif backend == "torch":
            import torch

            torch.set_num_threads(spec["threads"])
        keras.utils.set_random_seed(spec["seed"])
        k = keras.layers
        if spec["net"] == "cnn":  # channels-last, Keras's native layout
            layers = [keras.Input((28, 28, 1)), k.Conv2D(32, 3, activation="relu"), k.MaxPooling2D(2)]
            layers += [k.Conv2D(64, 3, activation="relu"), k.MaxPooling2D(2), k.Flatten()]
            layers += [k.Dense(128, activation="relu"), k.Dense(10)]
        else:
            sizes = _sizes(spec)
            layers = [keras.Input((sizes[0],))] + [k.Dense(h, activation="relu") for h in sizes[1:-1]]
            layers.append(k.Dense(sizes[-1]))
        self.model = keras.Sequential(layers)
        opt = (
            keras.optimizers.Adam(spec["lr"])
            if spec["optimizer"] == "adam"
            else keras.optimizers.SGD(spec["lr"], momentum=spec["momentum"])
        )
        self.model.compile(
            optimizer=opt, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
        )
        self.net, self.bs, self._data = spec["net"], spec["batch_size"], {}
        self.kernels = f"Keras {keras.__version__} on {backend}{extra}"

    def n_params(self):
        return int(self.model.count_params())

    def _x(self, X):
        if id(X) not in self._data:
            x = X.transpose(0, 2, 3, 1) if self.net == "cnn" else X
            self._data[id(X)] = (X, np.ascontiguousarray(x))
        return self._data[id(X)][1]

    def warmup(self, X, y, batches):
        t = time.perf_counter()
        for b in _batch_shapes(len(X), self.bs):  # the first fit builds and traces the training step
            self.model.fit(self._x(X)[:b], y[:b], batch_size=self.bs, epochs=1, verbose=0)
        compile_seconds = time.perf_counter() - t
        n = min(len(X), batches * self.bs)
        self.model.fit(self._x(X)[:n], y[:n], batch_size=self.bs, epochs=1, verbose=0)
        return compile_seconds

    def epoch(self, X, y):
        self.model.fit(self._x(X), y, batch_size=self.bs, epochs=1, shuffle=True, verbose=0)

    def accuracy(self, X, y):
        return float(self.model.evaluate(self._x(X), y, batch_size=1024, verbose=0)[1])


class SklearnPeer:
    def __init__(self, spec):
        if spec["net"] == "cnn":
            raise Skip("scikit-learn has no convolutional networks")
        try:
            import sklearn
            from sklearn.neural_network import MLPClassifier
        except ImportError as e:
            raise Skip(f"scikit-learn is not installed in {sys.executable} ({INSTALL['scikit-learn']})") from e
        self.clf = MLPClassifier(
            hidden_layer_sizes=tuple(spec["hidden"]),
            batch_size=spec["batch_size"],
            learning_rate_init=spec["lr"],
            solver=spec["optimizer"],
            momentum=spec.get("momentum", 0.9),
            nesterovs_momentum=False,
            alpha=0.0,
            random_state=spec["seed"],
            shuffle=True,
        )
        self.classes = np.arange(spec["n_out"])
        self.bs = spec["batch_size"]
        self.kernels = f"scikit-learn {sklearn.__version__} on NumPy {np.__version__}"

    def n_params(self):  # known once the first partial_fit (the warm-up) has shaped the network
        return sum(int(a.size) for a in self.clf.coefs_ + self.clf.intercepts_)

    def warmup(self, X, y, batches):
        n = batches * self.bs
        self.clf.partial_fit(X[:n], y[:n], classes=self.classes)

    def epoch(self, X, y):
        self.clf.partial_fit(X, y)

    def accuracy(self, X, y):
        return float(np.mean(self.clf.predict(X) == y))


RUNNERS: dict[str, Any] = {
    "vecnn": VecnnPeer,
    "pytorch": TorchPeer,
    "torch.compile": TorchCompilePeer,
    "jax": JaxPeer,
    "keras": KerasPeer,
    "scikit-learn": SklearnPeer,
}


def _blas() -> list[dict] | str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl is not installed in this environment"
    keys = ("internal_api", "version", "num_threads", "architecture")
    return [
        {**{k: i.get(k) for k in keys}, "from": _owner(i.get("filepath") or "")}
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]


def _owner(path: str) -> str:
    """The package a shared library came with (``numpy.libs`` -> numpy), or its folder."""
    parts = Path(path).parts
    for i, part in enumerate(parts[:-1]):
        if part in ("site-packages", "dist-packages"):
            return parts[i + 1].removesuffix(".libs")
    return str(Path(path).parent)


def blas_text(blas) -> str:
    """``openblas 0.3.30 (2 threads, Haswell)``, one entry per BLAS library loaded."""
    if isinstance(blas, str):
        return blas
    if not blas:
        return "none loaded"
    return ", ".join(
        f"{b['internal_api']} {b['version']} ({b['num_threads']} threads, {b['architecture']}"
        + (f", from {b['from']})" if b.get("from") else ")")
        for b in blas
    )


# -- the worker (runs in the contender's environment) ---------------------------------------------
def worker_main(argv: list[str]) -> int:
    """Serve one contender on stdin/stdout: ``epoch`` trains one epoch, ``accuracy`` evaluates, ``quit`` ends."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("name", choices=PEERS)
    p.add_argument("--spec", required=True)
    p.add_argument("--data", required=True)
    a = p.parse_args(argv)
    spec = json.loads(a.spec)
    with np.load(a.data) as data:
        X, y, Xt, yt = (np.ascontiguousarray(data[k]) for k in ("X", "y", "Xt", "yt"))
    try:
        runner = RUNNERS[a.name](spec)
        compile_seconds = runner.warmup(X, y, spec["warmup_batches"])
        ready = {
            "ready": True,
            "compile_seconds": compile_seconds,
            "n_params": runner.n_params(),
            "kernels": runner.kernels,
            "blas": _blas(),
        }
    except Skip as e:
        print(json.dumps({"error": str(e)}), flush=True)
        return 0
    except Exception as e:  # a failed compilation, a framework that cannot run here: the reason, not a crash
        why = str(e).strip().splitlines()
        print(json.dumps({"error": f"{type(e).__name__}: {why[0] if why else ''}"}), flush=True)
        return 0
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "epoch":
            _reset_peak()
            before = _status_mib("VmRSS")
            t = time.perf_counter()
            runner.epoch(X, y)
            dt = time.perf_counter() - t
            print(json.dumps({"seconds": dt, "peak_increase_mib": _status_mib("VmHWM") - before}), flush=True)
        elif cmd == "accuracy":
            print(json.dumps({"accuracy": runner.accuracy(Xt, yt)}), flush=True)
        elif cmd == "quit":
            break
    return 0


# the worker is started by path with the contender's interpreter, which need not have vecnn installed
_BOOT = "import runpy, sys; sys.exit(runpy.run_path(sys.argv[1], run_name='vecnn_peer')['worker_main'](sys.argv[2:]))"


class Worker:
    """One contender's process, seen from the benchmark."""

    def __init__(self, name: str, python: str, spec: dict, data_path, threads: int, log_dir):
        self.name = name
        env = {
            **os.environ,
            **{k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
            "TF_CPP_MIN_LOG_LEVEL": "2",
            # a fresh inductor cache per run: compile seconds are a cold compilation, every run
            "TORCHINDUCTOR_CACHE_DIR": str(Path(log_dir) / "inductor-cache"),
        }
        self.log = Path(log_dir) / f"{name}.stderr"
        cmd = [python, "-c", _BOOT, __file__, name, "--spec", json.dumps(spec), "--data", str(data_path)]
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env
            )
        self.ready = self._read()
        if "error" in self.ready:
            self.close()
            raise Skip(self.ready["error"])

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                code = self.proc.wait()
                tail = [s for s in self.log.read_text(errors="replace").splitlines() if s.strip()][-1:]
                raise Skip(f"its worker died (exit code {code}){': ' + tail[0] if tail else ''}")
            if line.startswith("{"):  # anything else is a framework's own chatter on stdout
                return json.loads(line)

    def ask(self, cmd: str) -> dict:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        return self._read()

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


OPTION = {
    "vecnn": "vecnn",
    "pytorch": "torch",
    "torch.compile": "torch",
    "jax": "jax",
    "keras": "keras",
    "scikit-learn": "sklearn",
}


def check_python(name: str, python: str | None) -> str:
    """The interpreter for ``name``'s worker (default: this one); Skip if the path cannot run."""
    if not python:
        return sys.executable
    path = shutil.which(python) or python
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise Skip(f"--{OPTION[name]}-python {python}: no such interpreter")
    return path


def add_python_options(p) -> None:
    """``--jax-python``, ``--keras-python``, ``--torch-python``, ``--sklearn-python`` on an argparse parser."""
    for opt, what in (
        ("jax", "JAX and optax (the jax contender)"),
        ("keras", "Keras 3 and its backend, TensorFlow (the keras contender)"),
        ("torch", "PyTorch (the pytorch and torch.compile contenders)"),
        ("sklearn", "scikit-learn (the scikit-learn contender)"),
    ):
        p.add_argument(
            f"--{opt}-python", metavar="PYTHON", help=f"interpreter of an environment with {what}; default: this one"
        )


def pythons_from_args(a) -> dict[str, str | None]:
    return {name: getattr(a, f"{opt}_python", None) for name, opt in OPTION.items() if opt != "vecnn"}


def summarize(results: dict, n_samples: int) -> None:
    """Add medians, best epochs, samples/s and ``vecnn_speedup`` (median epoch time / vecnn's) in place."""
    import statistics

    for r in results.values():
        r["median_seconds"] = statistics.median(r["seconds"])
        r["best_seconds"] = min(r["seconds"])
        r["samples_per_second"] = n_samples / r["median_seconds"]
        r["peak_increase_mib_max"] = max(r["peak_increase_mib"])
    if "vecnn" in results:
        v = results["vecnn"]
        for r in results.values():
            r["vecnn_speedup"] = r["median_seconds"] / v["median_seconds"]
            r["vecnn_speedup_best"] = r["best_seconds"] / v["best_seconds"]


def _mib(x) -> str:
    return "" if x is None else f"{x:.1f}"


def format_table(results: dict, skipped: dict, extra=None) -> str:
    """The results table (one row per contender), then each contender's kernels and BLAS, then the skips.

    ``extra``: optional ``(header, cell(result) -> str)`` pairs appended as columns.
    """
    extra = extra or []
    head = f"{'contender':<15}{'median epoch':>13}{'best epoch':>12}{'samples/s':>11}{'vecnn is':>10}"
    head += f"{'test acc':>10}{'compile s':>11}{'peak RSS +MiB':>15}" + "".join(f"{h:>10}" for h, _ in extra)
    lines = [head]
    for n, r in results.items():
        ratio = r.get("vecnn_speedup")
        cs, mem = r.get("compile_seconds"), r.get("peak_increase_mib_max")
        lines.append(
            f"{n:<15}{r['median_seconds']:>11.3f} s{r['best_seconds']:>10.3f} s{r['samples_per_second']:>11,.0f}"
            f"{'' if ratio is None or n == 'vecnn' else f'{ratio:.2f}x':>10}{r['accuracy']:>10.4f}"
            f"{'' if cs is None else f'{cs:.1f}':>11}{_mib(r.get('peak_rss_increase_mb', mem)):>15}"
            + "".join(f"{cell(r):>10}" for _, cell in extra)
        )
    lines.append("(vecnn is: the contender's median epoch time / vecnn's, above 1 when vecnn is faster;")
    lines.append(" compile s: the first calls of each batch shape, apart from the epochs)")
    for n, r in results.items():
        lines.append(f"{n} ({r['n_params']:,} parameters): {r['kernels']}; BLAS: {blas_text(r['blas'])}")
    for n, why in skipped.items():
        lines.append(f"{n}: skipped, {why}")
    return "\n".join(lines)


def run_peers(
    names,
    spec: dict,
    data: tuple,
    epochs: int,
    pythons: dict | None = None,
    echo=None,
) -> tuple[dict, dict]:
    """Train every contender of ``names`` for ``epochs`` alternating epochs, each in its own worker.

    ``spec``: the network and training settings (``net`` "mlp" or "cnn", ``hidden``, ``n_in``,
    ``n_out``, ``optimizer``, ``lr``, ``momentum``, ``batch_size``, ``threads``, ``seed``,
    ``warmup_batches``); ``data``: ``(X, y, Xt, yt)``; ``pythons``: interpreter per contender;
    ``echo``: called with a progress line. Returns ``(results, skipped)``: per contender the epoch
    seconds, peak RSS increases, test accuracy, compile seconds, kernels and BLAS; per skipped
    contender the reason.
    """
    pythons = {canonical(k): v for k, v in (pythons or {}).items()}
    say = echo or (lambda s: None)
    X, y, Xt, yt = data
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    workers: list[Worker] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "data.npz"
        np.savez(data_path, X=X, y=y, Xt=Xt, yt=yt)
        try:
            for n in map(canonical, names):
                try:
                    if n == "scikit-learn" and spec["net"] == "cnn":
                        raise Skip("scikit-learn has no convolutional networks")
                    python = check_python(n, pythons.get(n))
                    say(f"  starting {n} ({python})")
                    w = Worker(n, python, spec, data_path, spec["threads"], tmp)
                except Skip as e:
                    skipped[n] = str(e)
                    say(f"  {n}: skipped, {e}")
                    continue
                workers.append(w)
                results[n] = {
                    "seconds": [],
                    "peak_increase_mib": [],
                    "compile_seconds": w.ready["compile_seconds"],
                    "n_params": w.ready["n_params"],
                    "kernels": w.ready["kernels"],
                    "blas": w.ready["blas"],
                }
            for epoch in range(epochs):
                for w in workers if epoch % 2 == 0 else workers[::-1]:  # alternate who goes first
                    if w.name in skipped:
                        continue
                    try:
                        r = w.ask("epoch")
                    except Skip as e:
                        skipped[w.name] = str(e)
                        del results[w.name]
                        continue
                    results[w.name]["seconds"].append(r["seconds"])
                    results[w.name]["peak_increase_mib"].append(r["peak_increase_mib"])
                    say(
                        f"  epoch {epoch + 1} {w.name:14s} {r['seconds']:8.2f} s"
                        f" {len(X) / r['seconds']:10,.0f} samples/s"
                    )
            for w in workers:
                if w.name in results:
                    try:
                        results[w.name]["accuracy"] = w.ask("accuracy")["accuracy"]
                    except Skip as e:
                        skipped[w.name] = str(e)
                        del results[w.name]
        finally:
            for w in workers:
                w.close()
    return results, skipped


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
