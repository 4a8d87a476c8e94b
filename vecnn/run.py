"""A training run on disk: the directory ``vecnn train --out DIR`` writes and ``--resume`` reads.

Layout (DESIGN.md)::

    DIR/config.json                the full configuration of the run
    DIR/checkpoints/epoch-NNN.vecnn weights + optimizer state + RNG state after epoch NNN
    DIR/metrics.jsonl              one JSON line of metrics per epoch
    DIR/model.vecnn                the final model
    DIR/plots/*.png                curves, confusion matrix, misclassified test images

Checkpoints are written atomically at the end of every epoch (and for epoch 0 before the
first), so a run killed at any moment resumes from its last finished epoch and ends with
exactly the weights of an uninterrupted run.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from . import io, optim
from .callbacks import Callback

CHECKPOINT_RE = re.compile(r"epoch-(\d{3,})\.vecnn$")


def checkpoint_path(run_dir, epoch: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"epoch-{epoch:03d}.vecnn"


def latest_checkpoint(run_dir) -> Path | None:
    found = [(int(m.group(1)), p) for p in (Path(run_dir) / "checkpoints").glob("epoch-*.vecnn")
             if (m := CHECKPOINT_RE.search(p.name))]
    return max(found)[1] if found else None


def save_checkpoint(model, path, epoch: int, history: dict, run_config: dict | None = None):
    opt = model.optimizer
    tensors = {f"optimizer.{k}": np.asarray(v) for k, v in opt.state_dict().items()}
    meta = {"checkpoint": {
        "epoch": epoch,
        "optimizer": {"name": type(opt).__name__, "config": opt.config()},
        "rng": model.rng_states(),
        "history": history,
        "run_config": run_config,
    }}
    io.save_model(model, path, extra_tensors=tensors, extra_meta=meta)


def load_checkpoint(path):
    """``(model, epoch, history, run_config)``; the model has its optimizer and RNG state back."""
    tensors, meta = io.read_file(path)
    ck = meta.pop("checkpoint", None)
    if ck is None:
        raise ValueError(f"{path}: a model file, not a training checkpoint (no optimizer or RNG state)")
    model = io.model_from(tensors, {k: v for k, v in meta.items()}, str(path))
    model.metadata.pop("checkpoint", None)
    classes = {c.__name__: c for c in (optim.SGD, optim.Adam, optim.AdamW, optim.RMSProp)}
    name = ck["optimizer"]["name"]
    if name not in classes:
        raise ValueError(f"{path}: unknown optimizer {name!r} in the checkpoint")
    opt = classes[name].from_config(ck["optimizer"]["config"])
    opt.load_state_dict({k[len("optimizer."):]: v for k, v in tensors.items() if k.startswith("optimizer.")})
    model.optimizer = opt
    model.set_rng_states(ck["rng"])
    return model, int(ck["epoch"]), ck["history"], ck.get("run_config")


class RunRecorder(Callback):
    """Writes a checkpoint and the metrics file at the end of every epoch."""

    def __init__(self, run_dir, run_config: dict, history: dict | None = None):
        self.run_dir = Path(run_dir)
        self.run_config = run_config
        self.history = {k: list(v) for k, v in (history or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))
        save_checkpoint(self.model, checkpoint_path(self.run_dir, epoch + 1), epoch + 1, self.history, self.run_config)
        write_metrics(self.run_dir, self.history)


def write_metrics(run_dir, history: dict):
    n = max((len(v) for v in history.values()), default=0)
    lines = [json.dumps({"epoch": i + 1, **{k: v[i] for k, v in history.items() if i < len(v)}}) for i in range(n)]
    io.atomic_write(Path(run_dir) / "metrics.jsonl", ("\n".join(lines) + "\n" if lines else "").encode())


def write_config(run_dir, config: dict):
    io.atomic_write(Path(run_dir) / "config.json", (json.dumps(config, indent=2) + "\n").encode())


def read_config(run_dir) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ValueError(f"--resume: {run_dir} has no config.json; is it a vecnn run directory?")
    return json.loads(path.read_text())


def plots(run_dir, history: dict, X_test, y_test, y_pred, class_names) -> list[Path]:
    """Write the run's PNG plots; returns their paths."""
    from . import plots as P

    out = Path(run_dir) / "plots"
    made = [P.curves(history, out / "curves.png")]
    if y_pred is not None and class_names:
        made.append(P.confusion(y_test, y_pred, class_names, out / "confusion.png"))
        if X_test.ndim >= 3:
            made.append(P.misclassified(X_test, y_test, y_pred, class_names, out / "misclassified.png"))
    return made
