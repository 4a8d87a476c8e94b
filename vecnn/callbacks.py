"""Training callbacks: History, EarlyStopping, ModelCheckpoint, the learning-rate callbacks
(ReduceLROnPlateau, LearningRateScheduler), CSVLogger and the progress output.

The training loop calls ``on_train_begin``, ``on_epoch_begin``, ``on_batch_end``,
``on_epoch_end`` and ``on_train_end``; a callback stops training by setting
``model.stop_training = True``. Only ``ProgressBar`` and ``EpochLogger`` write to the terminal
(and the learning-rate callbacks, when asked with ``verbose=1``).

The epoch logs every callback sees hold the loss and metrics, ``val_*`` with validation data,
and ``lr``: the learning rate of the epoch's last step (``Optimizer.current_lr``; ``History``,
the first callback of every ``fit``, adds it).

Learning rate and schedules: the learning-rate callbacks never change the optimizer's ``lr``
(its configured base rate) nor its ``schedule``; they set ``Optimizer.lr_scale``, a multiplier
on top of the scheduled rate. A step's rate is ``lr_scale * schedule(step, lr)``, so a
``CosineLR`` keeps its shape and a plateau reduction scales it down from there on.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time

import numpy as np


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
        # the first callback of every fit: the rate goes into the logs every later one sees
        opt = getattr(self.model, "optimizer", None)
        if logs is not None and opt is not None:
            logs.setdefault("lr", opt.current_lr())
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


def _check_number(owner, name, value, low=0, integer=False):
    """``value`` as a float (an int if ``integer``) at least ``low``, else a ``ValueError``
    naming ``owner``'s argument ``name``."""
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not (ok and not isinstance(value, bool) and math.isfinite(value) and value >= low):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{owner}: expected {name} to be {kind} >= {low}, received {name}={value!r}")
    return int(value) if integer else float(value)


def _check_verbose(owner, verbose):
    if isinstance(verbose, bool) or verbose not in (0, 1):
        raise ValueError(f"{owner}: expected verbose 0 or 1, received {verbose!r}")
    return int(verbose)


