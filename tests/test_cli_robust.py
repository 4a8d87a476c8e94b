"""`vecnn train` as a careless or hostile user runs it (issue 10, items 3, 5-8): run directories,
one run at a time, resuming, checkpoint retention, bad flags, spec tokens, config files, plots.

Every case runs the CLI in a subprocess and checks the exit code (0 success, 2 bad usage or
input, 1 anything else) and that an error is one line with no traceback.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import vecnn as vn
from vecnn import optim
from vecnn import run as R
from vecnn.cli import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, exit_code

VECNN = [sys.executable, "-m", "vecnn.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
TINY = ["--model", "dense:10", "--quiet"]  # one Dense layer on digits: a run takes ~1 s


def run(args, cwd=None, **kw):
    return subprocess.run(VECNN + args, capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300, **kw)


def train(out, *args, **kw):
    return run(["train", "--out", str(out), *TINY, *args], **kw)


def refused(r, *needles):
    """Exit 2, one line on stderr (after argparse's usage lines, if any), naming ``needles``."""
    assert r.returncode == EXIT_USAGE, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if not l.startswith(("usage:", " "))]
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def accuracy(r):
    assert r.returncode == 0, r.stderr
    return float(r.stdout.split("test accuracy: ")[1].split()[0])


def weights(path):
    return vn.load(path).flat_params


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 1-epoch run; tests take a copy (``copy_of``) instead of training their own."""
    out = tmp_path_factory.mktemp("finished") / "run"
    r = train(out, "--epochs", "1")
    assert r.returncode == 0, r.stderr
    return out


def copy_of(run_dir, tmp_path):
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


# -- where a run may write ----------------------------------------------------------------------
def test_out_refuses_a_directory_that_is_not_a_vecnn_run_and_leaves_it_alone(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "metrics.jsonl").write_text("my own metrics\n")
    (foreign / "model.vecnn").write_text("my own model\n")
    refused(train(foreign, "--epochs", "1"), f"--out {foreign}", "not empty", "not a vecnn run")
    assert (foreign / "metrics.jsonl").read_text() == "my own metrics\n"
    assert sorted(os.listdir(foreign)) == ["metrics.jsonl", "model.vecnn"]  # no lock file either
    refused(train(foreign, "--resume"), str(foreign), "not a vecnn run")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train(empty, "--epochs", "1").returncode == 0  # empty: fine


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path, finished_run):
    """config.json written, no checkpoint yet: --resume says to start again, and a fresh start may."""
    out = copy_of(finished_run, tmp_path)
    shutil.rmtree(out / "checkpoints")
    (out / "model.vecnn").unlink()
    refused(train(out, "--resume"), "no checkpoint", "start it again without --resume")
    assert train(out, "--epochs", "1").returncode == 0 and set(R.checkpoints(out)) == {0, 1}


def test_out_naming_a_file_or_a_path_under_a_file_exits_2(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    refused(train(f, "--epochs", "1"), str(f), "not a directory")
    refused(train(f / "run", "--epochs", "1"), str(f), "is a file, not a directory")
    refused(train(tmp_path / ("x" * 300), "--epochs", "1"), "x" * 300)  # OSError with a path: exit 2
    assert f.read_text() == "x"


def test_two_trainings_started_together_into_one_directory(tmp_path):
    """One trains, the other is refused: the directory never mixes two models."""
    out = tmp_path / "run"
    procs = [
        subprocess.Popen(
            VECNN + ["train", "--out", str(out), "--model", model, "--epochs", "3", "--quiet"],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model in ("dense:10", "dense:16,relu,dense:10")
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close(), p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0, EXIT_USAGE], results
    err = next(e for code, e in results if code == EXIT_USAGE)
    assert ("another vecnn process is training in" in err or "a run is already there" in err) and "Traceback" not in err
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == vn.load(out / "model.vecnn").config()


def test_one_run_at_a_time_and_a_killed_run_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen(
        VECNN + ["train", "--out", str(out), "--epochs", "100000", *TINY],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "epoch-001.vecnn").exists() and time.time() < deadline:
            time.sleep(0.05)
        for args in (["--resume"], ["--epochs", "2"], ["--resume", "--epochs", "100001"]):
            refused(train(out, *args), f"another vecnn process is training in {out}")
    finally:
        p.kill()  # SIGKILL: no cleanup of any kind runs
        p.wait()
    done = max(R.checkpoints(out))
    r = train(out, "--resume", "--epochs", str(done + 1))
    assert r.returncode == 0, r.stderr  # the OS released the lock with the process
    assert f"{done} of {done + 1} epochs done" in r.stderr


# -- resuming --------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_a_run_stopped_during_epoch_1_resumes_bit_identically(tmp_path, optimizer):
    """Only the epoch-0 checkpoint (no optimizer state yet) is left: --resume was KeyError 'm'
    (Adam, AdamW) or 'square_avg' (RMSProp). Every optimizer: tests/test_optim.py."""
    out = tmp_path / "run"
    assert train(out, "--epochs", "2", "--optimizer", optimizer).returncode == 0
    whole = weights(out / "model.vecnn")
    for p in (out / "checkpoints").glob("epoch-00[12]*"):
        p.unlink()
    (out / "model.vecnn").unlink()
    r = train(out, "--resume")
    assert r.returncode == 0, r.stderr
    assert "from epoch-000.vecnn: 0 of 2 epochs done" in r.stderr
    np.testing.assert_array_equal(weights(out / "model.vecnn"), whole)


def test_resume_with_more_fewer_or_the_same_epochs(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--epochs", "2").returncode == 0
    model_bytes = (out / "model.vecnn").read_bytes()
    refused(train(out, "--resume", "--epochs", "1"), "--epochs 1", "already has 2 epochs")
    same = train(out, "--resume")
    assert same.returncode == 0 and "nothing to do" in same.stderr and "test accuracy" not in same.stdout
    assert (out / "model.vecnn").read_bytes() == model_bytes
    # more epochs than the cosine schedule was made for: it is stretched, not stuck at lr 0
    more = train(out, "--resume", "--epochs", "4")
    assert more.returncode == 0, more.stderr
    assert "2 of 4 epochs done" in more.stderr and "now ends at epoch 4" in more.stderr
    w2, w3, w4 = (weights(out / "checkpoints" / f"epoch-00{e}.vecnn") for e in (2, 3, 4))
    assert not np.array_equal(w2, w3) and not np.array_equal(w3, w4)
    model, epoch, _, _ = R.load_checkpoint(out / "checkpoints" / "epoch-004.vecnn")
    per_epoch = -(-1298 // 128)  # digits: 1442 - 10% validation, batches of 128
    assert epoch == 4 and model.optimizer.schedule.total_steps == 4 * per_epoch
    assert model.optimizer.current_lr(3 * per_epoch) > 0
    assert json.loads((out / "config.json").read_text())["epochs"] == 4
    assert train(out, "--resume").stderr.count("nothing to do") == 1


def test_a_run_killed_after_its_last_checkpoint_finishes_on_resume(tmp_path):
    """The last epoch's checkpoint exists but model.vecnn does not: --resume saves and evaluates."""
    out = tmp_path / "run"
    first = train(out, "--epochs", "2")
    (out / "model.vecnn").unlink()
    again = train(out, "--resume")
    assert accuracy(again) == accuracy(first) and "nothing to do" not in again.stderr


