"""Callbacks: ReduceLROnPlateau and LearningRateScheduler against Keras's own, the learning rate
in the epoch logs, CSVLogger's file, the progress output when standard error is not a terminal,
and the run files of `vecnn train` (lr and seconds in metrics.jsonl, versions in config.json,
runs written before them resumed)."""

import csv
import io
import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import vecnn as vn
from vecnn import layers as L
from vecnn import run as R
from vecnn.callbacks import Callback, ProgressBar
from vecnn.cli import main


def tiny(seed=0, n=48):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    model = vn.Sequential([L.Dense(4, 8), L.ReLU(), L.Dense(8, 2)], seed=seed)
    return model, X, y


def fit(model, X, y, optimizer, callbacks, epochs=4, **kw):
    kw.setdefault("verbose", 0)
    return model.fit(
        X, y, loss="cross_entropy", optimizer=optimizer, epochs=epochs, batch_size=16, callbacks=callbacks, seed=0, **kw
    )


def cosine(step, total, base):  # CosineLR written out again
    return 0.5 * base * (1 + math.cos(math.pi * min(step - 1, total) / total))


# -- the learning-rate callbacks against Keras's ------------------------------------------------
@pytest.fixture(scope="module")
def keras():
    import importlib.util

    if importlib.util.find_spec("keras") is None:  # (not imported here: import_keras picks the backend)
        pytest.skip("keras is not installed: pip install 'vecnn[keras]'")
    from vecnn.interop.keras import import_keras

    try:
        return import_keras()  # with a backend that is installed
    except ImportError as e:
        pytest.skip(str(e))


# monitored values, epoch after epoch: plateaus, small (below min_delta) and real improvements
VALUES = [1.0, 0.9, 0.9, 0.89995, 0.95, 0.7, 0.7, 0.71, 0.72, 0.69999, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]


KERAS_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # its torch backend's, not ours


@KERAS_WARNINGS
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(factor=0.5, patience=1),
        dict(factor=0.5, patience=2, cooldown=2),
        dict(factor=0.1, patience=1, min_lr=0.002),  # reaches min_lr and stays there
        dict(factor=0.3, patience=0, min_delta=0.05),
        dict(factor=0.5, patience=1, mode="max"),
    ],
)
def test_reduce_lr_on_plateau_decides_as_keras_does(keras, kwargs):
    ours = vn.ReduceLROnPlateau(monitor="val_loss", **{"mode": "min", **kwargs})
    theirs = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", **{"mode": "min", **kwargs})
    model, _, _ = tiny()
    model.optimizer = vn.optim.SGD(lr=0.1)
    ours.set_model(model)
    theirs.set_model(types.SimpleNamespace(optimizer=keras.optimizers.SGD(learning_rate=0.1)))
    ours.on_train_begin()
    theirs.on_train_begin()
    rates = []
    for epoch, v in enumerate(VALUES):
        ours.on_epoch_end(epoch, {"val_loss": v})
        theirs.on_epoch_end(epoch, {"val_loss": v})
        rates.append((model.optimizer.current_lr(), float(theirs.model.optimizer.learning_rate)))
    ours_lr, theirs_lr = zip(*rates)
    np.testing.assert_allclose(ours_lr, theirs_lr, rtol=1e-6)  # Keras keeps the rate in float32
    assert len(set(np.float32(theirs_lr))) > 1  # the sequence did make it reduce
    assert model.optimizer.lr == 0.1  # the base rate stays; the multiplier carries the reductions


@KERAS_WARNINGS
def test_learning_rate_scheduler_sets_what_keras_sets(keras):
    def schedule(epoch, lr):
        return lr * 0.5 if epoch % 3 == 2 else (0.05 if epoch == 4 else lr)

    ours, theirs = vn.LearningRateScheduler(schedule), keras.callbacks.LearningRateScheduler(schedule)
    model, _, _ = tiny()
    model.optimizer = vn.optim.Adam(lr=0.1)
    ours.set_model(model)
    theirs.set_model(types.SimpleNamespace(optimizer=keras.optimizers.Adam(learning_rate=0.1)))
    for epoch in range(3, 9):  # a resumed fit starts at initial_epoch
        ours.on_epoch_begin(epoch)
        theirs.on_epoch_begin(epoch)
        keras_lr = float(theirs.model.optimizer.learning_rate)
        assert model.optimizer.current_lr() == pytest.approx(keras_lr, rel=1e-6)


