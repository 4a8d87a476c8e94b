"""The ladder report as terminal text: machine and BLAS, the peak, one table per operation, the sweep."""

from __future__ import annotations


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            return f"{seconds / scale:.3g} {unit}"
    raise AssertionError("unreachable: the last unit always matches")


def fmt_speedup(x) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}x" if x >= 100 else f"{x:.3g}x"


def fmt_gflops(x) -> str:
    return "n/a" if x is None else f"{x:.3g}" if x >= 0.01 else f"{x:.1e}"


def fmt_share(x) -> str:
    return "n/a" if x is None else f"{100 * x:.3g}%" if x >= 1e-4 else f"{100 * x:.0e}%"


def _blas(b) -> str:
    return f"{b['internal_api']} {b['version']} ({b['num_threads']} threads, {b['architecture']})"


def machine_lines(report) -> list[str]:
    m, own = report["machine"], report.get("numpy_blas")
    torch = report.get("torch")
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores; python {m['python']}; numpy {m['numpy']}; "
        f"threads: {report['threads']}" + (f"; torch {torch['version']} ({torch['threads']} threads)" if torch else "")
    ]
    if own:
        others = [b for b in m["blas"] if (b["internal_api"], b["version"]) != (own["internal_api"], own["version"])]
        lines.append(
            f"BLAS used by numpy: {_blas(own)}"
            + (f"; also loaded (not used by numpy): {', '.join(map(_blas, others))}" if others else "")
        )
    else:
        lines.append("BLAS (threadpoolctl): " + (", ".join(map(_blas, m["blas"])) or "none found"))
    return lines


def format_report(report: dict) -> str:
    peak = report["peak"]
    n = peak["n"]
    lines = [
        f"vecnn bench: the vectorization ladder ({report['config']} run)",
        *machine_lines(report),
        f"peak: float32 {n}x{n}x{n} matrix product, best of {peak['repeats']}: "
        f"{fmt_time(peak['best_seconds'])} = {peak['gflops']:.1f} GFLOP/s",
        "",
    ]
    head = f"  {'rung':<20}{'time':>10}{'vs scalar':>12}{'vs per-sample':>15}{'GFLOP/s':>10}{'% peak':>9}"
    for info in report["ladder"]:
        lines += [info["title"], f"  FLOPs: {info['flops']:,} ({info['flops_note']})", head]
        for r in info["rungs"]:
            note = f"   scaled from {r['scaled_from']} of {info['batch']} samples" if r["scaled_from"] else ""
            lines.append(
                f"  {r['label']:<20}{fmt_time(r['seconds']):>10}{fmt_speedup(r['speedup_vs_scalar']):>12}"
                f"{fmt_speedup(r['speedup_vs_per_sample']):>15}{fmt_gflops(r['gflops']):>10}"
                f"{fmt_share(r['peak_share']):>9}{note}"
            )
        lines.append("")
    lines += _sweep_lines(report["sweep"])
    for what, why in report["skipped"].items():
        lines.append(f"skipped {what}: {why}")
    h = report.get("headline")
    if h and h.get("whole_batch_vs_scalar") is not None:
        lines.append(
            f"{h['op']}: speedup of whole-batch matrices over per-sample loops "
            f"{fmt_speedup(h['whole_batch_vs_per_sample'])}, over scalar loops "
            f"{fmt_speedup(h['whole_batch_vs_scalar'])} ({fmt_gflops(h['whole_batch_gflops'])} GFLOP/s, "
            f"{fmt_share(h['whole_batch_peak_share'])} of peak)"
        )
    lines.append(
        "times: best of the repeats; rows 'scaled from k' ran on the first k/2 and k samples only and are "
        "extrapolated linearly to the batch"
    )
    others = report.get("other_processes_cpu_share")
    if others is not None:
        lines.append(
            f"other processes used {100 * others:.0f}% of the machine's CPU time during the run"
            + ("  WARNING: the timings are unreliable; rerun on a quiet machine" if others > 0.1 else "")
        )
    return "\n".join(lines)


def _sweep_lines(sweep) -> list[str]:
    rungs = sorted({p["rung"] for p in sweep["points"]}, key=["vecnn", "pytorch"].index)
    batches = sorted({p["batch"] for p in sweep["points"]})
    at = {(p["batch"], p["rung"]): p for p in sweep["points"]}
    lines = [
        f"{sweep['title']} ({sweep['flops_note']}): GFLOP/s (% of peak)",
        f"  {'batch':>6}" + "".join(f"{r:>20}" for r in rungs),
    ]
    for b in batches:
        cells = []
        for r in rungs:
            p = at.get((b, r))
            cells.append(f"{p['gflops']:.3g} ({fmt_share(p['peak_share'])})" if p else "-")
        lines.append(f"  {b:>6}" + "".join(f"{c:>20}" for c in cells))
    return lines + [""]