def _optimizer(callback):
    opt = getattr(callback.model, "optimizer", None)
    if opt is None:
        raise ValueError(f"{type(callback).__name__}: the model has no optimizer; use it as a callback of fit")
    return opt


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs (Keras's ``ReduceLROnPlateau``: same arguments, same decisions).

    With a schedule on the optimizer (``CosineLR``, ...), the reduction multiplies the scheduled
    rate from then on (``Optimizer.lr_scale``): the schedule keeps its shape, scaled down.
    ``min_lr`` bounds the reductions: one never takes the rate of the last step below it, and
    none happens once that rate is at or below it (a schedule may still decay further).

    Parameters
    ----------
    monitor : str
        A key of the epoch logs (``val_loss``, ``loss``, ``val_accuracy``, ...).
    factor : float
        In (0, 1): the new rate is ``rate * factor``.
    patience : int
        Epochs without improvement before the rate is reduced.
    mode : "auto", "min" or "max"
        Whether smaller or larger is better ("auto": larger for accuracies and r2).
    min_delta : float
        An improvement is a change by more than this.
    cooldown : int
        Epochs after a reduction during which epochs without improvement are not counted.
    min_lr : float
        The rate is never reduced below this.
    verbose : 0 or 1
        1: one line on standard error at each reduction.
    """

    def __init__(
        self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4, cooldown=0, min_lr=0.0,
        verbose=0,
    ):  # fmt: skip
        name = "ReduceLROnPlateau"
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"{name}: expected monitor to be the name of a logged metric, received {monitor!r}")
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 < factor < 1:
            raise ValueError(
                f"{name}: expected factor in (0, 1) (the rate is multiplied by it), received factor={factor!r}"
            )
        min_delta = _check_number(name, "min_delta", min_delta)
        super().__init__(monitor, mode, min_delta)
        self.factor = float(factor)
        self.patience = _check_number(name, "patience", patience, integer=True)
        self.cooldown = _check_number(name, "cooldown", cooldown, integer=True)
        self.min_lr = _check_number(name, "min_lr", min_lr)
        self.verbose = _check_verbose(name, verbose)
        self.wait = 0
        self.cooldown_counter = 0

    def on_train_begin(self, logs=None):
        self.wait, self.cooldown_counter = 0, 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                opt = _optimizer(self)
                old = opt.current_lr()
                # compared as the float32 rates the step uses (as Keras does): a rate reduced
                # to min_lr is not reduced again over a rounding difference
                if np.float32(old) > np.float32(self.min_lr):
                    new = max(old * self.factor, self.min_lr)
                    opt.lr_scale *= new / old
                    if self.verbose:
                        print(
                            f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:.4g}.",
                            file=sys.stderr,
                            flush=True,
                        )
                    self.cooldown_counter, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch to ``schedule(epoch, lr)`` (Keras's
    ``LearningRateScheduler``): ``epoch`` counts from 0 (from ``initial_epoch`` when resuming),
    ``lr`` is the rate in force (the optimizer's ``lr`` times ``lr_scale``), and the returned
    rate, a number >= 0, is in force from then on.

    With a schedule on the optimizer (``CosineLR``, ...) the returned rate takes the place of
    the optimizer's base rate: the schedule is applied on top of it (``Optimizer.lr_scale``).

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch: int, lr: float) -> float``.
    verbose : 0 or 1
        1: one line on standard error at each change.
    """

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise ValueError(
                f"LearningRateScheduler: expected schedule to be a function schedule(epoch, lr) -> lr, "
                f"received {schedule!r}"
            )
        self.schedule = schedule
        self.verbose = _check_verbose("LearningRateScheduler", verbose)

    def on_epoch_begin(self, epoch, logs=None):
        opt = _optimizer(self)
        lr = opt.lr * opt.lr_scale
        new = self.schedule(epoch, lr)
        value = None
        if not isinstance(new, (bool, str, bytes)):
            try:  # a Python or NumPy number
                value = float(new)
            except (TypeError, ValueError):
                pass
        if value is None or not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"LearningRateScheduler: schedule({epoch}, {lr:g}) must return a learning rate "
                f"(a finite number >= 0), returned {new!r}"
            )
        new = value
        opt.lr_scale = new / opt.lr
        if self.verbose and new != lr:
            print(
                f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {new:.4g}.",
                file=sys.stderr,
                flush=True,
            )


class CSVLogger(Callback):
    """One row per epoch in a CSV file: ``epoch`` (counting from 1, as ``metrics.jsonl`` and the
    progress bar do) and every key of the epoch logs (loss, metrics, ``val_*``, ``lr``), in the
    order of the first epoch's logs, which also makes the header.

    Each row is written, flushed and synced to disk at the end of its epoch: a crash loses no
    finished epoch. With ``append=True`` rows go after an existing file's; when that file's
    header lacks some of this run's keys, the file is first rewritten (atomically) with those
    columns added, empty in the old rows (``NA``), so every row matches the header. In a
    distributed fit only rank 0 writes (``root_only``).

    Parameters
    ----------
    filename : str or path
    separator : str
        One character between fields.
    append : bool
        Add to an existing file instead of replacing it.
    """

    root_only = True

    def __init__(self, filename, separator=",", append=False):
        if not isinstance(filename, (str, os.PathLike)) or not str(filename):
            raise ValueError(f"CSVLogger: expected filename to be a file path, received {filename!r}")
        if not isinstance(separator, str) or len(separator) != 1 or separator in '"\r\n':
            raise ValueError(
                f"CSVLogger: expected separator to be one character (not a quote or newline), received {separator!r}"
            )
        if not isinstance(append, bool):
            raise ValueError(f"CSVLogger: expected append True or False, received {append!r}")
        self.filename = os.fspath(filename)
        self.separator, self.append = separator, append
        self.keys: list[str] | None = None

    def _write(self, text, mode="a"):
        try:
            with open(self.filename, mode, encoding="utf-8", newline="") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise ValueError(f"CSVLogger: cannot write filename={self.filename!r} ({e.strerror or e})") from None

    def _line(self, values) -> str:
        buf = io.StringIO()
        csv.writer(buf, delimiter=self.separator, lineterminator="\n").writerow(values)
        return buf.getvalue()

    def _existing(self) -> list[list[str]]:
        try:
            with open(self.filename, encoding="utf-8", newline="") as f:
                return [row for row in csv.reader(f, delimiter=self.separator) if row]
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise ValueError(f"CSVLogger: cannot read filename={self.filename!r} to append to it ({e})") from None

    def on_train_begin(self, logs=None):
        self.keys = None
        if not self.append:
            self._write("", "w")  # replace an old file now, and fail now on a path we cannot write

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = ["epoch", *(k for k in logs if k != "epoch")]
            rows = self._existing() if self.append else []
            if rows:
                header = rows[0]
                added = [k for k in self.keys if k not in header]
                if added:  # widen the old file so that old and new rows match one header
                    from .files import atomic_write

                    width = len(header)
                    lines = [self._line(header + added)]
                    lines += [self._line(r + [""] * (width - len(r)) + ["NA"] * len(added)) for r in rows[1:]]
                    atomic_write(self.filename, "".join(lines).encode())
                    header = header + added
                self.keys = header
            else:
                self._write(self._line(self.keys), "w")
        values = {"epoch": epoch + 1, **{k: v for k, v in logs.items() if k != "epoch"}}
        self._write(self._line([_csv_value(values.get(k, "NA")) for k in self.keys]))


