"""The habits that keep the compute boundary where it is, checked with the suite (so `.ci/run`
runs them): ruff's lint (with its banned-import rule: layers, losses, optimizers and the model
never import numba, the compiled kernels or the OpenBLAS thread split) and format, and mypy on
the public API's type hints. Configured in pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name):
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]' installs it"
    return found


def run(*args, timeout=600):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_ruff_lint_passes():
    r = run(tool("ruff"), "check", "--no-cache", "vecnn", "tests", "benchmarks")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_is_applied():
    r = run(tool("ruff"), "format", "--no-cache", "--check", "vecnn", "tests", "benchmarks")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_banned_import_rule_catches_a_layer_importing_the_kernels(tmp_path):
    """The rule is live, not just configured: a layer module that imports the compiled kernels
    (absolute or relative) is reported."""
    probe = ROOT / "vecnn" / "layers" / "_probe_banned_import.py"
    probe.write_text("from .. import kernels\nfrom ..ops import _openblas\nimport numba\n")
    try:
        r = run(tool("ruff"), "check", "--no-cache", "--select", "TID251", str(probe))
    finally:
        probe.unlink()
    assert r.returncode == 1
    for banned in ("vecnn.kernels", "vecnn.ops._openblas", "numba"):
        assert f"`{banned}` is banned" in r.stdout, r.stdout


@pytest.mark.slow
def test_mypy_passes():
    r = run(tool("mypy"), "--cache-dir", str(ROOT / ".mypy_cache"))
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr
