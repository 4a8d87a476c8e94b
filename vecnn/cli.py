"""The ``vecnn`` command: parses arguments, calls the library, prints.

Exit codes: 0 success, 2 bad usage or input, 1 anything else (DESIGN.md).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

import numpy as np

# `vecnn train` flags that fix a run: --resume refuses to continue if one of them differs
RUN_KEYS = ("dataset", "data", "label_column", "model", "batch_size", "lr", "optimizer", "schedule", "seed",
            "val_split", "standardize", "augment")
TRAIN_DEFAULTS = {"dataset": "digits", "data": None, "label_column": "label", "model": "mlp", "epochs": None,
                  "batch_size": 128, "lr": 1e-3, "optimizer": "adam", "schedule": "cosine", "seed": 0, "val_split": 0.1,
                  "standardize": True, "augment": None, "root": None, "download": False, "threads": None,
                  "workers": "auto"}
PRESET_EPOCHS = {"mlp": 20, "cnn": 20, "resnet": 10}


def _workers(text: str):
    """``--workers``: a positive integer or 'auto'."""
    from .bench.cli import positive_int     # stdlib-only module: no cost at startup

    return text if text == "auto" else positive_int(text)


class UsageError(ValueError):
    """Bad usage or input: exit code 2."""


def _parser() -> argparse.ArgumentParser:
    import vecnn

    p = argparse.ArgumentParser(prog="vecnn", description="Train neural networks with fully vectorized NumPy code.")
    p.add_argument("--version", action="version", version=f"vecnn {vecnn.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model (default: an MLP on the built-in digits)",
                       description="Train a model and save it in a run directory. Ends with a line "
                                   "'test accuracy: 0.XXXX' on standard output.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="model spec tokens (comma separated; input sizes are inferred):\n"
                              "  dense:UNITS  conv:OUT:KERNEL[:STRIDE[:PADDING]]  maxpool:K[:STRIDE]  avgpool:K[:STRIDE]\n"
                              "  gap  flatten  bn  dropout:RATE  relu  leakyrelu[:SLOPE]  sigmoid  tanh  gelu  softmax\n"
                              "example: vecnn train --dataset fashion-mnist --model dense:256,relu,dropout:0.2,dense:10")
    # defaults are None so that --resume can tell which flags the user actually gave
    t.add_argument("--dataset", help="named dataset: digits (built in), fashion-mnist, mnist, kmnist (default: digits)")
    t.add_argument("--data", metavar="FILE", help="your own data: .npz (x, y), .npy (X; labels in a sibling *_y.npy or --labels) or .csv")
    t.add_argument("--labels", metavar="FILE", help="labels .npy for --data X.npy")
    t.add_argument("--label-column", help="CSV label column name or index (default: label)")
    t.add_argument("--root", metavar="DIR", help="look for the dataset only in DIR")
    t.add_argument("--download", action="store_true", default=None, help="download the dataset if missing (checked against SHA-256)")
    t.add_argument("--model", help="a preset (mlp, cnn, resnet) or a layer spec string (default: mlp)")
    t.add_argument("--epochs", type=int, help="number of epochs (default: "
                   + ", ".join(f"{n} for {m}" for m, n in PRESET_EPOCHS.items()) + ", 20 for a spec string)")
    t.add_argument("--batch-size", type=int, help="mini-batch size (default: 128)")
    t.add_argument("--lr", type=float, help="learning rate (default: 1e-3)")
    t.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "rmsprop"], help="(default: adam)")
    t.add_argument("--schedule", choices=["cosine", "constant"],
                   help="learning rate: cosine decay to 0 over the run, or constant (default: cosine)")
    t.add_argument("--seed", type=int, help="seed of initialization, shuffles, dropout, augmentation (default: 0)")
    t.add_argument("--val-split", type=float, help="fraction of the training data held out for validation (default: 0.1)")
    t.add_argument("--no-standardize", dest="standardize", action="store_false", default=None,
                   help="don't standardize inputs with training-set statistics")
    t.add_argument("--augment", metavar="SPEC", help="augmentation, e.g. 'shift:2' or 'shift:2,flip'")
    t.add_argument("--threads", type=int, help="BLAS threads (default: all cores)")
    t.add_argument("--workers", type=_workers,
                   help="threads that each train on a share of every batch (data parallel in this "
                        "process); 'auto': one per BLAS thread for convolutional models (default: auto)")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<time>-<dataset>-<model>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="evaluate a saved model on a dataset's test split")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("--dataset", help="default: the dataset the model was trained on")
    e.add_argument("--data", metavar="FILE", help="evaluate on your own data file (all of it)")
    e.add_argument("--labels", metavar="FILE")
    e.add_argument("--label-column", default="label")
    e.add_argument("--root", metavar="DIR")

    pr = sub.add_parser("predict", help="predict classes of arrays or image files")
    pr.add_argument("model", metavar="MODEL")
    pr.add_argument("inputs", metavar="INPUT", nargs="+", help=".npy/.npz arrays or image files (PNG, JPEG, ...)")
    pr.add_argument("--top", type=int, default=3, help="show the top K classes (default: 3)")
    pr.add_argument("--invert", action="store_true", help="invert images (dark strokes on light paper)")

    sub.add_parser("datasets", help="list known datasets, where each was found or how to get it")

    i = sub.add_parser("info", help="describe a saved model: layers, output shapes, parameters, FLOPs")
    i.add_argument("model", metavar="MODEL")

    from .bench import cli as bench_cli

    bench_cli.configure(sub.add_parser("bench", help=bench_cli.HELP, description=bench_cli.DESCRIPTION,
                                       formatter_class=argparse.RawDescriptionHelpFormatter))
    return p


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                "datasets": cmd_datasets, "info": cmd_info, "bench": cmd_bench}[args.command](args)
    except ValueError as e:           # bad input: say what and where, no traceback
        print(f"vecnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vecnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:            # a bug or an environment problem: still one clear line
        print(f"vecnn {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


# -- data ---------------------------------------------------------------------------------
def _load_data(cfg: dict):
    """``(X_train, y_train, X_test, y_test, class_names, source)`` for a run configuration."""
    from . import data

    if cfg.get("data"):
        X, y = data.load_arrays(cfg["data"], cfg.get("labels"), label_column=cfg.get("label_column") or "label")
        X_train, y_train, X_test, y_test = data.train_test_split(X, y, test_fraction=0.2, seed=cfg["seed"])
        classes = [str(c) for c in range(int(max(y_train.max(), y_test.max())) + 1)]
        return X_train, y_train, X_test, y_test, classes, str(cfg["data"])
    name = cfg["dataset"]
    X_train, y_train, X_test, y_test = data.load(name, root=cfg.get("root"), download=bool(cfg.get("download")))
    return X_train, y_train, X_test, y_test, list(data.class_names(name)), name


def _split_validation(X, y, fraction, seed):
    if not fraction:
        return X, y, None
    if not 0 < fraction < 1:
        raise UsageError(f"--val-split: expected a fraction in [0, 1), received {fraction}")
    perm = np.random.default_rng([seed, 1]).permutation(len(X))
    n_val = max(1, int(round(len(X) * fraction)))
    val, train = perm[:n_val], perm[n_val:]
    return X[train], y[train], (X[val], y[val])


def _build_model(cfg, X_train, n_classes):
    from . import layers as L
    from . import presets, spec
    from .model import Sequential

    input_shape = tuple(X_train.shape[1:])
    if cfg["model"] in presets.PRESETS:
        layers = presets.PRESETS[cfg["model"]](input_shape, n_classes)
    else:
        layers = spec.parse(cfg["model"], input_shape)
    if cfg["standardize"]:
        std = L.Standardize()
        std.adapt(X_train)                     # statistics from the training split only
        layers = [std, *layers]
    model = Sequential(layers, seed=cfg["seed"])
    out = model.shapes(input_shape)[-1]
    if out != (n_classes,):
        raise UsageError(f"--model {cfg['model']!r}: the model outputs shape {out} per sample, "
                         f"but the data has {n_classes} classes; end the spec with dense:{n_classes}")
    model.metadata["input_shape"] = list(input_shape)
    return model


# -- train ----------------------------------------------------------------------------------
def cmd_train(args) -> int:
    from . import backend, optim
    from . import run as R

    given = {k: v for k, v in vars(args).items() if k in TRAIN_DEFAULTS and v is not None}
    if args.resume:
        if not args.out:
            raise UsageError("--resume needs --out RUN_DIR, the run directory to continue")
        saved = R.read_config(args.out)
        diffs = [f"--{k.replace('_', '-')}: run has {saved.get(k)!r}, given {v!r}"
                 for k, v in given.items() if k in RUN_KEYS and saved.get(k) != v]
        if diffs:
            raise UsageError("cannot resume: the checkpoint was made with different settings:\n  " + "\n  ".join(diffs))
        cfg = {**saved, **{k: v for k, v in given.items() if k in ("epochs", "threads", "workers", "root", "download")}}
    else:
        cfg = {**TRAIN_DEFAULTS, **given}
        if cfg.get("data"):
            cfg["dataset"] = None
        if cfg["epochs"] is None:
            cfg["epochs"] = PRESET_EPOCHS.get(cfg["model"], 20)
    cfg["labels"] = args.labels if args.labels is not None else cfg.get("labels")
    for key in ("epochs", "batch_size"):
        if cfg[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')}: expected a positive integer, received {cfg[key]}")
    if cfg.get("threads"):
        backend.set_num_threads(cfg["threads"])

    X_train, y_train, X_test, y_test, class_names, source = _load_data(cfg)
    X_fit, y_fit, val = _split_validation(X_train, y_train, cfg["val_split"], cfg["seed"])
    augment = None
    if cfg.get("augment"):
        from .data import Augment

        augment = Augment.from_spec(cfg["augment"])

    out = Path(args.out) if args.out else Path("runs") / (
        f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{source if cfg.get('dataset') else 'data'}-"
        f"{cfg['model'] if cfg['model'].isidentifier() else 'spec'}")
    history, start = {}, 0
    if args.resume:
        ck = R.latest_checkpoint(out)
        if ck is None:
            raise UsageError(f"--resume: no checkpoint in {out / 'checkpoints'}")
        model, start, history, _ = R.load_checkpoint(ck)
        print(f"resuming {out} from {ck.name} (epoch {start} of {cfg['epochs']})", file=sys.stderr)
    else:
        if out.exists() and (out / "config.json").exists():
            raise UsageError(f"--out {out}: a run is already there; pass --resume to continue it or choose another directory")
        model = _build_model(cfg, X_fit, len(class_names))
        model.class_names = class_names
        model.metadata["dataset"] = cfg.get("dataset")
        steps = cfg["epochs"] * -(-len(X_fit) // cfg["batch_size"])
        schedule = optim.CosineLR(steps) if cfg["schedule"] == "cosine" else None
        model.optimizer = optim.get(cfg["optimizer"], lr=cfg["lr"], schedule=schedule)
        from .losses import get as get_loss

        model.loss = get_loss("cross_entropy")
        out.mkdir(parents=True, exist_ok=True)
        R.write_config(out, cfg)
        R.save_checkpoint(model, R.checkpoint_path(out, 0), 0, {}, cfg)

    recorder = R.RunRecorder(out, cfg, history)
    try:
        if start < cfg["epochs"]:
            model.fit(X_fit, y_fit, batch_size=cfg["batch_size"], epochs=cfg["epochs"], initial_epoch=start,
                      validation_data=val, callbacks=[recorder], augment=augment, verbose=0 if args.quiet else 1,
                      workers=cfg.get("workers", "auto"))
    except KeyboardInterrupt:
        ck = R.latest_checkpoint(out)
        done = R.CHECKPOINT_RE.search(ck.name).group(1) if ck else "none"
        print(f"\ninterrupted: the checkpoint after epoch {int(done)} is saved in {ck}.\n"
              f"resume with: vecnn train --out {out} --resume", file=sys.stderr)
        return 130

    model_path = out / "model.vecnn"
    model.save(model_path)
    scores = model.evaluate(X_test, y_test)
    y_pred = model.predict(X_test).argmax(axis=1)
    R.plots(out, recorder.history, X_test, y_test, y_pred, class_names)
    sys.stderr.flush()
    print(f"test accuracy: {scores['accuracy']:.4f}", flush=True)
    print(f"saved model to {model_path} (run directory {out})", flush=True)
    return 0


# -- evaluate / predict / info / datasets -------------------------------------------------------
def _load_model(path):
    from .io import load_model

    return load_model(path)


def cmd_evaluate(args) -> int:
    model = _load_model(args.model)
    if args.data:
        from . import data

        X, y = data.load_arrays(args.data, args.labels, label_column=args.label_column)
    else:
        name = args.dataset or model.metadata.get("dataset")
        if not name:
            raise UsageError("evaluate: the model does not say which dataset it was trained on; pass --dataset or --data")
        from . import data

        _, _, X, y = data.load(name, root=args.root)
    scores = model.evaluate(X, y)
    for k, v in scores.items():
        print(f"test {k}: {v:.4f}")
    return 0


def _read_inputs(paths, input_shape, invert):
    """Stack the inputs into one batch: arrays as they are, images resized to ``input_shape``."""
    batches, names = [], []
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"predict: no such file {p}")
        if p.suffix in (".npy", ".npz"):
            arr = np.load(p, allow_pickle=False)
            if p.suffix == ".npz":
                arr = arr[arr.files[0]]
            arr = np.asarray(arr, np.float32)
            if input_shape and arr.shape == tuple(input_shape):
                arr = arr[None]
            batches.append(arr)
            names += [f"{p.name}[{i}]" for i in range(len(arr))]
            continue
        from PIL import Image, UnidentifiedImageError

        if not input_shape or len(input_shape) != 3:
            raise UsageError(f"predict: {p.name} is an image but the model does not take images (input {input_shape})")
        c, h, w = input_shape
        try:
            img = Image.open(p).convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
        except (UnidentifiedImageError, OSError) as e:
            raise UsageError(f"predict: cannot read {p} as an image ({e})") from None
        a = np.asarray(img, np.float32) / 255.0
        a = a[None] if c == 1 else np.moveaxis(a, -1, 0)
        batches.append((1 - a if invert else a)[None])
        names.append(p.name)
    return np.concatenate(batches), names


def cmd_predict(args) -> int:
    model = _load_model(args.model)
    X, names = _read_inputs(args.inputs, model.metadata.get("input_shape"), args.invert)
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


def cmd_datasets(args) -> int:
    from . import data

    for line in data.describe():
        print(line)
    return 0


def cmd_bench(args) -> int:
    from .bench import cli as bench_cli

    return bench_cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
