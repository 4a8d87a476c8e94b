"""The head-to-head benchmarks' contenders (vecnn.bench.peers) run end to end on tiny data; no timing is asserted.

JAX and Keras/TensorFlow live in environments of their own: set VECNN_TEST_JAX_PYTHON and
VECNN_TEST_KERAS_PYTHON to their interpreters to include them; otherwise their tests skip.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vecnn.bench import mlp, peers

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "net": "mlp",
    "n_in": 20,
    "hidden": [32],
    "n_out": 4,
    "optimizer": "adam",
    "lr": 1e-2,
    "momentum": 0.9,
    "batch_size": 64,
    "threads": 1,
    "seed": 0,
    "warmup_batches": 2,
}


def learnable(n=1500, n_in=20, n_out=4, seed=0):
    """Inputs whose class is the argmax of a fixed linear map: any working training loop learns it."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n_in, n_out)).astype(np.float32)
    X = rng.standard_normal((n, n_in)).astype(np.float32)
    y = (X @ W).argmax(1).astype(np.int64)
    return X[:1000], y[:1000], X[1000:], y[1000:]


def _needs(module):
    pytest.importorskip(module)


def test_every_contender_here_trains_the_same_network_and_learns():
    _needs("torch")
    _needs("sklearn")
    X, y, Xt, yt = learnable()
    results, skipped = peers.run_peers(["vecnn", "pytorch", "scikit-learn"], SPEC, (X, y, Xt, yt), epochs=4)
    assert skipped == {}
    expected = mlp.n_params([20, 32, 4])
    chance = np.bincount(yt).max() / len(yt)
    for name, r in results.items():
        assert r["n_params"] == expected, name
        assert len(r["seconds"]) == 4 and min(r["seconds"]) > 0
        assert r["accuracy"] > chance + 0.3, f"{name} did not learn: {r['accuracy']} vs chance {chance}"
        assert r["compile_seconds"] is None  # eager contenders have nothing to compile
        assert r["blas"] and r["blas"][0]["num_threads"] == 1, "the worker runs on the requested thread count"


