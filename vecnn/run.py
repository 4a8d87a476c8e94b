"""A training run on disk: the directory ``vecnn train --out DIR`` writes and ``--resume`` reads.

Layout (DESIGN.md)::

    DIR/config.json                the full configuration of the run, the architecture it built
    DIR/checkpoints/epoch-NNN.vecnn weights + optimizer state + RNG state after epoch NNN
    DIR/metrics.jsonl              one JSON line per epoch: the loss and metrics, "lr" (the
                                   rate of the epoch's last step) and "seconds" (its wall time)
    DIR/model.vecnn                the final model
    DIR/plots/*.png                curves, confusion matrix, misclassified test images
    DIR/.lock                      held (``flock``) by the process training in DIR

Checkpoints are written atomically at the end of every epoch (and for epoch 0 before the
first), so a run killed at any moment resumes from its last finished epoch and ends with
exactly the weights of an uninterrupted run. Only the last ``keep`` checkpoints (default 3)
and the best one (lowest ``val_loss``, else ``loss``) are kept; ``keep=0`` keeps them all.

vecnn writes only into a directory that is missing, empty or one of its own runs
(``check_out_dir``), and one process at a time (``RunLock``): the lock is an ``flock`` on
``DIR/.lock``, which the operating system releases when the process ends however it ends,
so a killed run never leaves the directory locked. Temporary files a killed save left behind
(``.epoch-007.vecnn.XXXXXXXX.tmp``, written by ``vecnn.files.atomic_open``) are removed when the
next run in the directory starts and at every checkpoint (``clean_temporary``).

``config.json`` also records the ``versions`` of vecnn, Python, NumPy and the BLAS libraries
(threadpoolctl's ``internal_api``, ``version``, ``architecture``) of the process that last
wrote it: informative only, never compared, so a newer vecnn resumes an older run (and a run
written before this field existed).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from pathlib import Path

import numpy as np

from . import io, optim
from .callbacks import Callback

try:
    import fcntl
except ImportError:  # not POSIX: no locking (one run at a time is on the user)
    fcntl = None  # type: ignore[assignment]  # the module or None

CHECKPOINT_RE = re.compile(r"^epoch-(\d{3,})\.vecnn$")
#: vecnn's own temporary files (``files.atomic_open``: ``.<name>.<mkstemp's 8 characters>.tmp``)
TMP_RE = re.compile(r"^\.(?:epoch-\d{3,}\.vecnn|model\.vecnn|metrics\.jsonl|config\.json)\.[A-Za-z0-9_]{6,}\.tmp$")
#: names vecnn writes in a run directory
RUN_FILES = frozenset({"config.json", "checkpoints", "metrics.jsonl", "model.vecnn", "plots", ".lock"})
#: the value of ``config.json``'s "vecnn_run" key (it marks the directory as a vecnn run)
RUN_MARK = 1
#: checkpoints kept by default besides the best: the last this many
KEEP_CHECKPOINTS = 3
#: config.json is a few KB; a larger one is not vecnn's (and is not read into memory)
MAX_CONFIG_BYTES = 1024 * 1024


# -- the run directory: which one vecnn may write into, one process at a time ----------------
def _entries(run_dir: Path) -> list[str]:
    return sorted(os.listdir(run_dir))


def _only_leftovers(run_dir: Path) -> bool:
    """True when ``run_dir`` holds nothing but what a run killed before writing its
    configuration leaves: the lock file, temporary files, empty checkpoints/plots folders."""
    for name in _entries(run_dir):
        path = run_dir / name
        if name == ".lock" or TMP_RE.match(name):
            continue
        if name in ("checkpoints", "plots") and path.is_dir() and not path.is_symlink():
            if all(TMP_RE.match(n) for n in os.listdir(path)):
                continue
        return False
    return True


def is_run(run_dir) -> bool:
    """True when ``run_dir`` is one of vecnn's training runs: its ``config.json`` carries
    vecnn's mark (or, for runs written before the mark, it has a checkpoints folder too)."""
    run_dir = Path(run_dir)
    config = run_dir / "config.json"
    if not config.is_file():
        return False
    if _marked(config):
        return True
    # a run from before the mark: it saved its epoch-0 checkpoint before anything else
    return bool(checkpoints(run_dir)) and set(_entries(run_dir)) <= RUN_FILES | {
        n for n in _entries(run_dir) if TMP_RE.match(n)
    }


