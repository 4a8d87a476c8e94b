"""Training callbacks: History, EarlyStopping, ModelCheckpoint and the progress bar.

The training loop calls ``on_train_begin``, ``on_epoch_begin``, ``on_batch_end``,
``on_epoch_end`` and ``on_train_end``; a callback stops training by setting
``model.stop_training = True``. Only ``ProgressBar`` writes to the terminal.
"""

from __future__ import annotations

import math
import sys


class Callback:
    model = None
    #: in a distributed fit (``vecnn.distributed``) only rank 0 runs this callback: set by
    #: callbacks that write files or print, which one rank does for all
    root_only = False

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_batch_end(self, batch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_end(self, logs=None): ...


class History(Callback):
    """Per-epoch metrics: ``history["loss"]``, ``history["val_accuracy"]``, ... (as in Keras)."""

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


def _resolve_mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"expected mode 'auto', 'min' or 'max', received {mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.endswith("r2")) else "min"
    return mode


class _Monitor(Callback):
    def __init__(self, monitor, mode, min_delta=0.0):
        self.monitor = monitor
        self.mode = _resolve_mode(monitor, mode)
        self.min_delta = abs(min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    def _value(self, logs):
        if self.monitor not in (logs or {}):
            raise ValueError(
                f"{type(self).__name__}: monitor={self.monitor!r} is not among the logged "
                f"metrics {sorted(logs or {})}; pass validation data to monitor 'val_*'"
            )
        return logs[self.monitor]

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    With ``restore_best_weights=True`` the model ends with the weights of its best epoch.
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto", restore_best_weights=True):
        super().__init__(monitor, mode, min_delta)
        self.patience = int(patience)
        self.restore_best_weights = restore_best_weights
        self.best_weights = None
        self.best_epoch = None
        self.stopped_epoch = None

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Save the model after each epoch to ``filepath`` (``{epoch}`` and metric names may be
    formatted in), or only when ``monitor`` improves if ``save_best_only``. Saves are atomic."""

    root_only = True

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        super().__init__(monitor, mode)
        self.filepath = str(filepath)
        self.save_best_only = save_best_only

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self._value(logs)
            if not self._improved(value):
                return
            self.best = value
        self.model.save(self.filepath.format(epoch=epoch + 1, **logs))


class ProgressBar(Callback):
    """A tqdm bar per epoch counting samples (its rate is samples per second), with the running
    loss and metrics of the batches already computed."""

    root_only = True

    def __init__(self, epochs, n_samples, file=None, mininterval=0.25):
        self.epochs, self.n = epochs, n_samples
        self.file = file or sys.stderr
        self.mininterval = mininterval
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.n,
            unit="samples",
            unit_scale=True,
            file=self.file,
            dynamic_ncols=True,
            desc=f"Epoch {epoch + 1}/{self.epochs}",
            mininterval=self.mininterval,
            leave=True,
        )
        self._last = 0.0

    def on_batch_end(self, batch, logs=None):
        bar = self.bar
        bar.update(logs["size"])
        # formatting the postfix costs more than a batch of a small net: only when it will show
        if bar.last_print_t != self._last or bar.n >= self.n:
            self._last = bar.last_print_t
            bar.set_postfix_str(_fmt(logs["running"]), refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.set_postfix_str(_fmt(logs), refresh=False)
            self.bar.close()
            self.bar = None


class EpochLogger(Callback):
    """One line per epoch on standard error (``fit(verbose=2)``)."""

    root_only = True

    def __init__(self, epochs, file=None):
        self.epochs, self.file = epochs, file or sys.stderr

    def on_epoch_end(self, epoch, logs=None):
        print(f"Epoch {epoch + 1}/{self.epochs} {_fmt(logs or {})}", file=self.file, flush=True)


def _fmt(logs: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in logs.items())
