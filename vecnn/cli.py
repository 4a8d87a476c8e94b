"""The ``vecnn`` command: parses arguments, calls the library, prints.

Exit codes (DESIGN.md), decided in one place, ``exit_code``:

    0    success
    1    anything else (a bug, the environment, training that diverged): one line, no traceback
    2    bad usage or input: one line naming the flag, the spec token or the file
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# `vecnn train` flags that fix a run: --resume refuses to continue if one of them differs
RUN_KEYS = (
    "dataset",
    "data",
    "labels",
    "label_column",
    "model",
    "batch_size",
    "lr",
    "optimizer",
    "schedule",
    "seed",
    "val_split",
    "standardize",
    "augment",
)
# flags --resume may change: they say how to go on, not what the run is
RESUME_KEYS = ("epochs", "threads", "workers", "root", "download", "keep_checkpoints", "device")
TRAIN_DEFAULTS = {
    "dataset": "digits",
    "data": None,
    "labels": None,
    "label_column": "label",
    "model": "mlp",
    "epochs": None,
    "batch_size": 128,
    "lr": 1e-3,
    "optimizer": "adam",
    "schedule": "cosine",
    "seed": 0,
    "val_split": 0.1,
    "standardize": True,
    "augment": None,
    "root": None,
    "download": False,
    "threads": None,
    "workers": "auto",
    "keep_checkpoints": 3,
    "device": "cpu",
}
PRESET_EPOCHS = {"mlp": 20, "cnn": 20, "resnet": 10}
# --device: where the model computes ("auto": the GPU when there is one, else the CPU)
DEVICES = ("cpu", "gpu", "auto")


def _workers(text: str):
    """``--workers``: a positive integer or 'auto'."""
    from .bench.cli import positive_int  # stdlib-only module: no cost at startup

    return text if text == "auto" else positive_int(text)


def _checked(field: str, kind):
    """An argparse type for the `train` flag of run-config field ``field``: ``kind(text)``,
    then the same check ``config.json`` gets (``vecnn.run.FIELDS``)."""

    def parse(text):
        from .run import FIELDS

        ok, what = FIELDS[field]
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, received {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


class UsageError(ValueError):
    """Bad usage or input: exit code 2."""


def exit_code(e: BaseException) -> tuple[int, str]:
    """The exit code for an exception that ended a command, and the one line to print."""
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(e, ValueError):  # bad input: say what and where
        return EXIT_USAGE, f"error: {e}"
    if isinstance(e, OSError) and e.filename is not None:  # a file the user named (or made us write)
        where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
        return EXIT_USAGE, f"error: {where}: {e.strerror or type(e).__name__}"
    if isinstance(e, MemoryError):
        return EXIT_FAILURE, "out of memory" + (f": {e}" if str(e) else "")
    return EXIT_FAILURE, f"{type(e).__name__}: {e}"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the contract: exit 2, one line naming the flag),
    pointing at ``--help`` instead of printing the whole usage block."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    import vecnn

    p = _Parser(prog="vecnn", description="Train neural networks with fully vectorized NumPy code.")
    p.add_argument("--version", action="version", version=f"vecnn {vecnn.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a model (default: an MLP on the built-in digits)",
        description="Train a model and save it in a run directory. Ends with a line "
        "'test accuracy: 0.XXXX' on standard output.\n\n"
        "The run directory (--out) must be new, empty or one of vecnn's own runs, and "
        "only one process trains in it at a time (a lock). --resume continues a run "
        "from its last checkpoint; --epochs N with it trains on to epoch N.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="model spec tokens (comma separated; input sizes are inferred):\n"
        "  dense:UNITS  conv:OUT:KERNEL[:STRIDE[:PADDING]]  maxpool:K[:STRIDE]  "
        "avgpool:K[:STRIDE]\n"
        "  gap  flatten  bn  dropout:RATE  relu  leakyrelu[:SLOPE]  sigmoid  tanh  "
        "gelu[:tanh]  softmax\n"
        "example: vecnn train --dataset fashion-mnist "
        "--model dense:256,relu,dropout:0.2,dense:10\n\n"
        "exit codes: 0 success, 2 bad usage or input, 1 anything else, 130 interrupted",
    )
    # defaults are None so that --resume can tell which flags the user actually gave
    t.add_argument("--dataset", help="named dataset: digits (built in), fashion-mnist, mnist, kmnist (default: digits)")
    t.add_argument(
        "--data",
        metavar="FILE",
        help="your own data: .npz (x, y), .npy (X; labels in a sibling *_y.npy or --labels) or .csv",
    )
    t.add_argument("--labels", metavar="FILE", help="labels .npy for --data X.npy")
    t.add_argument("--label-column", help="CSV label column name or index (default: label)")
    t.add_argument("--root", metavar="DIR", help="look for the dataset only in DIR")
    t.add_argument(
        "--download",
        action="store_true",
        default=None,
        help="download the dataset if missing (checked against SHA-256)",
    )
    t.add_argument("--model", help="a preset (mlp, cnn, resnet) or a layer spec string (default: mlp)")
    t.add_argument(
        "--epochs",
        type=_checked("epochs", int),
        help="number of epochs (default: "
        + ", ".join(f"{n} for {m}" for m, n in PRESET_EPOCHS.items())
        + ", 20 for a spec string). With --resume: the epoch to train on to (more than the run "
        "has; a cosine schedule is then stretched to end at the new last epoch, continuing "
        "from the current step)",
    )
    t.add_argument("--batch-size", type=_checked("batch_size", int), help="mini-batch size (default: 128)")
    t.add_argument("--lr", type=_checked("lr", float), help="learning rate (default: 1e-3)")
    t.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "rmsprop"], help="(default: adam)")
    t.add_argument(
        "--schedule",
        choices=["cosine", "constant"],
        help="learning rate: cosine decay to 0 over the run, or constant (default: cosine)",
    )
    t.add_argument(
        "--seed",
        type=_checked("seed", int),
        help="seed of initialization, shuffles, dropout, augmentation (default: 0)",
    )
    t.add_argument(
        "--val-split",
        type=_checked("val_split", float),
        help="fraction of the training data held out for validation (default: 0.1)",
    )
    t.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_false",
        default=None,
        help="don't standardize inputs with training-set statistics",
    )
    t.add_argument("--augment", metavar="SPEC", help="augmentation, e.g. 'shift:2' or 'shift:2,flip'")
    t.add_argument("--threads", type=_checked("threads", int), help="BLAS threads (default: all cores)")
    t.add_argument(
        "--workers",
        type=_workers,
        help="threads that each train on a share of every batch (data parallel in this "
        "process); 'auto': one per BLAS thread for convolutional models (default: auto)",
    )
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<time>-<dataset>-<model>)")
    t.add_argument(
        "--device",
        choices=DEVICES,
        help="where to train: cpu, gpu (an NVIDIA GPU through CuPy: pip install "
        "'vecnn[gpu-cuda12]' or 'vecnn[gpu-cuda13]'), or auto (the GPU when there is one, "
        "else the CPU); recorded in config.json, and --resume continues on the recorded "
        "device unless given (default: cpu; `vecnn backends` says what is available)",
    )
    t.add_argument(
        "--keep-checkpoints",
        type=_checked("keep_checkpoints", int),
        metavar="N",
        help="keep the last N epoch checkpoints and the best one (lowest val_loss); 0 keeps "
        "every one (default: 3; recorded in config.json)",
    )
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="evaluate a saved model on a dataset's test split")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("--dataset", help="default: the dataset the model was trained on")
    e.add_argument("--data", metavar="FILE", help="evaluate on your own data file (all of it)")
    e.add_argument("--labels", metavar="FILE")
    e.add_argument("--label-column", default="label")
    e.add_argument("--root", metavar="DIR")
    e.add_argument("--device", choices=DEVICES, default="cpu", help="where to compute (default: cpu)")

    from .bench.cli import positive_int

    pr = sub.add_parser("predict", help="predict classes of arrays or image files")
    pr.add_argument("model", metavar="MODEL")
    pr.add_argument("inputs", metavar="INPUT", nargs="+", help=".npy/.npz arrays or image files (PNG, JPEG, ...)")
    pr.add_argument("--top", type=positive_int, default=3, help="show the top K classes (default: 3)")
    pr.add_argument("--invert", action="store_true", help="invert images (dark strokes on light paper)")
    pr.add_argument("--device", choices=DEVICES, default="cpu", help="where to compute (default: cpu)")

    sub.add_parser("datasets", help="list known datasets, where each was found or how to get it")

    b = sub.add_parser(
        "backends",
        help="say what computes here: backends, fused operations, BLAS",
        description="List the compute backends (numpy, numba, cupy), each in use, available "
        "or off and why; which backend serves each fused operation on the CPU "
        "and on the GPU; and the BLAS libraries loaded, with their kernels and "
        "threads.",
    )
    b.add_argument("--json", action="store_true", help="print vecnn.ops.report() as JSON")

    i = sub.add_parser("info", help="describe a saved model: layers, output shapes, parameters, FLOPs")
    i.add_argument("model", metavar="MODEL")

    ex = sub.add_parser(
        "export",
        help="export a saved model to ONNX and/or Keras 3",
        description="Write a saved model as an ONNX file (input 'input' with a dynamic batch axis; "
        "needs pip install 'vecnn[onnx]') and/or a Keras 3 .keras file taking the same input "
        "layout (needs pip install 'vecnn[keras]' and a Keras backend). Both give the model's "
        "outputs (logits for a classifier).",
    )
    ex.add_argument("model", metavar="MODEL")
    ex.add_argument("--onnx", metavar="OUT.onnx", help="write an ONNX file")
    ex.add_argument("--keras", metavar="OUT.keras", help="write a Keras 3 model file (.keras)")
    ex.add_argument("--opset", type=positive_int, help="ONNX opset (default: 17, with IR version 8)")

    from .bench import cli as bench_cli

    bench_cli.configure(
        sub.add_parser(
            "bench",
            help=bench_cli.HELP,
            description=bench_cli.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return p


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)  # argparse's own errors: exit 2 with usage
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    command = {
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "predict": cmd_predict,
        "datasets": cmd_datasets,
        "backends": cmd_backends,
        "info": cmd_info,
        "export": cmd_export,
        "bench": cmd_bench,
    }[args.command]
    shown = warnings.showwarning
    warnings.showwarning = lambda message, category, *_: print(  # one line each, like errors
        f"vecnn {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr
    )
    try:
        return _run(args, command)
    finally:
        warnings.showwarning = shown


def _run(args, command) -> int:
    try:
        _refuse_empty(args)
        code = command(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:  # `vecnn info m | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (Exception, KeyboardInterrupt) as e:
        code, line = exit_code(e)
        print(f"vecnn {args.command}: " + " ".join(line.split("\n")), file=sys.stderr)
        return code


def _refuse_empty(args) -> None:
    """An empty (or blank) name, path or spec is never what was meant: ``--data ''`` would
    otherwise fall back to the default dataset, ``--out ''`` to a new directory."""
    for key, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            flag = {"model": "MODEL", "inputs": "INPUT"}.get(key) if args.command != "train" else None
            flag = flag or f"--{key.replace('_', '-')}"
            raise UsageError(f"{flag}: empty; expected a name, a path or a value")


# -- data ---------------------------------------------------------------------------------
def _load_data(cfg: dict):
    """``(X_train, y_train, X_test, y_test, class_names, source)`` for a run configuration."""
    from . import data, limits

    if cfg.get("data"):
        X, y = data.load_arrays(cfg["data"], cfg.get("labels"), label_column=cfg.get("label_column") or "label")
        source = str(cfg["data"])
        if len(X) < 2:
            raise UsageError(
                f"--data {source}: {len(X)} sample(s); training needs at least 2 (one is held out for the test)"
            )
        if np.asarray(y).ndim != 1 or np.asarray(y).dtype.kind not in "iu":
            raise UsageError(
                f"--data {source}: expected one integer class label per sample, received labels "
                f"of shape {np.shape(y)} and dtype {np.asarray(y).dtype}"
            )
        top = int(y.max())
        # the output layer's width comes from the largest label: bounded before anything is built
        n_classes = limits.check_classes(f"--data {source} (largest label {top})", top + 1)
        if n_classes < 2:
            where = f"--labels {cfg['labels']}" if cfg.get("labels") else f"--data {source}"
            raise UsageError(f"{where}: every label is {top}; a classifier needs at least 2 classes")
        X_train, y_train, X_test, y_test = data.train_test_split(X, y, test_fraction=0.2, seed=cfg["seed"])
        return X_train, y_train, X_test, y_test, [str(c) for c in range(n_classes)], source
    name = cfg["dataset"]
    X_train, y_train, X_test, y_test = data.load(name, root=cfg.get("root"), download=bool(cfg.get("download")))
    return X_train, y_train, X_test, y_test, list(data.class_names(name)), name


def _split_validation(X, y, fraction, seed, source="the data"):
    if not fraction:
        return X, y, None
    if not 0 < fraction < 1:
        raise UsageError(f"--val-split: expected a fraction in [0, 1), received {fraction}")
    n_val = max(1, int(round(len(X) * fraction)))
    if n_val >= len(X):
        raise UsageError(
            f"--val-split {fraction} leaves {len(X) - n_val} of the {len(X)} training samples of "
            f"{source} for training; pass a smaller fraction (0 for no validation)"
        )
    perm = np.random.default_rng([seed, 1]).permutation(len(X))
    val, train = perm[:n_val], perm[n_val:]
    return X[train], y[train], (X[val], y[val])


def _build_model(cfg, X_train, n_classes, source="the data"):
    from . import layers as L
    from . import limits, presets, spec
    from .model import Sequential

    input_shape = tuple(X_train.shape[1:])
    if not input_shape or math.prod(input_shape) == 0:
        csv = " (a CSV needs at least one column besides the label)" if str(source).lower().endswith(".csv") else ""
        raise UsageError(f"{source} has no feature columns: each sample has shape {input_shape}{csv}")
    if cfg["model"] in presets.PRESETS:
        try:
            layers = presets.PRESETS[cfg["model"]](input_shape, n_classes)
        except ValueError as e:
            raise UsageError(f"--model {cfg['model']}: {e}") from None
    else:
        layers = spec.parse(cfg["model"], input_shape, batch_size=min(cfg["batch_size"], len(X_train)))
    if cfg["standardize"]:
        std = L.Standardize()
        std.adapt(X_train)  # statistics from the training split only
        layers = [std, *layers]
    model = Sequential(layers, seed=cfg["seed"])
    out = model.shapes(input_shape)[-1]
    if out != (n_classes,):
        raise UsageError(
            f"--model {cfg['model']!r}: the model outputs shape {out} per sample, "
            f"but the data has {n_classes} classes; end the spec with dense:{n_classes}"
        )
    model.metadata["input_shape"] = list(input_shape)
    # one batch's activations, their gradients and the layers' buffers (about four copies)
    per_sample = sum(math.prod(s) for s in model.shapes(input_shape)) + math.prod(input_shape)
    try:
        limits.check_memory(
            f"--batch-size {cfg['batch_size']} with --model {cfg['model']}: one batch's activations",
            4 * 4 * per_sample * min(cfg["batch_size"], len(X_train)),
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    return model


def _check_data_flags(cfg, given):
    """Refuse flags that would be ignored: --labels or --label-column without --data, --dataset
    with --data, --root or --download with --data."""
    if "dataset" in given and "data" in given:
        raise UsageError("--dataset and --data: give one, a named dataset or your own data file")
    if cfg.get("data"):
        for key in ("root", "download"):
            if given.get(key):
                raise UsageError(f"--{key}: only for named datasets, not with --data {cfg['data']}")
        return
    if cfg.get("dataset") == "digits":
        for key in ("root", "download"):
            if given.get(key):
                raise UsageError(f"--{key}: digits is built into vecnn; there is nothing to look for or download")
    for key in ("labels", "label_column"):
        if key in given:
            raise UsageError(
                f"--{key.replace('_', '-')}: only with --data FILE (your own data); the dataset "
                f"{cfg.get('dataset')!r} comes with its own labels"
            )


def _augment(cfg, X_fit):
    """The run's ``Augment``, checked against the images it will shift, or None."""
    if cfg.get("augment") is None:
        return None
    from .data import Augment

    try:
        augment = Augment.from_spec(cfg["augment"])
        augment.check_input(X_fit.shape[1:])
    except ValueError as e:
        raise UsageError(f"--augment {cfg['augment']!r}: {e}") from None
    return augment