def _marked(config: Path) -> bool:
    """Whether ``config`` is a config.json that vecnn wrote (it carries the run mark)."""
    try:
        if config.stat().st_size > MAX_CONFIG_BYTES:
            return False
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("vecnn_run") == RUN_MARK


def check_out_dir(run_dir, resume: bool, flag: str = "--out", probe: bool = True) -> str:
    """Decide, without writing anything, whether a run may use ``run_dir``: returns "new"
    (missing, or empty apart from a killed run's leftovers) or "run" (one of vecnn's runs, for
    ``resume`` only). Raises ``ValueError`` naming the directory otherwise: a file, a path
    under a file, a directory with other content, a run when not resuming, or a run another
    process is training (``probe``: look at the lock; off for the lock's own holder). A run
    killed before it saved its first checkpoint counts as "new": a fresh start replaces it."""
    run_dir = Path(run_dir)
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists() or parent.is_symlink():
            if parent == run_dir and not parent.is_dir():
                raise ValueError(f"{flag} {run_dir}: exists and is not a directory")
            if not parent.is_dir():
                raise ValueError(f"{flag} {run_dir}: {parent} is a file, not a directory")
            break
    if not run_dir.exists():
        if resume:
            raise ValueError(f"--resume: {run_dir} does not exist; nothing to resume")
        return "new"
    if probe:
        RunLock.probe(run_dir)
    if is_run(run_dir):
        if (
            not resume
            and not checkpoints(run_dir)
            and not (run_dir / "model.vecnn").exists()
            and _marked(run_dir / "config.json")
        ):
            return "new"  # killed before its first checkpoint: nothing to lose, start over
        if not resume:
            raise ValueError(
                f"{flag} {run_dir}: a run is already there; pass --resume to continue it or choose another directory"
            )
        return "run"
    if _only_leftovers(run_dir):
        if resume:
            raise ValueError(
                f"--resume: {run_dir} has no config.json; the run there never started, "
                f"so there is nothing to resume (start it again without --resume)"
            )
        return "new"
    entries = _entries(run_dir)
    found, more = entries[:5], ", ..." if len(entries) > 5 else ""
    if resume:
        raise ValueError(
            f"--resume: {run_dir} is not a vecnn run directory (no vecnn config.json; "
            f"it holds {', '.join(found)}{more})"
        )
    raise ValueError(
        f"{flag} {run_dir}: the directory is not empty and is not a vecnn run (it holds "
        f"{', '.join(found)}{more}); vecnn writes only into a new or empty directory or "
        f"one of its own runs"
    )


class RunLock:
    """An exclusive ``flock`` on ``DIR/.lock`` for as long as the run lasts (``release`` or the
    process's end frees it). ``acquire`` raises ``ValueError`` when another process holds it."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.fd = None

    @staticmethod
    def _busy(run_dir) -> ValueError:
        return ValueError(
            f"another vecnn process is training in {run_dir}; wait for it to finish or choose another --out"
        )

    def acquire(self) -> "RunLock":
        if fcntl is None:
            return self
        fd = os.open(self.run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy(self.run_dir) from None
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    @classmethod
    def probe(cls, run_dir):
        """Raise if another process holds the lock of ``run_dir``; creates nothing."""
        if fcntl is None:
            return
        try:
            fd = os.open(Path(run_dir) / ".lock", os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise cls._busy(run_dir) from None
        finally:
            os.close(fd)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def start(run_dir, resume: bool) -> RunLock:
    """Create ``run_dir`` if needed, lock it, check again (under the lock) that it is what
    ``check_out_dir`` found, and remove temporary files a killed run left. Returns the held lock."""
    run_dir = Path(run_dir)
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).acquire()
    try:
        check_out_dir(run_dir, resume, probe=False)
        clean_temporary(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def clean_temporary(run_dir) -> list[Path]:
    """Remove vecnn's own temporary files (``TMP_RE``) from ``run_dir`` and its checkpoints
    folder: what a save killed midway leaves. Call it only while holding the run's lock (no
    other vecnn process is then writing there). Returns what was removed."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if TMP_RE.match(name):
                try:
                    (folder / name).unlink()
                    removed.append(folder / name)
                except FileNotFoundError:
                    pass
    return removed


