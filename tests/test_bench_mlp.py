"""The head-to-head benchmark runs end to end on a tiny slice (no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from vecnn.bench import mlp


def test_tiny_head_to_head_report(tmp_path):
    report = mlp.run("mlp", epochs=1, limit=600, synthetic=True, memory=False)
    assert set(report["contenders"]) == {"vecnn", "pytorch", "scikit-learn"}
    for c in report["contenders"].values():
        assert c["median_seconds"] > 0 and 0 <= c["test_accuracy"] <= 1
        assert c["samples_per_second"] == 600 / c["median_seconds"]
    assert report["contenders"]["vecnn"]["vecnn_speedup"] == 1.0
    assert report["machine"]["blas"], "the report names the BLAS in use"
    text = mlp.format_report(report)
    assert "vecnn" in text and "pytorch" in text and "samples/s" in text


def test_memory_child_reports_a_number():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "vecnn.bench.mlp",
            "mlp",
            "--memory-child",
            "vecnn",
            "--threads",
            "1",
            "--limit",
            "512",
            "--synthetic",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_increase_mb"] >= 0


def test_vecnn_and_torch_contenders_build_the_same_network():
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
        cwd=Path(__file__).resolve().parents[1],
    )
    assert r.returncode == 0, r.stderr
    assert "share kept" in r.stdout and "openblas" in r.stdout.lower()
    report = json.loads(out.read_text())
    for name in ("vecnn", "numpy"):
        res = report["results"][name]
        assert res["solo_median"] > 0 and len(res["pair"][0]) == 2 and res["share_kept_median"] > 0