def _steps(cfg, n_fit) -> int:
    return cfg["epochs"] * -(-n_fit // cfg["batch_size"])


def _same_weights(path, model) -> bool:
    """True when the model file at ``path`` holds exactly ``model``'s parameters and state."""
    from .io import load_model

    try:
        saved = load_model(path)
    except (ValueError, OSError):
        return False
    if saved.config() != model.config():
        return False
    return all(
        np.array_equal(a, b)
        for la, lb in zip(saved.layers, model.layers)
        for table in ("params", "state")
        for a, b in zip(getattr(la, table).values(), getattr(lb, table).values())
    )


def _check_checkpoint(ck, model, epoch, ck_cfg, saved, cfg, class_names):
    """Refuse a checkpoint that is not of this run (another architecture, classes, optimizer or
    settings), naming the difference."""
    from . import optim
    from . import run as R

    diffs = []
    named = int(R.CHECKPOINT_RE.match(ck.name).group(1))
    if named != epoch:
        diffs.append(f"its name says epoch {named} but it holds epoch {epoch}")
    if isinstance(saved.get("architecture"), list):
        diff = R.architecture_difference(saved["architecture"], model.config())
        if diff:
            diffs.append(f"another architecture ({diff})")
    if isinstance(ck_cfg, dict):
        diffs += [
            f"{k}: config.json has {saved.get(k)!r}, the checkpoint {ck_cfg.get(k)!r}"
            for k in RUN_KEYS
            if k in saved and ck_cfg.get(k) != saved.get(k)
        ]
    if model.class_names is not None and list(model.class_names) != list(class_names):
        diffs.append(f"other classes ({len(model.class_names)} in the checkpoint, {len(class_names)} in the data)")
    opt = model.optimizer
    if type(opt) is not optim.OPTIMIZERS[cfg["optimizer"]] or opt.lr != cfg["lr"]:
        diffs.append(
            f"optimizer {type(opt).__name__}(lr={opt.lr}), the run uses {cfg['optimizer']} with lr {cfg['lr']}"
        )
    if diffs:
        raise UsageError(f"--resume: {ck} is not a checkpoint of the run in {ck.parent.parent}: " + "; ".join(diffs))


def _warn_if_diverged(history, n_classes, lr):
    """One warning line (stderr; the exit code stays 0) when the training loss ended far above
    chance level (3x the loss of predicting every class equally likely, where an untrained
    network starts) or 1.5x above its first epoch's: the lr was too large to learn anything."""
    losses = [v for v in history.get("loss", []) if math.isfinite(v)]
    if not losses or n_classes < 2:
        return
    first, last, chance = losses[0], losses[-1], math.log(n_classes)
    # an untrained network starts near chance (a little above with large initial logits): 3x
    # chance is no longer a slow start
    if last > 3 * chance or (len(losses) > 1 and last > 1.5 * first):
        print(
            f"vecnn train: warning: the training loss ended at {last:.4g}, "
            + (
                f"far above chance level ({chance:.3f} for {n_classes} classes)"
                if last > 3 * chance
                else f"{last / first:.1f}x its first epoch's {first:.4g}"
            )
            + f": training diverged or learned nothing; try a smaller --lr (this run: {lr:g})",
            file=sys.stderr,
            flush=True,
        )


# -- train ----------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from . import distributed

    # under `mpiexec -n K` (K > 1) the ranks train one model data-parallel: rank 0 writes the
    # run directory and prints; a failure on any rank ends the whole job (MPI_Abort)
    comm = distributed.resolve("auto")
    with distributed.guard(comm, "vecnn train"), contextlib.ExitStack() as stack:
        # the stack releases the run's lock however the command ends
        return _train(args, stack, comm)


def _train(args, stack, comm=None) -> int:
    from . import backend, optim
    from . import run as R

    root = comm is None or comm.is_root  # the process that writes the run directory and prints
    given = {k: v for k, v in vars(args).items() if k in TRAIN_DEFAULTS and v is not None}
    if args.resume:
        if not args.out:
            raise UsageError("--resume needs --out RUN_DIR, the run directory to continue")
        out = Path(args.out)
        if comm is not None:
            comm.agree({"--out": str(out)}, "vecnn train")
        if root:
            R.check_out_dir(out, resume=True)
            stack.callback(R.start(out, resume=True).release)
        saved = R.read_config(out)
        diffs = [
            f"--{k.replace('_', '-')}: run has {saved.get(k)!r}, given {v!r}"
            for k, v in given.items()
            if k in RUN_KEYS and saved.get(k) != v
        ]
        if diffs:
            raise UsageError("cannot resume: the checkpoint was made with different settings: " + "; ".join(diffs))
        cfg = {**TRAIN_DEFAULTS, **saved, **{k: v for k, v in given.items() if k in RESUME_KEYS}}
    else:
        cfg = {**TRAIN_DEFAULTS, **given}
        if cfg.get("data"):
            cfg["dataset"] = None
        if cfg["epochs"] is None:
            cfg["epochs"] = PRESET_EPOCHS.get(cfg["model"], 20)
        out = (
            Path(args.out)
            if args.out
            else Path("runs")
            / (
                f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{cfg['dataset'] or 'data'}-"
                f"{cfg['model'] if cfg['model'].isidentifier() else 'spec'}"
            )
        )
        if comm is not None:  # rank 0's directory (a name from the clock may differ by a second)
            out = Path(comm.allgather_bytes(str(out).encode())[0].decode())
        if root:
            R.check_out_dir(out, resume=False)  # before loading anything; written only once the model is built
    _check_data_flags(cfg, given)
    cfg["ranks"] = comm.size if comm is not None else 1
    if comm is not None:
        import vecnn

        comm.agree(
            {
                "vecnn version": vecnn.__version__,
                "--out": str(out),
                "--resume": args.resume,
                **{f"--{k.replace('_', '-')}": cfg.get(k) for k in (*RUN_KEYS, "epochs", "device")},
            },
            "vecnn train",
        )
    device = _train_device(cfg, given, out, args.resume, comm)  # before any data is loaded or directory made
    if cfg.get("threads"):
        backend.set_num_threads(cfg["threads"])

    X_train, y_train, X_test, y_test, class_names, source = _load_data(cfg)
    X_fit, y_fit, val = _split_validation(X_train, y_train, cfg["val_split"], cfg["seed"], source)
    augment = _augment(cfg, X_fit)

    history, start = {}, 0
    model_path = out / "model.vecnn"
    if args.resume:
        ck = R.latest_checkpoint(out)
        if ck is None:
            raise UsageError(
                f"--resume: no checkpoint in {out / 'checkpoints'}: the run stopped before it saved "
                f"one; start it again without --resume"
            )
        model, start, history, ck_cfg = R.load_checkpoint(ck)
        _check_checkpoint(ck, model, start, ck_cfg, saved, cfg, class_names)
        target = cfg["epochs"]
        if start > target:
            if "epochs" in given:
                raise UsageError(
                    f"--epochs {target}: the run in {out} already has {start} epochs ({ck.name}); "
                    f"pass --epochs above {start} to train more"
                )
            raise UsageError(f"--resume: {ck} holds epoch {start}, past the {target} epochs of {out / 'config.json'}")
        if start == target and _same_weights(model_path, model):
            if not root:
                return EXIT_OK
            print(
                f"vecnn train: nothing to do: the run in {out} already has its {target} epochs and its "
                f"model.vecnn; pass --epochs N (N > {target}) to train more",
                file=sys.stderr,
            )
            return EXIT_OK
        schedule = model.optimizer.schedule
        steps = _steps(cfg, len(X_fit))
        if cfg["schedule"] == "cosine" and isinstance(schedule, optim.CosineLR) and schedule.total_steps != steps:
            # more (or fewer) epochs than the schedule was made for: it would sit at lr 0 past its end
            per_epoch = -(-len(X_fit) // cfg["batch_size"])
            print(
                f"vecnn train: note: the cosine learning-rate schedule, made for "
                f"{schedule.total_steps // per_epoch} epochs, now ends at epoch {target}",
                file=sys.stderr,
            )
            model.optimizer.schedule = optim.CosineLR(steps, min_lr=schedule.min_lr)
        if root:
            R.write_config(out, cfg)
            print(
                f"resuming {out} from {ck.name}: {start} of {target} epochs done; device "
                f"{_device_text(device)}{_ranks_text(comm)}",
                file=sys.stderr,
            )
    else:
        model = _build_model(cfg, X_fit, len(class_names), source)
        model.class_names = class_names
        model.metadata["dataset"] = cfg.get("dataset")
        schedule = optim.CosineLR(_steps(cfg, len(X_fit))) if cfg["schedule"] == "cosine" else None
        model.optimizer = optim.get(cfg["optimizer"], lr=cfg["lr"], schedule=schedule)
        from .losses import get as get_loss

        model.loss = get_loss("cross_entropy")
        cfg["architecture"] = model.config()
        if root:
            stack.callback(R.start(out, resume=False).release)
            R.write_config(out, cfg)
            R.save_checkpoint(model, R.checkpoint_path(out, 0), 0, {}, cfg)
        if not args.quiet and root:
            print(
                f"training {cfg['model']} on {source}: {len(X_fit):,} samples, {cfg['epochs']} epoch"
                f"{'s' if cfg['epochs'] != 1 else ''}, "
                f"device {_device_text(device)}{_ranks_text(comm)}; run directory {out}",
                file=sys.stderr,
                flush=True,
            )

    model.to(device.device)  # parameters, optimizer and layer state (the files stay host-side)

    recorder = R.RunRecorder(out, cfg, history, keep=cfg["keep_checkpoints"])
    try:
        if start < cfg["epochs"]:
            model.fit(
                X_fit,
                y_fit,
                batch_size=cfg["batch_size"],
                epochs=cfg["epochs"],
                initial_epoch=start,
                validation_data=val,
                callbacks=[recorder],
                augment=augment,
                verbose=0 if args.quiet else 1,
                workers=1 if comm is not None else cfg.get("workers", "auto"),
                distributed=comm or False,
            )
    except KeyboardInterrupt:
        if not root:
            return EXIT_INTERRUPTED
        ck = R.latest_checkpoint(out)
        named = R.CHECKPOINT_RE.match(ck.name) if ck is not None else None
        done = int(named.group(1)) if named else 0  # (epoch 0's is written before the first)
        print(
            f"\ninterrupted: the checkpoint after epoch {done} is saved in {ck}.\n"
            f"resume with: vecnn train --out {out} --resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except FloatingPointError as e:  # the settings made it diverge: bad input, exit 2
        ck = R.latest_checkpoint(out)
        raise UsageError(
            f"--lr {cfg['lr']:g} ({cfg['optimizer']}) with --model {cfg['model']}: {e}; "
            f"the last good checkpoint is {ck}"
        ) from None
    if not root:  # rank 0 saves, evaluates on the test set, plots and prints
        return EXIT_OK

    model.save(model_path)
    _warn_if_diverged(recorder.history, len(class_names), cfg["lr"])
    scores = model.evaluate(X_test, y_test)
    y_pred = model.predict(X_test).argmax(axis=1)
    _, notes = R.plots(out, recorder.history, X_test, y_test, y_pred, class_names)
    for note in notes:  # a plot is never worth the run: one line each
        print(f"vecnn train: note: plots: {note}", file=sys.stderr)
    sys.stderr.flush()
    print(f"test accuracy: {scores['accuracy']:.4f}", flush=True)
    print(f"saved model to {model_path} (run directory {out})", flush=True)
    return EXIT_OK


def _ranks_text(comm) -> str:
    if comm is None:
        return ""
    return f", {comm.size} MPI ranks ({comm.threads_per_rank()} BLAS thread(s) each)"


def _train_device(cfg, given, out, resume, comm=None):
    """The backend ``vecnn train`` computes on, from ``--device`` (or, resuming, the device in
    the run's config.json). Refused, with what is missing and how to get it, before anything is
    loaded or written: no run directory is left behind by a run that could never start.
    ``cfg["device"]`` becomes the device used ("cpu" or "gpu"), which config.json records."""
    from . import ops

    name = cfg.get("device")
    flag = f"--device {name}" if "device" in given else None
    if name not in DEVICES:  # a config.json edited by hand (run.FIELDS has no "device")
        raise UsageError(
            f"{out / 'config.json'}: field 'device': expected one of {', '.join(DEVICES)}, received {name!r}"
        )
    if flag is None:
        flag = f"--device {name}" + (f" (the run's, from {out / 'config.json'})" if resume else "")
    try:
        backend = ops.device(name)
        if comm is not None and backend.device == "gpu":
            ops.select_gpu(comm.local_rank)  # one rank per GPU of the node
    except ValueError as e:
        hint = "; pass --device cpu to continue it on the CPU" if resume and "device" not in given else ""
        raise UsageError(f"{flag}: {e}{hint}") from None
    workers = cfg.get("workers")
    if backend.device != "cpu" and workers != "auto" and workers is not None and workers > 1:
        raise UsageError(
            f"--workers {workers} with {flag}: workers split each batch across CPU threads; "
            f"a model on the {backend.device} trains with one worker (--workers 1 or auto)"
        )
    cfg["device"] = backend.device
    return backend


def _device_text(backend) -> str:
    return f"{backend.device} ({backend.name} backend)"


# -- evaluate / predict / info / datasets / backends --------------------------------------------
def _load_model(path, device=None):
    from .io import load_model

    model = load_model(path)
    if device is not None:
        try:
            model.to(device)
        except ValueError as e:
            raise UsageError(f"--device {device}: {e}") from None
    return model


def cmd_evaluate(args) -> int:
    if args.data and args.dataset:
        raise UsageError("--dataset and --data: give one, a named dataset or your own data file")
    if args.labels and not args.data:
        raise UsageError("--labels: only with --data FILE (your own data); a named dataset comes with its own labels")
    model = _load_model(args.model, args.device)
    if args.data:
        from . import data

        X, y = data.load_arrays(args.data, args.labels, label_column=args.label_column)
    else:
        name = args.dataset or model.metadata.get("dataset")
        if not name:
            raise UsageError(
                "evaluate: the model does not say which dataset it was trained on; pass --dataset or --data"
            )
        from . import data

        _, _, X, y = data.load(name, root=args.root)
    where = f"--data {args.data}" if args.data else f"dataset {name!r}"
    shape = model.metadata.get("input_shape")
    if shape and X.ndim == 2 and X.shape[1] == math.prod(shape) and len(shape) > 1:
        X = X.reshape(len(X), *shape)  # flat rows (a CSV) of the model's images
    try:
        scores = model.evaluate(X, y)
    except ValueError as e:
        raise UsageError(f"{where}: {e}") from None
    for k, v in scores.items():
        print(f"test {k}: {v:.4f}")
    return EXIT_OK


def _read_inputs(paths, input_shape, invert):
    """Stack the inputs into one batch: arrays as they are, images scaled to [0, 1] and resized
    to ``input_shape`` (``vecnn.data.inputs``: every file checked before it is allocated)."""
    from .data.inputs import read_inputs

    return read_inputs(paths, input_shape, invert)


def cmd_predict(args) -> int:
    model = _load_model(args.model, args.device)
    X, names = _read_inputs(args.inputs, model.metadata.get("input_shape"), args.invert)
    from .losses import BCEWithLogits, CrossEntropy

    if model.loss is not None and not isinstance(model.loss, (CrossEntropy, BCEWithLogits)):
        for name, row in zip(names, model.predict(X).reshape(len(X), -1)):  # a regression model
            print(f"{name}: " + ", ".join(f"{v:.4g}" for v in row[: max(1, args.top)]))
        return EXIT_OK
    proba = model.predict_proba(X)
    classes = model.class_names or [str(i) for i in range(proba.shape[1])]
    k = max(1, min(args.top, proba.shape[1]))
    top = np.argsort(-proba, axis=1)[:, :k]
    for name, row, idx in zip(names, proba, top):
        print(f"{name}: " + ", ".join(f"{classes[j]} {row[j]:.3f}" for j in idx))
    return 0


def cmd_info(args) -> int:
    model = _load_model(args.model)
    print(f"{args.model}: vecnn model, loss {model.loss!r}")
    if model.class_names:
        print(f"classes ({len(model.class_names)}): {', '.join(map(str, model.class_names))}")
    print(model.summary())
    return 0


def cmd_export(args) -> int:
    """``vecnn export MODEL --onnx OUT.onnx --keras OUT.keras``: the extras are imported, the
    output paths checked and both translations made before any file is written; each file is
    written atomically."""
    if not args.onnx and not args.keras:
        raise UsageError("export: nothing to write; give --onnx OUT.onnx and/or --keras OUT.keras")
    if args.opset is not None and not args.onnx:
        raise UsageError("--opset: only with --onnx OUT.onnx")
    if args.keras and Path(args.keras).suffix != ".keras":
        raise UsageError(f"--keras {args.keras}: expected a file name ending in .keras (Keras 3's format)")
    targets = [(flag, path) for flag, path in (("--onnx", args.onnx), ("--keras", args.keras)) if path]
    if args.onnx and args.keras and Path(args.onnx).resolve() == Path(args.keras).resolve():
        raise UsageError(f"--onnx and --keras: the same file {args.onnx}; give two paths")
    for flag, path in targets:
        target = Path(path)
        if target.is_dir() or (target.exists() and not target.is_file()):
            raise UsageError(f"{flag} {path}: exists and is not a regular file")
    from .interop import keras as vkeras
    from .interop import onnx as vonnx

    try:  # a missing extra is the user's setup to fix: exit 2, one line
        if args.onnx:
            vonnx.import_onnx()
            opset = vonnx.check_opset(args.opset, where="--opset")
        if args.keras:
            vkeras.import_keras()
    except ImportError as e:
        raise UsageError(str(e)) from None
    model = _load_model(args.model)

    def written(flag, path, write):
        try:
            write()
        except OSError as e:  # (the temporary file's name would say less than the path asked for)
            raise UsageError(f"{flag} {path}: cannot write: {e.strerror or e}") from None

    # both translations before either file: a layer one of them refuses leaves nothing written
    proto = vonnx.to_onnx(model, opset=opset) if args.onnx else None
    kmodel = vkeras.to_keras(model) if args.keras else None
    if proto is not None:
        from .files import atomic_write

        written("--onnx", args.onnx, lambda: atomic_write(args.onnx, proto.SerializeToString()))
        print(
            f"wrote {args.onnx} (ONNX opset {opset}, IR version {proto.ir_version}; input 'input', "
            f"output '{proto.graph.output[0].name}')"
        )
    if kmodel is not None:
        keras = vkeras.import_keras()  # (imported above)
        written("--keras", args.keras, lambda: vkeras.save(kmodel, args.keras))
        print(f"wrote {args.keras} (Keras {keras.__version__}, built on the {keras.backend.backend()} backend)")
    return EXIT_OK


def cmd_datasets(args) -> int:
    from . import data

    for line in data.describe():
        print(line)
    return 0


def cmd_backends(args) -> int:
    from . import ops

    info = ops.report()
    print(json.dumps(info, indent=2) if args.json else ops.format_report(info))
    return EXIT_OK


def cmd_bench(args) -> int:
    from .bench import cli as bench_cli

    return bench_cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
