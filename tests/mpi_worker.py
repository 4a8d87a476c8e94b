"""Run by tests/test_distributed.py, under ``mpiexec -n K`` or as one plain process.

``python mpi_worker.py MODE OUT_DIR``; every rank writes ``OUT_DIR/<mode>_rank<r>.npz`` (what it
trained, and what it saw), so the test compares ranks with each other and with one process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import vecnn as vn
from vecnn import distributed, io
from vecnn import layers as L


def digits(n=None):
    X, y, _, _ = vn.data.load("digits")
    return (X, y) if n is None else (X[:n], y[:n])


def mlp(seed=3):
    return vn.Sequential([L.Flatten(), L.Dense(64, 32), L.ReLU(), L.Dense(32, 10)], seed=seed)


def cnn(seed=3):
    return vn.Sequential(
        [L.Conv2D(1, 4, 3, padding=1), L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dense(64, 10)], seed=seed
    )


class RecordingDropout(L.Dropout):
    """Dropout that keeps every mask it drew (to compare ranks)."""

    masks: list

    def forward(self, x, training=False):
        y = super().forward(x, training)
        if training:
            self.masks.append(np.asarray(self._mask).copy())
        return y


def rank():
    return distributed.world().rank


def save(out, mode, **arrays):
    np.savez(Path(out) / f"{mode}_rank{rank()}.npz", **arrays)


def weights(model, prefix=""):
    return {prefix + k: v for k, v in io.model_tensors(model).items()}


def same(out):
    """MLP and CNN, 2 epochs, global batch 32: the weights (the test compares 2 ranks with 1).
    Started without ``mpiexec`` it trains in one process with ``workers=2``: the batch split in
    the same two shares as across 2 ranks, so the float32 sums run in the same order."""
    X, y = digits(600)
    launched = distributed.launched()
    arrays = {}
    for name, make in (("mlp", mlp), ("cnn", cnn)):
        model = make()
        h = model.fit(X, y, optimizer=vn.optim.Adam(lr=1e-2), epochs=2, batch_size=32, seed=5, verbose=0,
                      validation_data=(X[:100], y[:100]), workers=1 if launched else 2,
                      distributed=launched)  # fmt: skip
        arrays.update(weights(model, name + "/"))
        arrays[name + "/loss"] = np.array(h.history["loss"])
        arrays[name + "/val_loss"] = np.array(h.history["val_loss"])
    save(out, "same", **arrays)


def dropout(out):
    """A Dropout network: every rank's masks and the weights."""
    X, y = digits(256)
    drop = RecordingDropout(0.5)
    drop.masks = []
    model = vn.Sequential([L.Flatten(), L.Dense(64, 32), L.ReLU(), drop, L.Dense(32, 10)], seed=1)
    model.fit(X, y, epochs=2, batch_size=64, seed=2, verbose=0, distributed=True)
    save(out, "dropout", masks=np.stack(drop.masks), **weights(model))


def batchnorm(out):
    """One SGD step of a BatchNorm network on 8 rows: the weights every rank ends with."""
    X, y = digits(8)
    model = vn.Sequential([L.Flatten(), L.Dense(64, 16), L.BatchNorm1D(16), L.ReLU(), L.Dense(16, 10)], seed=4)
    model.fit(X, y, optimizer=vn.optim.SGD(lr=0.5), epochs=1, batch_size=8, shuffle=False, verbose=0,
              distributed=True)  # fmt: skip
    save(out, "batchnorm", **weights(model))


def refusals(out):
    """What a distributed fit refuses, each on every rank: the messages, as JSON."""
    X, y = digits(200)
    comm = distributed.world()
    cases = {
        "batch_size": lambda: mlp().fit(X, y, batch_size=1, verbose=0, distributed=True),
        "workers": lambda: mlp().fit(X, y, workers=2, verbose=0, distributed=True),
        "data": lambda: mlp().fit(X + comm.rank, y, verbose=0, distributed=True),
        "architecture": lambda: (mlp() if comm.rank == 0 else cnn()).fit(X, y, verbose=0, distributed=True),
        "seed": lambda: mlp().fit(X, y, seed=comm.rank, verbose=0, distributed=True),
    }
    messages = {}
    for name, case in cases.items():
        try:
            case()
            messages[name] = None
        except ValueError as e:
            messages[name] = str(e)
    (Path(out) / f"refusals_rank{comm.rank}.json").write_text(json.dumps(messages))


class Fail(vn.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if rank() == 1 and epoch == 1:
            raise RuntimeError("disk on fire")


def fail(out):
    """An exception on rank 1 alone, in its second epoch, while rank 0 goes on."""
    X, y = digits()
    mlp().fit(X, y, epochs=50, batch_size=32, callbacks=[Fail()], verbose=0, distributed=True)
    save(out, "fail")  # never reached


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    {"same": same, "dropout": dropout, "batchnorm": batchnorm, "refusals": refusals, "fail": fail}[mode](out)