# -- checkpoints --------------------------------------------------------------------------
def checkpoint_path(run_dir, epoch: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"epoch-{epoch:03d}.vecnn"


def checkpoints(run_dir) -> dict[int, Path]:
    """``{epoch: path}`` of the run's checkpoint files."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): folder / name for name in os.listdir(folder) if (m := CHECKPOINT_RE.match(name))}


def latest_checkpoint(run_dir) -> Path | None:
    found = checkpoints(run_dir)
    return found[max(found)] if found else None


def best_epoch(history: dict) -> int | None:
    """The epoch (counting from 1) with the lowest ``val_loss``, else ``loss``; None if none."""
    values = history.get("val_loss") or history.get("loss") or []
    finite = [(v, i + 1) for i, v in enumerate(values) if isinstance(v, (int, float)) and math.isfinite(v)]
    return min(finite)[1] if finite else None


def prune_checkpoints(run_dir, keep: int, history: dict) -> list[Path]:
    """Delete checkpoints but the last ``keep`` and the best (``best_epoch``); ``keep=0``
    keeps all. Returns the deleted paths."""
    if not keep:
        return []
    found = checkpoints(run_dir)
    kept = set(sorted(found)[-keep:])
    best = best_epoch(history)
    if best is not None:
        kept.add(best)
    deleted = []
    for epoch, path in sorted(found.items()):
        if epoch not in kept:
            try:
                path.unlink()
                deleted.append(path)
            except FileNotFoundError:
                pass
    return deleted


def save_checkpoint(model, path, epoch: int, history: dict, run_config: dict | None = None):
    opt = model.optimizer
    tensors = {f"optimizer.{k}": v for k, v in opt.state_dict().items()}  # io saves host copies
    meta = {
        "checkpoint": {
            "epoch": epoch,
            "optimizer": {"name": type(opt).__name__, "config": opt.config()},
            "rng": model.rng_states(),
            "history": history,
            "run_config": run_config,
        }
    }
    io.save_model(model, path, extra_tensors=tensors, extra_meta=meta)


def load_checkpoint(path):
    """``(model, epoch, history, run_config)``; the model has its optimizer and RNG state back.
    Raises ``ValueError`` naming the file for anything malformed."""
    tensors, meta = io.read_file(path)
    ck = meta.pop("checkpoint", None)
    if ck is None:
        raise ValueError(f"{path}: a model file, not a training checkpoint (no optimizer or RNG state)")
    model = io.model_from(tensors, {k: v for k, v in meta.items()}, str(path))
    model.metadata.pop("checkpoint", None)
    try:
        epoch, history, opt_meta = ck["epoch"], ck["history"], ck["optimizer"]
        name, opt_config, rng = opt_meta["name"], opt_meta["config"], ck["rng"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: malformed checkpoint metadata (missing {e})") from None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"{path}: checkpoint 'epoch' must be a non-negative integer, received {epoch!r}")
    if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
        raise ValueError(f"{path}: checkpoint 'history' must map metric names to lists")
    classes = {c.__name__: c for c in (optim.SGD, optim.Adam, optim.AdamW, optim.RMSProp)}
    if name not in classes:
        raise ValueError(f"{path}: unknown optimizer {name!r} in the checkpoint")
    try:
        opt = classes[name].from_config(opt_config)
        opt.load_state_dict({k[len("optimizer.") :]: v for k, v in tensors.items() if k.startswith("optimizer.")})
        model.set_rng_states(rng)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed optimizer or RNG state in the checkpoint ({e})") from None
    model.optimizer = opt
    return model, epoch, history, ck.get("run_config")


def architecture_difference(expected: list, found: list) -> str | None:
    """None when two architectures (``model.config()`` lists) are the same, else a short text
    naming the first difference."""
    norm = lambda a: json.loads(json.dumps(a))  # tuples -> lists, as in JSON files
    expected, found = norm(expected), norm(found)
    if expected == found:
        return None

    def show(spec):
        if not isinstance(spec, dict):
            return repr(spec)
        cfg = spec.get("config") or {}
        args = ", ".join(f"{k}={v}" for k, v in cfg.items()) if isinstance(cfg, dict) else repr(cfg)
        return f"{spec.get('name')}({args})"

    for i, (a, b) in enumerate(zip(expected, found)):
        if a != b:
            return f"layer {i}: the run has {show(a)}, the checkpoint {show(b)}"
    return f"the run has {len(expected)} layers, the checkpoint {len(found)}"


class RunRecorder(Callback):
    """At the end of every epoch: writes a checkpoint and the metrics file, then removes the
    checkpoints no longer kept (``prune_checkpoints``) and vecnn's leftover temporary files.

    The history it keeps (and saves in checkpoints) has the epoch logs (``lr`` among them) and
    ``seconds``, the epoch's wall time from its start to the end of validation. Its lists stay
    aligned by epoch: a figure that earlier epochs lack (a run written by an older vecnn,
    resumed) is NaN there, and ``null`` in metrics.jsonl."""

    root_only = True

    def __init__(self, run_dir, run_config: dict, history: dict | None = None, keep: int = KEEP_CHECKPOINTS):
        self.run_dir = Path(run_dir)
        self.run_config = run_config
        self.keep = keep
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self._start: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        figures = {k: float(v) for k, v in (logs or {}).items()}
        if self._start is not None:
            figures["seconds"] = round(time.perf_counter() - self._start, 3)
        done = max((len(v) for v in self.history.values()), default=0)  # epochs recorded before
        for k in [*self.history, *(k for k in figures if k not in self.history)]:  # in the order first logged
            values = self.history.setdefault(k, [])
            values += [math.nan] * (done - len(values))
            values.append(figures.get(k, math.nan))
        clean_temporary(self.run_dir)
        save_checkpoint(self.model, checkpoint_path(self.run_dir, epoch + 1), epoch + 1, self.history, self.run_config)
        write_metrics(self.run_dir, self.history)
        prune_checkpoints(self.run_dir, self.keep, self.history)


def write_metrics(run_dir, history: dict):
    """``metrics.jsonl`` from ``history`` (one list per figure, one entry per epoch): one JSON
    object per line, a non-finite figure (NaN: not recorded that epoch) written as ``null``."""
    n = max((len(v) for v in history.values()), default=0)

    def figure(v):
        return v if math.isfinite(v) else None

    lines = [
        json.dumps({"epoch": i + 1, **{k: figure(v[i]) for k, v in history.items() if i < len(v)}}) for i in range(n)
    ]
    io.atomic_write(Path(run_dir) / "metrics.jsonl", ("\n".join(lines) + "\n" if lines else "").encode())


# -- config.json ----------------------------------------------------------------------------
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _str_or_none(v):
    return v is None or isinstance(v, str)


#: every field of config.json: (check, what it must be). The same rules check the flags.
_F32_TINY, _F32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)

FIELDS = {
    "dataset": (_str_or_none, "a dataset name or null"),
    "data": (_str_or_none, "a file path or null"),
    "labels": (_str_or_none, "a file path or null"),
    "label_column": (lambda v: isinstance(v, str) or _is_int(v), "a column name or index"),
    "model": (lambda v: isinstance(v, str) and v.strip() != "", "a preset name or a layer spec string"),
    "epochs": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "lr": (
        lambda v: _is_number(v) and _F32_TINY <= v <= _F32_MAX,
        "a positive number that float32 holds (1.2e-38 to 3.4e38)",
    ),
    "optimizer": (lambda v: v in optim.OPTIMIZERS, "one of " + ", ".join(optim.OPTIMIZERS)),
    "schedule": (lambda v: v in ("cosine", "constant"), "cosine or constant"),
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**63, "a non-negative integer"),
    "val_split": (lambda v: _is_number(v) and 0 <= v < 1, "a fraction in [0, 1)"),
    "standardize": (lambda v: isinstance(v, bool), "true or false"),
    "augment": (_str_or_none, "an augmentation spec string or null"),
    "root": (_str_or_none, "a directory path or null"),
    "download": (lambda v: isinstance(v, bool), "true or false"),
    "threads": (lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer"),
    "workers": (lambda v: v == "auto" or (_is_int(v) and v >= 1), "a positive integer or 'auto'"),
    "keep_checkpoints": (lambda v: _is_int(v) and v >= 0, "a non-negative integer (0 keeps all)"),
    "architecture": (
        lambda v: isinstance(v, list) and all(isinstance(s, dict) for s in v),
        "a list of layer descriptions",
    ),
    "vecnn_run": (lambda v: v == RUN_MARK, f"{RUN_MARK}"),
    "device": (lambda v: v in ("cpu", "gpu"), "cpu or gpu"),
    "ranks": (lambda v: _is_int(v) and v >= 1, "a positive integer (MPI ranks)"),
}


def check_field(name: str, value, where: str):
    """Raise ``ValueError`` "<where>: expected ..., received ..." unless ``value`` is valid
    for field ``name``."""
    ok, what = FIELDS[name]
    if not ok(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ValueError(f"{where}: expected {what}, received {shown}")
    return value


def versions() -> dict:
    """The versions of what computes a run: vecnn, Python, NumPy and each BLAS library loaded
    (threadpoolctl's ``internal_api``, ``version`` and ``architecture``; an ``error`` entry when
    threadpoolctl cannot inspect the process)."""
    from . import __version__

    blas: list[dict] = []
    try:
        from threadpoolctl import threadpool_info

        blas = [
            {k: lib.get(k) for k in ("internal_api", "version", "architecture")}
            for lib in threadpool_info()
            if lib.get("user_api") == "blas"
        ]
    except Exception as e:  # recorded, not fatal: a run never fails over its provenance
        blas = [{"error": f"{type(e).__name__}: {e}"}]
    return {"vecnn": __version__, "python": platform.python_version(), "numpy": np.__version__, "blas": blas}


def write_config(run_dir, config: dict):
    """Write ``config.json``: ``config``, the run mark, and the ``versions`` of this process
    (replacing those of an earlier writer: a resumed run records what trains it now)."""
    data = {**config, "versions": versions(), "vecnn_run": RUN_MARK}
    io.atomic_write(Path(run_dir) / "config.json", (json.dumps(data, indent=2) + "\n").encode())


def read_config(run_dir, required=("model", "epochs")) -> dict:
    """The run's configuration, every field checked (``FIELDS``). Raises ``ValueError`` naming
    ``config.json`` and the field for a missing, unreadable, truncated or malformed file."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"--resume: {run_dir} has no config.json; is it a vecnn run directory?")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{path}: {size:,} bytes, more than a run's configuration takes "
            f"({MAX_CONFIG_BYTES:,}); the file is not vecnn's"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; the run's configuration is damaged") from None
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); the file is truncated or damaged") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deep for a run's configuration; the file is not vecnn's") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, received a JSON {type(config).__name__}")
    for name in required:
        if name not in config:
            raise ValueError(f"{path}: field {name!r} is missing")
    if config.get("dataset") is None and config.get("data") is None:
        raise ValueError(f"{path}: neither field 'dataset' nor 'data' names the training data")
    for name, value in config.items():
        if name in FIELDS:
            check_field(name, value, f"{path}: field {name!r}")
    return config


