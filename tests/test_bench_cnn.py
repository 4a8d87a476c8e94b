"""benchmarks/bench_cnn.py runs end to end on a tiny slice; contenders without their environment are skipped."""

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CNN_PARAMS = 1 * 32 * 9 + 32 + 32 * 64 * 9 + 64 + 1600 * 128 + 128 + 128 * 10 + 10


def bench_cnn():
    spec = importlib.util.spec_from_file_location("bench_cnn", ROOT / "benchmarks" / "bench_cnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_reports_every_contender_or_why_not(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "cnn.json"
    argv = ["--limit", "256", "--epochs", "2", "--synthetic", "--threads", "1", "--warmup-batches", "1"]
    argv += ["--contenders", "vecnn,torch,sklearn,jax", "--jax-python", str(tmp_path / "none"), "--json", str(out)]
    assert bench_cnn().main(argv) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    res = report["contenders"]
    assert set(res) == {"vecnn", "pytorch"}
    assert "no convolutional" in report["skipped"]["scikit-learn"]
    assert "--jax-python" in report["skipped"]["jax"]
    for name, r in res.items():
        assert r["n_params"] == CNN_PARAMS, name
        assert len(r["seconds"]) == 2 and r["median_seconds"] == statistics.median(r["seconds"])
        assert r["samples_per_second"] == 256 / r["median_seconds"] and 0 <= r["accuracy"] <= 1
        assert r["blas"][0]["num_threads"] == 1
    assert report["speedup_vs_torch"] == res["pytorch"]["median_seconds"] / res["vecnn"]["median_seconds"]
    assert "scikit-learn: skipped" in text and "openblas" in text.lower() and "samples/s" in text
    assert "a smoke run" in text  # fewer than 3 epochs are labelled as such


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--epochs", "0"], "--epochs: at least 1"),
        (["--contenders", "vecnn,caffe"], "unknown contender 'caffe'"),
        (["--limit", "0"], "--limit: at least 1"),
    ],
)
def test_bad_options_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench_cnn().main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