def test_resume_refuses_a_checkpoint_of_another_architecture(tmp_path, finished_run):
    out, other = copy_of(finished_run, tmp_path), tmp_path / "other"
    assert train(other, "--epochs", "1", "--model", "dense:16,relu,dense:10").returncode == 0
    (other / "checkpoints" / "epoch-001.vecnn").rename(out / "checkpoints" / "epoch-005.vecnn")
    line = refused(
        train(out, "--resume", "--epochs", "6"),
        "epoch-005.vecnn",
        "not a checkpoint of the run",
        "another architecture",
        "out_features=10",
        "out_features=16",
    )
    assert "Dense" in line


@pytest.mark.parametrize(
    "content,needles",
    [
        ("[1, 2]", ["config.json", "JSON list"]),
        ("EPOCHS_AS_TEXT", ["config.json", "field 'epochs'", "'2'"]),
        ("TRUNCATED", ["config.json", "not valid JSON", "truncated"]),
        ("{}", ["config.json", "field 'model' is missing"]),
        ("LR_NAN", ["config.json", "field 'lr'"]),
    ],
)
def test_a_damaged_config_json_exits_2_naming_it(tmp_path, finished_run, content, needles):
    out = copy_of(finished_run, tmp_path)
    path = out / "config.json"
    text = path.read_text()
    config = json.loads(text)
    content = {
        "EPOCHS_AS_TEXT": json.dumps({**config, "epochs": "2"}),
        "TRUNCATED": text[: len(text) // 2],
        "LR_NAN": text.replace('"lr": 0.001', '"lr": NaN'),
    }.get(content, content)
    path.write_text(content)
    refused(train(out, "--resume"), str(path), *needles)


# -- checkpoints on disk ------------------------------------------------------------------------
def test_checkpoint_retention_keeps_the_last_and_the_best(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--epochs", "6").returncode == 0
    history = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    best = min(history, key=lambda m: m["val_loss"])["epoch"]
    assert set(R.checkpoints(out)) == {4, 5, 6, best}
    assert json.loads((out / "config.json").read_text())["keep_checkpoints"] == 3
    every = tmp_path / "every"
    assert train(every, "--epochs", "3", "--keep-checkpoints", "0").returncode == 0
    assert set(R.checkpoints(every)) == {0, 1, 2, 3}
    refused(train(tmp_path / "x", "--keep-checkpoints", "-1"), "--keep-checkpoints")


def test_prune_checkpoints_keeps_the_best_by_val_loss_else_loss(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for e in range(8):
        R.checkpoint_path(tmp_path, e).write_bytes(b"x")
    (tmp_path / "checkpoints" / "notes.txt").write_text("mine")
    history = {"loss": [5, 4, 3, 2, 1, 1, 1], "val_loss": [3, 1, 2, 4, 5, 6, 7]}
    deleted = R.prune_checkpoints(tmp_path, 2, history)
    assert set(R.checkpoints(tmp_path)) == {2, 6, 7} and len(deleted) == 5
    assert (tmp_path / "checkpoints" / "notes.txt").exists()
    R.prune_checkpoints(tmp_path, 1, {"loss": [5, 0.5, 3, 2, 1, 1, 1]})
    assert set(R.checkpoints(tmp_path)) == {2, 7}
    assert R.best_epoch({}) is None and R.prune_checkpoints(tmp_path, 0, {}) == []


def test_temporary_files_of_a_killed_save_are_removed_at_the_next_run(tmp_path, finished_run):
    out = copy_of(finished_run, tmp_path)
    ours = [
        out / "checkpoints" / ".epoch-007.vecnn.abcd_123.tmp",
        out / ".metrics.jsonl.k2j4h5g6.tmp",
        out / ".model.vecnn.zz99yy88.tmp",
    ]
    theirs = [out / "checkpoints" / ".notes.tmp", out / ".epoch-007.vecnn.old"]
    for p in ours + theirs:
        p.write_bytes(b"partial")
    assert train(out, "--resume", "--epochs", "2").returncode == 0
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs)  # only vecnn's own pattern is touched


def test_plots_follow_the_umask(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        VECNN + ["train", "--out", str(out), "--epochs", "1", *TINY],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(0o027),
    )
    assert r.returncode == 0, r.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in (out / "plots").iterdir()}
    assert set(modes) == {"curves.png", "confusion.png", "misclassified.png"}
    assert set(modes.values()) == {0o640}, modes


# -- plots never end a finished training in a crash --------------------------------------------
@pytest.mark.parametrize(
    "shape,note",
    [
        ((2, 6, 6), "shows channel 0 of the 2 channels"),
        ((1, 2, 3, 4), "misclassified.png skipped: samples of shape (1, 2, 3, 4)"),
    ],
)
def test_data_plots_cannot_draw_as_images_still_trains_and_reports(tmp_path, shape, note):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((120, *shape), dtype=np.float32), y=rng.integers(0, 3, 120))
    out = tmp_path / "run"
    r = run(
        [
            "train",
            "--data",
            str(tmp_path / "d.npz"),
            "--model",
            "dense:3",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("test accuracy: ") and "saved model to" in r.stdout
    assert note in r.stderr and "Traceback" not in r.stderr
    assert (out / "model.vecnn").exists() and (out / "plots" / "curves.png").exists()


def test_a_failing_plot_never_loses_the_test_accuracy_line(tmp_path):
    script = (
        "import sys, vecnn.plots as P, vecnn.cli as cli\n"
        "def broken(*a, **k): raise RuntimeError('no display today')\n"
        "P.curves = P.confusion = broken\n"
        "sys.exit(cli.main(['train', '--out', sys.argv[1], '--epochs', '1', '--model', 'dense:10', '--quiet']))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "run")], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("test accuracy: ")
    assert "curves.png failed (RuntimeError: no display today)" in r.stderr
    assert "confusion.png failed" in r.stderr and (tmp_path / "run" / "plots" / "misclassified.png").exists()


def test_the_confusion_plot_is_skipped_above_max_plot_classes(tmp_path):
    from vecnn import limits

    k = limits.MAX_PLOT_CLASSES + 1
    y = np.arange(2 * k) % k
    t = time.perf_counter()
    made, notes = R.plots(
        tmp_path, {"loss": [1.0, 0.5]}, np.zeros((2 * k, 4), np.float32), y, y[::-1], [str(i) for i in range(k)]
    )
    assert time.perf_counter() - t < 20
    assert [p.name for p in made] == ["curves.png"]
    assert notes == [
        f"confusion.png skipped: {k} classes are more than the plot shows "
        f"(vecnn.limits.MAX_PLOT_CLASSES = {limits.MAX_PLOT_CLASSES})"
    ]


# -- flags and spec tokens that were ignored or misreported ------------------------------------
@pytest.mark.parametrize(
    "model,needles",
    [
        ("dense:10:20", ["token 1 'dense:10:20'", "expected 1 argument"]),
        ("relu:5,dense:10", ["token 1 'relu:5'", "no arguments"]),
        ("gelu:bogus,dense:10", ["token 1 'gelu:bogus'", "tanh or erf"]),
        ("leakyrelu:nan,dense:10", ["token 1 'leakyrelu:nan'", "finite"]),
        ("leakyrelu:inf,dense:10", ["token 1 'leakyrelu:inf'", "finite"]),
        ("dense:32,dropout:1.5,dense:10", ["token 2 'dropout:1.5'", "[0, 1)"]),
        ("dense:-5,dense:10", ["token 1 'dense:-5'", "positive integer"]),
        ("conv:4:3,relu,maxpool:9,dense:10", ["token 3 'maxpool:9'", "the input is only 6x6"]),
        ("dense:10,,dense:10", ["token 2 ''", "empty token"]),
        ("dense:100000000,dense:10", ["token 1 'dense:100000000'", "more than vecnn allows"]),
    ],
)
def test_bad_spec_tokens_exit_2_naming_the_token(tmp_path, model, needles):
    line = refused(run(["train", "--model", model, "--out", str(tmp_path / "run")]), *needles)
    assert "Dense(0" not in line
    assert not (tmp_path / "run").exists()  # nothing written for a bad spec


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--threads", "0"], ["--threads"]),
        (["--threads", "-2"], ["--threads"]),
        (["--seed", "-1"], ["--seed", "non-negative integer"]),
        (["--lr", "nan"], ["--lr"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--labels", "y.npy"], ["--labels", "only with --data"]),
        (["--dataset", "digits", "--data", "d.npz"], ["--dataset and --data"]),
        (["--val-split", "0.9999"], ["--val-split 0.9999 leaves 0 of the 1442 training samples"]),
        (["--augment", "shift:100000"], ["--augment 'shift:100000'", "at most (7, 7)"]),
        (["--model", "cnn", "--data", "d.npz"], ["--model cnn", "image shape"]),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(tmp_path, args, needles):
    np.savez(tmp_path / "d.npz", x=np.ones((20, 3), np.float32), y=np.arange(20) % 2)
    line = refused(run(["train", *args, "--out", str(tmp_path / "run")], cwd=tmp_path), *needles)
    assert "Standardize" not in line and "CosineLR" not in line


def test_data_too_small_or_without_features_names_the_data(tmp_path):
    np.savez(tmp_path / "two.npz", x=np.ones((2, 3), np.float32), y=np.array([0, 1]))
    line = refused(run(["train", "--data", "two.npz", "--out", "r"], cwd=tmp_path), "--val-split 0.1", "two.npz")
    assert "CosineLR" not in line and "Standardize" not in line
    (tmp_path / "labels.csv").write_text("label\n0\n1\n0\n1\n0\n1\n")
    line = refused(
        run(["train", "--data", "labels.csv", "--out", "r2"], cwd=tmp_path), "labels.csv", "no feature columns"
    )
    assert "Dense(0" not in line
    np.savez(tmp_path / "one.npz", x=np.ones((10, 3), np.float32), y=np.zeros(10, np.int64))
    refused(run(["train", "--data", "one.npz", "--out", "r3"], cwd=tmp_path), "one.npz", "at least 2 classes")


def test_a_huge_label_is_refused_before_anything_is_built(tmp_path):
    y = np.arange(50) % 3
    y[7] = 10_000_000
    np.savez(tmp_path / "d.npz", x=np.ones((50, 4), np.float32), y=y)
    t = time.perf_counter()
    refused(run(["train", "--data", "d.npz", "--out", "r"], cwd=tmp_path), "d.npz", "10,000,001", "VECNN_MAX_CLASSES")
    assert time.perf_counter() - t < 30 and not (tmp_path / "r").exists()


def test_a_learning_rate_that_diverges_warns_but_exits_0(tmp_path):
    r = train(tmp_path / "run", "--epochs", "1", "--lr", "1e3")
    assert r.returncode == 0 and r.stdout.startswith("test accuracy: ")
    warning = [l for l in r.stderr.splitlines() if "warning" in l]
    assert len(warning) == 1 and "smaller --lr" in warning[0] and "chance level" in warning[0]
    fine = train(tmp_path / "fine", "--epochs", "2", "--lr", "0.01")
    assert fine.returncode == 0 and "warning" not in fine.stderr


def test_other_commands_refuse_ignored_flags(tmp_path):
    refused(run(["evaluate", "m.vecnn", "--labels", "y.npy"], cwd=tmp_path), "--labels", "only with --data")
    refused(
        run(["evaluate", "m.vecnn", "--dataset", "digits", "--data", "d.npz"], cwd=tmp_path), "--dataset and --data"
    )
    refused(run(["predict", "m.vecnn", "x.npy", "--top", "0"], cwd=tmp_path), "--top")


def test_exit_codes_are_decided_in_one_place():
    assert exit_code(ValueError("bad"))[0] == EXIT_USAGE
    code, line = exit_code(PermissionError(13, "Permission denied", "/srv/out"))
    assert code == EXIT_USAGE and line == "error: /srv/out: Permission denied"
    assert exit_code(IsADirectoryError(21, "Is a directory", "data"))[0] == EXIT_USAGE
    assert exit_code(OSError(28, "No space left on device"))[0] == EXIT_FAILURE  # no path: the machine
    assert exit_code(RuntimeError("bug"))[0] == EXIT_FAILURE
    assert exit_code(FloatingPointError("diverged"))[0] == EXIT_FAILURE
    assert exit_code(KeyboardInterrupt())[0] == EXIT_INTERRUPTED


def test_state_less_checkpoint_loads_through_load_checkpoint(tmp_path):
    """The library side of the epoch-0 resume: load_checkpoint gives an optimizer without state."""
    model = vn.Sequential([vn.layers.Dense(4, 3)], seed=0)
    model.optimizer = optim.RMSProp(lr=0.01)
    from vecnn.losses import get

    model.loss = get("cross_entropy")
    R.save_checkpoint(model, tmp_path / "epoch-000.vecnn", 0, {}, None)
    loaded, epoch, history, run_config = R.load_checkpoint(tmp_path / "epoch-000.vecnn")
    assert (epoch, history, run_config, loaded.optimizer.t, loaded.optimizer.state) == (0, {}, None, 0, {})


@pytest.mark.parametrize(
    "spec,token",
    [
        ("dense:64,dense:10", "token 1 'dense:64'"),
        ("conv:4:3:1:1,flatten,dense:10", "token 1 'conv:4:3:1:1'"),
    ],
)
def test_a_model_that_would_not_fit_in_memory_is_refused_before_it_is_built(tmp_path, spec, token):
    # a machine with 64 KiB available: even small models do not fit (the check reads /proc/meminfo)
    code = (
        "import sys; from vecnn import limits, cli; limits.available_memory = lambda: 2**16; "
        f"sys.exit(cli.main(['train', '--model', {spec!r}, '--epochs', '1', '--quiet', "
        f"'--out', {str(tmp_path / 'r')!r}]))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert token in r.stderr and "GiB of memory" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_training_that_diverges_exits_2_naming_lr_and_the_last_checkpoint(tmp_path):
    out = tmp_path / "r"
    r = subprocess.run(
        [sys.executable, "-m", "vecnn.cli", "train", "--lr", "1e30", "--epochs", "2", "--quiet", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    assert "--lr 1e+30" in r.stderr and "diverged" in r.stderr and "epoch-000.vecnn" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args,flag",
    [
        (["train", "--data", ""], "--data"),
        (["train", "--out", " "], "--out"),
        (["train", "--data", "x.csv", "--label-column", ""], "--label-column"),
        (["train", "--model", ""], "--model"),
        (["info", ""], "MODEL"),
        (["predict", "m.vecnn", ""], "INPUT"),
        (["evaluate", "m.vecnn", "--data", ""], "--data"),
    ],
)
def test_empty_names_are_refused_not_replaced_by_defaults(tmp_path, args, flag):
    refused(run(args, cwd=tmp_path), flag, "empty")
    assert list(tmp_path.iterdir()) == []  # nothing trained or written


def test_a_foreign_config_json_with_a_checkpoints_folder_is_not_taken_for_a_run(tmp_path):
    d = tmp_path / "mine"
    (d / "checkpoints").mkdir(parents=True)
    (d / "config.json").write_text('{"my": "settings"}')
    refused(train(d, "--epochs", "1"), str(d), "not a vecnn run")
    assert (d / "config.json").read_text() == '{"my": "settings"}'


def test_a_config_json_nested_too_deep_is_named(tmp_path):
    out = tmp_path / "r"
    assert train(out, "--epochs", "1").returncode == 0
    (out / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(run(["train", "--resume", "--out", str(out), "--quiet"]), "config.json")


def test_evaluate_takes_flat_rows_of_the_models_images_and_names_the_file(tmp_path):
    out = tmp_path / "r"
    assert run(["train", "--out", str(out), "--epochs", "1", "--quiet"]).returncode == 0
    X, y, Xt, yt = vn.data.load("digits")
    np.save(tmp_path / "flat.npy", Xt.reshape(len(Xt), -1))
    np.save(tmp_path / "flat_y.npy", yt)
    r = run(["evaluate", str(out / "model.vecnn"), "--data", str(tmp_path / "flat.npy")])
    assert r.returncode == 0 and "test accuracy" in r.stdout
    np.save(tmp_path / "narrow.npy", Xt.reshape(len(Xt), -1)[:, :50])
    np.save(tmp_path / "narrow_y.npy", yt)
    refused(
        run(["evaluate", str(out / "model.vecnn"), "--data", str(tmp_path / "narrow.npy")]),
        "narrow.npy",
        "(n, 1, 8, 8)",
    )


def test_a_csv_with_two_label_columns_is_refused(tmp_path):
    f = tmp_path / "dup.csv"
    f.write_text("label,a,label\n" + "".join(f"{i % 2},{i},{i % 3}\n" for i in range(20)))
    refused(train(tmp_path / "r", "--data", str(f)), "dup.csv", "2 columns are named 'label'")


def test_argparse_errors_are_one_line(tmp_path):
    r = run(["train", "--epochs", "abc"], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "--epochs" in r.stderr and "--help" in r.stderr and "usage:" not in r.stderr


def test_info_into_a_closed_pipe_is_quiet(tmp_path):
    out = tmp_path / "r"
    assert train(out, "--epochs", "1").returncode == 0
    p = subprocess.Popen(
        VECNN + ["info", str(out / "model.vecnn")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    p.stdout.close()  # like `| head -0`
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0 and "BrokenPipe" not in err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--root", "/tmp"], "--root"),
        (["--download"], "--download"),
        (["--augment", "shift:1,shift:2"], "says again"),
    ],
)
def test_flags_that_would_be_ignored_or_overridden_are_refused(tmp_path, args, needle):
    refused(train(tmp_path / "r", "--dataset", "digits", *args), needle)


@pytest.mark.parametrize("lr", ["1e-320", "1e39"])
def test_a_learning_rate_float32_cannot_hold_is_refused(tmp_path, lr):
    line = refused(train(tmp_path / "r", "--lr", lr), "--lr", "float32")
    assert "Warning" not in line


def test_predict_with_a_regression_model_prints_its_outputs(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    model = vn.Sequential([vn.layers.Dense(4, 2)])
    model.fit(X, X[:, :2] * 2, loss="mse", epochs=2, verbose=0)
    model.save(tmp_path / "reg.vecnn")
    np.save(tmp_path / "x.npy", X[:3])
    r = run(["predict", str(tmp_path / "reg.vecnn"), str(tmp_path / "x.npy")])
    assert r.returncode == 0, r.stderr
    assert [l.split(":")[0] for l in r.stdout.strip().splitlines()] == ["x.npy[0]", "x.npy[1]", "x.npy[2]"]


def test_warnings_are_one_line_each(tmp_path):
    from vecnn import io

    path = tmp_path / "old.vecnn"
    model = vn.Sequential([vn.layers.Dense(4, 2)])
    tensors = io.model_tensors(model)
    meta = {**io.model_meta(model), "format_version": 1, "sha256": io._digest(tensors)}
    from safetensors.numpy import save

    path.write_bytes(
        save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata={"vecnn": json.dumps(meta)})
    )
    r = run(["info", str(path)])
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "warning: " in r.stderr and "format-1" in r.stderr