# -- plots ----------------------------------------------------------------------------------
def plots(run_dir, history: dict, X_test, y_test, y_pred, class_names) -> tuple[list[Path], list[str]]:
    """Write the run's PNG plots; returns ``(paths written, notes)``: a plot that cannot be
    drawn (too many classes, samples that are not images) or fails is skipped with a note, so
    a finished training never ends in a plotting error."""
    from . import limits
    from . import plots as P

    out = Path(run_dir) / "plots"
    made, notes = [], []

    def attempt(name, draw):
        try:
            made.append(draw())
        except Exception as e:  # a picture is never worth the run: say it, go on
            notes.append(
                f"{name} skipped: {e}" if isinstance(e, ValueError) else f"{name} failed ({type(e).__name__}: {e})"
            )

    if history:
        attempt("curves.png", lambda: P.curves(history, out / "curves.png"))
    if y_pred is not None and class_names:
        if len(class_names) > limits.MAX_PLOT_CLASSES:
            notes.append(
                f"confusion.png skipped: {len(class_names)} classes are more than the plot shows "
                f"(vecnn.limits.MAX_PLOT_CLASSES = {limits.MAX_PLOT_CLASSES})"
            )
        else:
            attempt("confusion.png", lambda: P.confusion(y_test, y_pred, class_names, out / "confusion.png"))
        if X_test.ndim >= 3:
            try:
                _, note = P.image_view(X_test.shape[1:])
            except ValueError as e:
                notes.append(f"misclassified.png skipped: {e}")
            else:
                if note:
                    notes.append(note)
                attempt(
                    "misclassified.png",
                    lambda: P.misclassified(X_test, y_test, y_pred, class_names, out / "misclassified.png"),
                )
    return made, notes