@pytest.mark.parametrize("name,var", [("jax", "VECNN_TEST_JAX_PYTHON"), ("keras", "VECNN_TEST_KERAS_PYTHON")])
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_peer_in_its_own_environment_learns(name, var, net):
    python = os.environ.get(var)
    if not python:
        pytest.skip(f"set {var} to an interpreter with {name}")
    if net == "cnn":
        rng = np.random.default_rng(0)
        X = rng.standard_normal((1200, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 2, 1200)
        X[y == 1, :, :14] += 0.5  # class 1: the top half is brighter
        data, spec = (X[:1000], y[:1000], X[1000:], y[1000:]), dict(SPEC, net="cnn", n_out=10, lr=1e-3)
        expected = 1 * 32 * 9 + 32 + 32 * 64 * 9 + 64 + 1600 * 128 + 128 + 128 * 10 + 10
    else:
        data, spec, expected = learnable(), SPEC, mlp.n_params([20, 32, 4])
    results, skipped = peers.run_peers([name], spec, data, epochs=3, pythons={name: python})
    assert skipped == {}
    r = results[name]
    assert r["n_params"] == expected
    assert r["compile_seconds"] > 0 and len(r["seconds"]) == 3
    chance = np.bincount(data[3]).max() / len(data[3])
    assert r["accuracy"] > chance + 0.2, f"{name} did not learn: {r['accuracy']} vs chance {chance}"


def test_missing_environment_is_skipped_with_the_reason(tmp_path):
    X, y, Xt, yt = learnable()
    results, skipped = peers.run_peers(
        ["vecnn", "jax", "keras"],
        SPEC,
        (X, y, Xt, yt),
        epochs=1,
        pythons={"jax": str(tmp_path / "no-env" / "bin" / "python"), "keras": str(tmp_path / "missing")},
    )
    assert set(results) == {"vecnn"}
    assert "--jax-python" in skipped["jax"] and "no such interpreter" in skipped["jax"]
    assert "--keras-python" in skipped["keras"]


def test_package_missing_from_the_environment_is_skipped_with_the_reason():
    try:
        import jax  # noqa: F401

        pytest.skip("jax is installed in this environment")
    except ImportError:
        pass
    X, y, Xt, yt = learnable()
    results, skipped = peers.run_peers(["jax"], SPEC, (X, y, Xt, yt), epochs=1)
    assert results == {}
    assert "jax is not installed" in skipped["jax"] and "--jax-python" in skipped["jax"]


def test_torch_compile_without_a_compiler_is_skipped(monkeypatch, tmp_path):
    _needs("torch")
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    X, y, Xt, yt = learnable()
    results, skipped = peers.run_peers(["torch.compile"], SPEC, (X, y, Xt, yt), epochs=1)
    assert results == {}
    assert "C++ compiler" in skipped["torch.compile"]


def test_a_worker_that_dies_is_skipped_not_a_crash(monkeypatch):
    X, y, Xt, yt = learnable()
    bad = dict(SPEC, hidden=[-5])  # vecnn's worker fails while building its model
    results, skipped = peers.run_peers(["vecnn"], bad, (X, y, Xt, yt), epochs=1)
    assert results == {} and skipped["vecnn"]


def test_names_and_aliases():
    assert peers.canonical("torch") == "pytorch"
    assert peers.canonical(" Torch-Compile ") == "torch.compile"
    assert peers.canonical("sklearn") == "scikit-learn"
    with pytest.raises(ValueError, match="--contenders: unknown contender 'caffe'"):
        peers.canonical("caffe")


def test_summary_and_table_from_known_results():
    results = {
        "vecnn": {"seconds": [2.0, 1.0, 3.0], "peak_increase_mib": [1.0, 2.0, 1.5], "accuracy": 0.9},
        "jax": {"seconds": [5.0, 4.0, 6.0], "peak_increase_mib": [9.0, 9.0, 9.0], "accuracy": 0.8},
    }
    for r in results.values():
        r.update(compile_seconds=None, n_params=10, kernels="k", blas=[])
    results["jax"]["compile_seconds"] = 12.5
    peers.summarize(results, 600)
    assert results["jax"]["median_seconds"] == 5.0 and results["jax"]["best_seconds"] == 4.0
    assert results["jax"]["vecnn_speedup"] == 2.5 and results["jax"]["vecnn_speedup_best"] == 4.0
    assert results["vecnn"]["samples_per_second"] == 300.0 and results["vecnn"]["peak_increase_mib_max"] == 2.0
    text = peers.format_table(results, {"keras": "tensorflow is not installed"})
    row = next(line for line in text.splitlines() if line.startswith("jax"))
    assert "2.50x" in row and "12.5" in row and "120" in row  # 600 samples / 5 s
    assert "keras: skipped, tensorflow is not installed" in text


def test_tiny_head_to_head_report():
    _needs("torch")
    _needs("sklearn")
    report = mlp.run(
        "mlp", epochs=1, limit=300, synthetic=True, names=["vecnn", "pytorch", "scikit-learn", "jax"], threads=1
    )
    assert set(report["contenders"]) == {"vecnn", "pytorch", "scikit-learn"} or "jax" in report["contenders"]
    for c in report["contenders"].values():
        assert c["median_seconds"] > 0 and 0 <= c["test_accuracy"] <= 1
        assert c["samples_per_second"] == 300 / c["median_seconds"]
        assert c["n_params"] == mlp.n_params([784, 256, 128, 10])
    assert report["contenders"]["vecnn"]["vecnn_speedup"] == 1.0
    assert report["machine"]["blas"], "the report names the BLAS in use"
    text = mlp.format_report(report)
    assert "pytorch" in text and "samples/s" in text and "compile s" in text and "openblas" in text.lower()


def test_cli_json_and_bad_contender(tmp_path):
    out = tmp_path / "r.json"
    cmd = [sys.executable, "benchmarks/bench_mlp.py", "--limit", "256", "--epochs", "1", "--synthetic"]
    r = subprocess.run(
        [*cmd, "--contenders", "vecnn,jax", "--jax-python", "/nonexistent/python", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert "jax: skipped, --jax-python /nonexistent/python: no such interpreter" in r.stdout
    report = json.loads(out.read_text())
    assert set(report["contenders"]) == {"vecnn"} and "jax" in report["skipped"]
    bad = subprocess.run([*cmd, "--contenders", "vecnn,caffe"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "unknown contender 'caffe'" in bad.stderr


def test_vecnn_and_torch_contenders_build_the_same_network():
    _needs("torch")
    X = np.zeros((10, 784), np.float32)
    y = np.arange(10)
    v = mlp.VecnnMLP(X, y, mlp.CONFIGS["wide"])
    t = mlp.TorchMLP(X, y, mlp.CONFIGS["wide"], threads=1)
    assert v.model.n_params == sum(p.numel() for p in t.net.parameters()) == mlp.n_params([784, 2048, 2048, 10])


def test_contention_benchmark_runs_and_reports_the_share_kept(tmp_path):
    out = tmp_path / "c.json"
    r = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_contention.py",
            "--seconds",
            "0.3",
            "--repeats",
            "1",
            "--limit",
            "512",
            "--synthetic",
            "--lead",
            "3",
            "--contenders",
            "vecnn,numpy",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert "share kept" in r.stdout and "openblas" in r.stdout.lower()
    report = json.loads(out.read_text())
    for name in ("vecnn", "numpy"):
        res = report["results"][name]
        assert res["solo_median"] > 0 and len(res["pair"][0]) == 2 and res["share_kept_median"] > 0
