"""vecnn.sklearn.VecnnClassifier against scikit-learn's MLPClassifier with the same hyperparameters.

Both fit the same flat Fashion-MNIST rows (pixels in [0, 1]) with the same network (ReLU hidden
layers ``--hidden``), Adam, learning rate, L2 penalty ``alpha``, batch size, epochs (``max_iter``,
no early stopping, no tolerance stop) and seed; fits alternate (vecnn, scikit-learn, vecnn, ...)
``--repeats`` times, so the machine's drift falls on both. Reported: fit seconds (median), the
ratio, and test accuracy.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_sklearn.py
    options: --epochs 10 --hidden 256,128 --batch-size 128 --lr 1e-3 --alpha 1e-4 --limit N --repeats 1
             --synthetic --json PATH
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

try:
    import vecnn  # noqa: F401
except ImportError:  # run from a checkout that is not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vecnn.bench.common import load_fashion, machine, publish


def contenders(args):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from vecnn.sklearn import VecnnClassifier

    common = dict(
        hidden_layer_sizes=args.hidden, activation="relu", alpha=args.alpha, batch_size=args.batch_size,
        learning_rate_init=args.lr, max_iter=args.epochs, random_state=0, shuffle=True, early_stopping=False,
        tol=0.0, n_iter_no_change=args.epochs + 1,
    )  # fmt: skip

    def vecnn_fit(X, y):
        with warnings.catch_warnings():  # max_iter reached: the point of the comparison
            warnings.simplefilter("ignore", ConvergenceWarning)
            return VecnnClassifier(**common, dropout=0.0, n_jobs=-1).fit(X, y)  # all BLAS threads, as MLPClassifier

    def sklearn_fit(X, y):
        with warnings.catch_warnings():  # max_iter reached: the point of the comparison
            warnings.simplefilter("ignore", ConvergenceWarning)
            return MLPClassifier(**common, solver="adam").fit(X, y)

    return {"vecnn": vecnn_fit, "sklearn": sklearn_fit}


def run(args) -> dict:
    Xtr, ytr, Xte, yte, source = load_fashion(args.limit, args.synthetic)
    Xtr, Xte = Xtr.reshape(len(Xtr), -1), Xte.reshape(len(Xte), -1)
    fits = contenders(args)
    seconds: dict[str, list[float]] = {name: [] for name in fits}
    accuracy: dict[str, list[float]] = {name: [] for name in fits}
    for _ in range(args.repeats):
        for name, fit in fits.items():  # alternating
            t = time.perf_counter()
            est = fit(Xtr, ytr)
            seconds[name].append(time.perf_counter() - t)
            accuracy[name].append(float((est.predict(Xte) == yte).mean()))
            print(f"  {name}: {seconds[name][-1]:.1f} s, test accuracy {accuracy[name][-1]:.4f}", file=sys.stderr)
    return {
        "machine": machine(), "source": source, "samples": len(Xtr), "config": vars(args),
        "seconds": seconds, "accuracy": accuracy,
    }  # fmt: skip


def format_report(r: dict) -> str:
    m, c = r["machine"], r["config"]
    blas = "; ".join(f"{b['internal_api']} {b['version']} {b['architecture']} ({b['num_threads']} threads)"
                     for b in m["blas"])  # fmt: skip
    med = {k: statistics.median(v) for k, v in r["seconds"].items()}
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores; BLAS: {blas}",
        f"data: {r['source']}, {r['samples']:,} training rows; MLP {c['hidden']} ReLU, Adam lr {c['lr']}, "
        f"alpha {c['alpha']}, batch {c['batch_size']}, {c['epochs']} epochs, fits alternating x{c['repeats']}",
        "",
        f"{'estimator':<28} {'fit seconds':>12} {'vs vecnn':>9} {'test accuracy':>14}",
    ]
    names = {"vecnn": "vecnn VecnnClassifier", "sklearn": "scikit-learn MLPClassifier"}
    for k in r["seconds"]:
        acc = statistics.median(r["accuracy"][k])
        lines.append(f"{names[k]:<28} {med[k]:>12.1f} {med[k] / med['vecnn']:>8.1f}x {acc:>14.4f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="bench_sklearn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--hidden", default="256,128", type=lambda s: tuple(int(v) for v in s.split(",")))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--alpha", type=float, default=1e-4)
    p.add_argument("--limit", type=int, default=None, help="training rows (default: all 60,000)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    r = run(a)
    publish(r, format_report(r), a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
