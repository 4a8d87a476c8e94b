"""The `vecnn` command end to end: train on digits, run directories, resume, errors, exit codes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import vecnn as vn
from vecnn.cli import main

VECNN = [sys.executable, "-m", "vecnn.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def run(args, cwd=None, **kw):
    return subprocess.run(VECNN + args, capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300, **kw)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"vecnn {vn.__version__}"


def test_default_train_on_digits(tmp_path):
    """The README's main job: `vecnn train` with no arguments."""
    r = run(["train"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("test accuracy: ") and float(lines[0].split(": ")[1]) >= 0.95
    assert "saved model to" in lines[1]
    assert "samples/s" in r.stderr  # the progress bar counts samples
    run_dir = next((tmp_path / "runs").iterdir())
    assert (run_dir / "model.vecnn").exists()


def test_run_directory_layout(tmp_path):
    out = tmp_path / "run"
    r = run(["train", "--out", str(out), "--epochs", "3", "--quiet"])
    assert r.returncode == 0, r.stderr
    # the last 3 checkpoints are kept (and the best, here one of them); epoch 0's is gone
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"epoch-00{i}.vecnn" for i in (1, 2, 3)]
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and {"loss", "val_accuracy"} <= set(metrics[0])
    assert all(m["seconds"] > 0 for m in metrics)
    # "lr": the rate of each epoch's last step, here the default cosine decay from --lr 1e-3 to 0
    # over the 3 epochs (the step count from the last checkpoint's optimizer)
    from vecnn import run as R

    steps = R.load_checkpoint(R.checkpoint_path(out, 3))[0].optimizer.t
    expected = [0.5e-3 * (1 + np.cos(np.pi * (e * steps // 3 - 1) / steps)) for e in (1, 2, 3)]
    np.testing.assert_allclose([m["lr"] for m in metrics], expected, rtol=1e-12)
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "digits" and config["epochs"] == 3 and config["keep_checkpoints"] == 3
    import threadpoolctl

    # NumPy's own BLAS (the one its wheel bundles, as loaded in this process) is among those recorded
    numpy_blas = {
        (b["internal_api"], b["version"]) for b in threadpoolctl.threadpool_info() if "numpy" in b["filepath"]
    }
    recorded = {(b["internal_api"], b["version"]) for b in config["versions"]["blas"]}
    assert config["versions"]["vecnn"] == vn.__version__ and config["versions"]["numpy"] == np.__version__
    assert recorded and numpy_blas <= recorded
    assert [l["name"] for l in config["architecture"]] == [
        type(l).__name__ for l in vn.load(out / "model.vecnn").layers
    ]
    for name in ("curves.png", "confusion.png", "misclassified.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = vn.load(out / "model.vecnn")
    assert model.class_names == [str(i) for i in range(10)]
    _, _, X_test, y_test = vn.data.load("digits")
    acc = float(r.stdout.split("test accuracy: ")[1].split()[0])
    assert abs(model.evaluate(X_test, y_test)["accuracy"] - acc) < 1e-4
    # evaluate, info, predict on the saved model
    ev = run(["evaluate", str(out / "model.vecnn")])
    assert ev.returncode == 0 and f"test accuracy: {acc:.4f}" in ev.stdout
    info = run(["info", str(out / "model.vecnn")])
    assert info.returncode == 0 and "Dense" in info.stdout and "FLOPs" in info.stdout
    np.save(tmp_path / "x.npy", X_test[:2])
    pr = run(["predict", str(out / "model.vecnn"), str(tmp_path / "x.npy"), "--top", "2"])
    assert pr.returncode == 0 and len(pr.stdout.strip().splitlines()) == 2


def test_predict_image_file(tmp_path):
    from PIL import Image

    out = tmp_path / "run"
    assert run(["train", "--out", str(out), "--epochs", "2", "--quiet"]).returncode == 0
    _, _, X_test, y_test = vn.data.load("digits")
    Image.fromarray((X_test[0, 0] * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    pr = run(["predict", str(out / "model.vecnn"), str(tmp_path / "digit.png")])
    assert pr.returncode == 0, pr.stderr
    assert pr.stdout.startswith("digit.png: ") and pr.stdout.count(",") == 2  # top 3


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    """Kill a run for real after epoch 2, resume it, and compare with an uninterrupted run."""
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    script = (
        "import os, signal, sys\n"
        "import vecnn as vn, vecnn.cli as cli\n"
        "class Kill(vn.Callback):\n"
        "    def on_batch_end(self, batch, logs=None):\n"
        "        if len(os.listdir(sys.argv[1] + '/checkpoints')) == 3 and batch == 3:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)     # mid-epoch 3, after epoch 2's checkpoint\n"
        "fit = vn.Sequential.fit\n"
        "vn.Sequential.fit = lambda self, *a, **k: fit(self, *a, **{**k, 'callbacks': k['callbacks'] + [Kill()]})\n"
        "cli.main(['train', '--out', sys.argv[1], '--epochs', '4', '--quiet'])\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(killed)], env=ENV, capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not (killed / "model.vecnn").exists()
    resumed = run(["train", "--out", str(killed), "--resume", "--quiet"])
    assert resumed.returncode == 0, resumed.stderr
    assert "from epoch-002.vecnn" in resumed.stderr
    assert run(["train", "--out", str(whole), "--epochs", "4", "--quiet"]).returncode == 0
    a, b = vn.load(killed / "model.vecnn"), vn.load(whole / "model.vecnn")
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    # the same figures, lr among them; only the epochs' wall times ("seconds") may differ
    (a_lines, b_lines) = (
        [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()] for d in (killed, whole)
    )
    assert [m.keys() for m in a_lines] == [m.keys() for m in b_lines] and all("seconds" in m for m in a_lines)
    strip = lambda lines: [{k: v for k, v in m.items() if k != "seconds"} for m in lines]
    assert strip(a_lines) == strip(b_lines)


def test_ctrl_c_saves_and_prints_the_resume_command(tmp_path):
    out = tmp_path / "run"
    # a shell without job control starts background commands with SIGINT ignored, and children
    # inherit that (then Python never raises KeyboardInterrupt): give the child Ctrl-C back
    p = subprocess.Popen(
        VECNN + ["train", "--out", str(out), "--epochs", "100000", "--quiet"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "epoch-002.vecnn").exists() and time.time() < deadline:
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == 130
    assert f"vecnn train --out {out} --resume" in err
    assert "checkpoint after epoch" in err


def test_resume_refuses_different_settings(tmp_path):
    out = tmp_path / "run"
    assert run(["train", "--out", str(out), "--epochs", "1", "--quiet"]).returncode == 0
    r = run(["train", "--out", str(out), "--resume", "--model", "dense:32,relu,dense:10", "--lr", "0.1"])
    assert r.returncode == 2
    assert "different settings" in r.stderr and "--model" in r.stderr and "--lr" in r.stderr
    again = run(["train", "--out", str(out), "--epochs", "1"])
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.parametrize(
    "args,match",
    [
        (["train", "--dataset", "cifar-1000"], "fashion-mnist"),
        (["train", "--model", "dense:32,relux,dense:10"], "token 2 'relux'"),
        (["train", "--model", "dense:32,dropout:abc,dense:10"], "token 2 'dropout:abc'"),
        (["train", "--model", "dense:32,relu,dense:7"], "10 classes"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--workers", "none"], "--workers"),
        (["evaluate", "nope.vecnn"], "no such model file"),
        (["train", "--data", "missing.npz"], "missing.npz"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(tmp_path, args, match):
    r = run(args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert match in r.stderr and "Traceback" not in r.stderr


def test_spec_string_model_and_own_data(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "mine.npz", x=X, y=y)
    out = tmp_path / "run"
    r = run(
        [
            "train",
            "--data",
            str(tmp_path / "mine.npz"),
            "--model",
            "dense:16,relu,dense:2",
            "--epochs",
            "30",
            "--batch-size",
            "16",
            "--lr",
            "0.01",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split("test accuracy: ")[1].split()[0]) > 0.9
    assert [type(l).__name__ for l in vn.load(out / "model.vecnn").layers] == ["Standardize", "Dense", "ReLU", "Dense"]


def test_cnn_with_two_workers(tmp_path):
    """--workers 2 splits every batch of a small CNN across two threads."""
    out = tmp_path / "run"
    r = run(
        [
            "train",
            "--model",
            "conv:8:3,relu,maxpool:2,flatten,dense:10",
            "--epochs",
            "10",
            "--lr",
            "0.01",
            "--workers",
            "2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split("test accuracy: ")[1].split()[0]) > 0.85
    assert json.loads((out / "config.json").read_text())["workers"] == 2


def test_help_on_every_command():
    for cmd in (
        ["--help"],
        ["train", "--help"],
        ["evaluate", "--help"],
        ["predict", "--help"],
        ["datasets", "--help"],
        ["info", "--help"],
    ):
        r = run(cmd)
        assert r.returncode == 0 and "usage: vecnn" in r.stdout


def test_datasets_command():
    r = run(["datasets"])
    assert r.returncode == 0 and "digits" in r.stdout and "fashion-mnist" in r.stdout