def test_the_scheduled_rate_is_the_rate_the_steps_take():
    """SGD (no momentum) with lr 0.01 and a scheduler returning 0.02 trains exactly as SGD with
    lr 0.02; returning 0 freezes the weights."""
    model, X, y = tiny()
    fit(model, X, y, vn.optim.SGD(lr=0.01), [vn.LearningRateScheduler(lambda e, lr: 0.02)], epochs=2)
    reference, _, _ = tiny()
    fit(reference, X, y, vn.optim.SGD(lr=0.02), [], epochs=2)
    np.testing.assert_array_equal(model.flat_params, reference.flat_params)
    frozen, _, _ = tiny()
    before = frozen.flat_params.copy()
    history = fit(frozen, X, y, vn.optim.SGD(lr=0.01), [vn.LearningRateScheduler(lambda e, lr: 0.0)], epochs=2)
    np.testing.assert_array_equal(frozen.flat_params, before)
    assert history.history["lr"] == [0.0, 0.0]


def test_a_plateau_reduction_scales_a_cosine_schedule():
    """Every epoch after the first counts as no improvement (min_delta is huge): the logged rate
    of epoch e is the cosine rate of its last step times factor ** (reductions before it)."""
    model, X, y = tiny()
    steps_per_epoch, epochs, factor = 3, 5, 0.5
    total = steps_per_epoch * epochs
    opt = vn.optim.Adam(lr=0.01, schedule=vn.optim.CosineLR(total))
    cb = vn.ReduceLROnPlateau(monitor="loss", factor=factor, patience=1, min_delta=1e9)
    history = fit(model, X, y, opt, [cb], epochs=epochs)
    expected = [cosine((e + 1) * steps_per_epoch, total, 0.01) * factor ** max(0, e - 1) for e in range(epochs)]
    np.testing.assert_allclose(history.history["lr"], expected, rtol=1e-12)
    assert opt.lr == 0.01 and opt.schedule.total_steps == total  # the schedule is left as given
    # the multiplier is saved with the optimizer and comes back
    again = vn.optim.Adam.from_config(json.loads(json.dumps(opt.config())))
    assert again.lr_scale == opt.lr_scale == factor ** (epochs - 1)
    assert "lr_scale" not in vn.optim.Adam(lr=0.01).config()  # files without a reduction are as before


def test_lr_is_in_the_logs_every_callback_sees():
    seen = []

    class Spy(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(dict(logs))

    model, X, y = tiny()
    history = fit(model, X, y, vn.optim.Adam(lr=3e-3), [Spy()], epochs=2, validation_data=(X, y))
    assert [s["lr"] for s in seen] == history.history["lr"] == [3e-3, 3e-3]
    assert set(seen[0]) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: vn.ReduceLROnPlateau(factor=1.0), "factor"),
        (lambda: vn.ReduceLROnPlateau(factor=0), "factor"),
        (lambda: vn.ReduceLROnPlateau(patience=-1), "patience"),
        (lambda: vn.ReduceLROnPlateau(patience=1.5), "patience"),
        (lambda: vn.ReduceLROnPlateau(cooldown=-2), "cooldown"),
        (lambda: vn.ReduceLROnPlateau(min_lr=-1e-3), "min_lr"),
        (lambda: vn.ReduceLROnPlateau(min_lr=float("nan")), "min_lr"),
        (lambda: vn.ReduceLROnPlateau(min_delta=-0.1), "min_delta"),
        (lambda: vn.ReduceLROnPlateau(mode="up"), "mode"),
        (lambda: vn.ReduceLROnPlateau(monitor=3), "monitor"),
        (lambda: vn.ReduceLROnPlateau(verbose=2), "verbose"),
        (lambda: vn.LearningRateScheduler(0.1), "schedule"),
        (lambda: vn.LearningRateScheduler(lambda e, lr: lr, verbose="yes"), "verbose"),
        (lambda: vn.CSVLogger(None), "filename"),
        (lambda: vn.CSVLogger("x.csv", separator=";;"), "separator"),
        (lambda: vn.CSVLogger("x.csv", separator='"'), "separator"),
        (lambda: vn.CSVLogger("x.csv", append="yes"), "append"),
    ],
)
def test_bad_arguments_are_named(make, needle):
    with pytest.raises(ValueError, match=needle):
        make()


