"""Time `vecnn train` with its defaults on a dataset and report test accuracy and wall time.

    python benchmarks/bench_train_cli.py                         # fashion-mnist, mlp (issue target: >= 0.89 in < 2 min)
    python benchmarks/bench_train_cli.py --model cnn              # (target: >= 0.92 in < 5 min)
    python benchmarks/bench_train_cli.py --dataset digits         # (target: >= 0.95 in < 30 s)

Runs the real command in a fresh process, exactly as a user would, and prints one line.
"""

import argparse
import re
import subprocess
import sys
import tempfile
import time

TARGETS = {("fashion-mnist", "mlp"): (0.89, 120), ("fashion-mnist", "cnn"): (0.92, 300), ("digits", "mlp"): (0.95, 30)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="mlp")
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "vecnn.cli",
            "train",
            "--dataset",
            a.dataset,
            "--model",
            a.model,
            "--out",
            f"{tmp}/run",
            "--quiet",
        ] + (["--threads", str(a.threads)] if a.threads else [])
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"vecnn train failed ({r.returncode}):\n{r.stderr}")
    acc = float(re.search(r"test accuracy: ([0-9.]+)", r.stdout).group(1))
    target = TARGETS.get((a.dataset, a.model))
    verdict = ""
    if target:
        ok = acc >= target[0] and seconds < target[1]
        verdict = f"  target >= {target[0]} in < {target[1]} s: {'met' if ok else 'MISSED'}"
    print(f"vecnn train --dataset {a.dataset} --model {a.model}: test accuracy {acc:.4f} in {seconds:.1f} s{verdict}")


if __name__ == "__main__":
    main()