def _csv_value(v):
    if isinstance(v, float):
        return repr(v)
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # a NumPy scalar
        return repr(v.item())
    return v


def _interactive(stream) -> bool:
    """Whether ``stream`` shows a live bar: a terminal, or a Jupyter kernel's own output
    (which tqdm.auto draws as a widget)."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
    return "ipykernel" in sys.modules and stream in (sys.stderr, sys.stdout)


class ProgressBar(Callback):
    """A tqdm bar per epoch counting samples (its rate is samples per second), with the running
    loss and metrics of the batches already computed.

    When ``file`` (default: standard error) is not a terminal, a file or a pipe, no bar is drawn:
    one line per epoch (as Keras does), with the samples, seconds, samples/s and the epoch's
    logs, so a log file gets no carriage-return frames."""

    root_only = True

    def __init__(self, epochs, n_samples, file=None, mininterval=0.25):
        self.epochs, self.n = epochs, n_samples
        self.file = file or sys.stderr
        self.mininterval = mininterval
        self.bar = None
        self.live: bool | None = None

    def on_train_begin(self, logs=None):
        self.live = _interactive(self.file)

    def on_epoch_begin(self, epoch, logs=None):
        if self.live is None:
            self.live = _interactive(self.file)
        self._start = time.perf_counter()
        if not self.live:
            return
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
        if bar is None:  # one line per epoch: nothing to draw before the end
            return
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
        elif not self.live:
            seconds = time.perf_counter() - self._start
            rate = self.n / seconds if seconds > 0 else math.inf
            print(
                f"Epoch {epoch + 1}/{self.epochs} {self.n:,}/{self.n:,} samples {seconds:.1f}s {rate:,.0f} samples/s "
                f"{_fmt(logs or {})}",
                file=self.file,
                flush=True,
            )


class EpochLogger(Callback):
    """One line per epoch on standard error (``fit(verbose=2)``)."""

    root_only = True

    def __init__(self, epochs, file=None):
        self.epochs, self.file = epochs, file or sys.stderr

    def on_epoch_end(self, epoch, logs=None):
        print(f"Epoch {epoch + 1}/{self.epochs} {_fmt(logs or {})}", file=self.file, flush=True)


def _fmt(logs: dict) -> str:
    # the rate spans decades (1e-5 ... 1): significant digits, not decimals
    return " ".join(f"{k}={v:.4g}" if k == "lr" else f"{k}={v:.4f}" for k, v in logs.items())