@pytest.mark.parametrize("bad", [-0.1, float("inf"), float("nan"), "0.1", None, True])
def test_a_schedule_returning_no_rate_is_named(bad):
    model, X, y = tiny()
    with pytest.raises(ValueError, match=r"schedule\(0, 0.01\) must return a learning rate"):
        fit(model, X, y, vn.optim.SGD(lr=0.01), [vn.LearningRateScheduler(lambda e, lr: bad)], epochs=1)


def test_monitoring_a_metric_that_is_not_logged_is_named():
    model, X, y = tiny()
    with pytest.raises(ValueError, match="monitor='val_loss'"):
        fit(model, X, y, vn.optim.SGD(lr=0.01), [vn.ReduceLROnPlateau()], epochs=1)


# -- CSVLogger ----------------------------------------------------------------------------------
def read_csv(path, separator=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=separator))


def test_csv_logger_writes_every_epoch_of_the_history(tmp_path):
    path = tmp_path / "log.csv"
    model, X, y = tiny()
    history = fit(model, X, y, vn.optim.Adam(lr=1e-2), [vn.CSVLogger(path, separator=";")], validation_data=(X, y))
    rows = read_csv(path, ";")
    assert rows[0] == ["epoch", *history.history]  # loss, accuracy, val_loss, val_accuracy, lr
    assert [int(r[0]) for r in rows[1:]] == [1, 2, 3, 4]
    for j, key in enumerate(rows[0][1:], start=1):
        assert [float(r[j]) for r in rows[1:]] == history.history[key]  # exact: repr round-trips
    assert vn.CSVLogger.root_only  # one rank writes in a distributed fit


def test_csv_logger_replaces_or_appends(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("old content\n")
    model, X, y = tiny()
    fit(model, X, y, vn.optim.Adam(lr=1e-2), [vn.CSVLogger(path)], epochs=2)
    first = read_csv(path)
    assert len(first) == 3 and first[0][0] == "epoch"  # the old file is replaced
    fit(model, X, y, vn.optim.Adam(lr=1e-2), [vn.CSVLogger(path, append=True)], epochs=3, initial_epoch=2)
    rows = read_csv(path)
    assert rows[:3] == first and rows[0] == first[0]  # one header, the old rows untouched
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]


def test_csv_logger_widens_an_older_header_when_appending(tmp_path):
    """The old rows lack validation figures: the header gains their columns, old rows NA."""
    path = tmp_path / "log.csv"
    model, X, y = tiny()
    fit(model, X, y, vn.optim.Adam(lr=1e-2), [vn.CSVLogger(path)], epochs=1)
    old = read_csv(path)
    cb = vn.CSVLogger(path, append=True)
    fit(model, X, y, vn.optim.Adam(lr=1e-2), [cb], epochs=2, initial_epoch=1, validation_data=(X, y))
    rows = read_csv(path)
    assert rows[0] == old[0] + ["val_loss", "val_accuracy"]
    assert rows[1] == old[1] + ["NA", "NA"]
    assert len(rows[2]) == len(rows[0]) and rows[2][0] == "2" and "NA" not in rows[2]
    assert not [p for p in os.listdir(tmp_path) if p != "log.csv"]  # no temporary file left


def test_csv_logger_keeps_the_epochs_finished_before_a_crash(tmp_path):
    path = tmp_path / "log.csv"

    class Crash(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("boom")

    model, X, y = tiny()
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, X, y, vn.optim.Adam(lr=1e-2), [vn.CSVLogger(path), Crash()], epochs=5)
    assert [r[0] for r in read_csv(path)] == ["epoch", "1", "2", "3"]


def test_csv_logger_names_a_path_it_cannot_write(tmp_path):
    model, X, y = tiny()
    with pytest.raises(ValueError, match="filename=.*missing"):
        fit(model, X, y, vn.optim.Adam(lr=1e-2), [vn.CSVLogger(tmp_path / "missing" / "log.csv")], epochs=1)


# -- progress output -------------------------------------------------------------------------------
class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_redraws_and_elsewhere_prints_one_line_per_epoch():
    model, X, y = tiny(n=400)
    lines = {}
    for name, stream in (("terminal", FakeTerminal()), ("file", io.StringIO())):
        bar = ProgressBar(3, len(X), file=stream, mininterval=0)
        fit(model, X, y, vn.optim.Adam(lr=1e-2), [bar], epochs=3)
        lines[name] = stream.getvalue()
    assert lines["terminal"].count("\r") > 3  # frames: the bar redrawn within each epoch
    text = lines["file"]
    assert "\r" not in text and "\x1b" not in text
    rows = text.splitlines()
    assert [r.split()[:2] for r in rows] == [["Epoch", f"{e}/3"] for e in (1, 2, 3)]
    assert all("400/400 samples" in r and "samples/s" in r and "loss=" in r and "lr=0.01" in r for r in rows)


def test_fit_with_stderr_redirected_to_a_file_writes_one_line_per_epoch(tmp_path):
    script = (
        "import numpy as np, vecnn as vn\n"
        "X = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)\n"
        "m = vn.Sequential([vn.layers.Dense(4, 3)], seed=0)\n"
        "m.fit(X, (X[:, 0] > 0).astype(np.int64), loss='cross_entropy', epochs=4, batch_size=8, verbose=1)\n"
    )
    log = tmp_path / "err.log"
    with open(log, "w") as err:
        r = subprocess.run([sys.executable, "-c", script], stderr=err, timeout=120)
    text = log.read_text()
    assert r.returncode == 0, text
    assert "\r" not in text
    assert [line.split()[1] for line in text.splitlines()] == ["1/4", "2/4", "3/4", "4/4"]


# -- run files: metrics.jsonl and config.json of `vecnn train` -------------------------------------
def train(capsys, out, *args):
    code = main(["train", "--out", str(out), "--model", "dense:10", "--batch-size", "256", "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 0, err
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_run_from_before_lr_seconds_and_versions_resumes(tmp_path, capsys):
    """A run folder as an older vecnn wrote it (no versions in config.json, no lr or seconds in
    the checkpoint's history), or one written by another vecnn version, resumes."""
    out = tmp_path / "run"
    metrics = train(capsys, out, "--epochs", "2")
    assert all(m["lr"] > 0 and m["seconds"] > 0 for m in metrics)
    # make it old: strip what this version adds
    config = json.loads((out / "config.json").read_text())
    assert config["versions"]["vecnn"] == vn.__version__
    del config["versions"]
    (out / "config.json").write_text(json.dumps(config))
    ck = R.latest_checkpoint(out)
    model, epoch, history, run_config = R.load_checkpoint(ck)
    old = {k: v for k, v in history.items() if k not in ("lr", "seconds")}
    R.save_checkpoint(model, ck, epoch, old, run_config)
    metrics = train(capsys, out, "--resume", "--epochs", "3")
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert [m["lr"] for m in metrics[:2]] == [None, None]  # not recorded then
    assert metrics[2]["lr"] > 0 and metrics[2]["seconds"] > 0
    assert [m["loss"] for m in metrics[:2]] == old["loss"]
    assert json.loads((out / "config.json").read_text())["versions"]["vecnn"] == vn.__version__
    # another version wrote the run: versions are recorded, never compared
    config = json.loads((out / "config.json").read_text())
    config["versions"] = {"vecnn": "0.0.1", "numpy": "1.24.0", "blas": []}
    (out / "config.json").write_text(json.dumps(config))
    assert len(train(capsys, out, "--resume", "--epochs", "4")) == 4
