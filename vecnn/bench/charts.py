"""PNG charts of a ladder report: the ladder per operation (log-scale bars) and the batch sweep.

matplotlib is imported inside the functions, with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

COLORS = {"scalar": "#b2182b", "per_sample": "#ef8a62", "vecnn": "#2166ac", "pytorch": "#999999"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ladder_chart(report: dict, path) -> Path:
    """One panel per operation: time per rung on a log axis, each bar labelled with its speedup
    over the scalar loops (and its share of the peak where the operation has matrix products)."""
    plt = _pyplot()
    ops = report["ladder"]
    fig, axes = plt.subplots(1, max(1, len(ops)), figsize=(3.4 * max(1, len(ops)), 4.2), squeeze=False)
    for ax, info in zip(axes[0], ops):
        rungs = info["rungs"]
        secs = [r["seconds"] for r in rungs]
        ax.bar(range(len(rungs)), secs, color=[COLORS[r["rung"]] for r in rungs])
        ax.set_yscale("log")
        ax.set_xticks(
            range(len(rungs)),
            [
                r["label"].replace(" (vecnn)", "\n(vecnn)").replace(" loops", "\nloops").replace(" eager", "\neager")
                for r in rungs
            ],
            fontsize=7,
        )
        for i, r in enumerate(rungs):
            text = fmt_x(r["speedup_vs_scalar"])
            if r["peak_share"] is not None:
                text += f"\n{100 * r['peak_share']:.2g}% pk"
            if r["scaled_from"]:
                text += f"\n(scaled\nfrom {r['scaled_from']})"
            ax.text(i, r["seconds"], text, ha="center", va="bottom", fontsize=7)
        ax.set_ylim(min(secs) / 3, max(secs) * 30)
        ax.set_title(
            info["title"].replace(", forward+backward", "\nfwd+bwd").replace(" training step", "\nstep"), fontsize=8
        )
        ax.set_ylabel("seconds per batch (log)", fontsize=8)
    m = report["machine"]
    b = report.get("numpy_blas") or (m["blas"][0] if m["blas"] else None)
    blas = f"{b['internal_api']} {b['version']}, {b['num_threads']} threads" if b else "BLAS unknown"
    fig.suptitle(f"vectorization ladder: {m['cpu']}, {blas}; labels: speedup over scalar loops", fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, path)


def sweep_chart(report: dict, path) -> Path:
    """GFLOP/s of Dense forward+backward against batch size, with the measured peak as a line."""
    plt = _pyplot()
    sweep, peak = report["sweep"], report["peak"]["gflops"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for rung in ("vecnn", "pytorch"):
        pts = sorted((p["batch"], p["gflops"]) for p in sweep["points"] if p["rung"] == rung)
        if pts:
            ax.plot(*zip(*pts), marker="o", color=COLORS[rung], label="vecnn" if rung == "vecnn" else "pytorch eager")
    ax.axhline(
        peak, color="k", linestyle="--", linewidth=1, label=f"peak {peak:.0f} GFLOP/s ({report['peak']['n']}^3 product)"
    )
    ax.set_xscale("log", base=2)
    batches = sorted({p["batch"] for p in sweep["points"]})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("GFLOP/s")
    ax.set_ylim(0, peak * 1.15)
    share = ax.secondary_yaxis("right", functions=(lambda g: 100 * g / peak, lambda s: s * peak / 100))
    share.set_ylabel("% of measured peak")
    ax.set_title(sweep["title"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, path)


def fmt_x(x) -> str:
    if x is None:
        return ""
    return f"{x:,.0f}x" if x >= 10 else f"{x:.2g}x"


def _save(fig, plt, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_charts(report: dict, directory) -> list[Path]:
    """``ladder.png`` and ``sweep.png`` in ``directory``."""
    d = Path(directory)
    return [ladder_chart(report, d / "ladder.png"), sweep_chart(report, d / "sweep.png")]
