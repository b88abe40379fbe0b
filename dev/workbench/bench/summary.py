"""Several runs as one: each figure's median with its range, and each ratio computed within its
own run first (a noisy moment moves both rows of a run together).

    python -m workbench.bench.summary RUN.json RUN.json RUN.json

prints the Markdown tables that BENCHMARKS.md publishes and the README quotes.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from .report import LATENCY, MEASURES, NAMES, SETS, THROUGHPUT, baseline, checks, latency_of, row_of, rss_mb

# Our rows against another, as BENCHMARKS.md lists them.
RATIOS = (("ours-batch", "mirrormaker2-tuned"), ("ours-record", "mirrormaker2-tuned"),
          ("ours-exactly-once", "mirrormaker2-tuned"), ("ours-ray", "mirrormaker2-tuned"),
          ("ours-exactly-once", "mirrormaker2-eos"), ("ours-ray", "ours-batch"))
PERCENTILES = ("p50_ms", "p99_ms", "p999_ms", "max_ms")


def spread(values: list[float | None], digits: int = 0, unit: str = "") -> str:
    """'median (low–high)' of the values measured, saying how many runs gave none; a dash when none did."""
    found = [v for v in values if v is not None]
    if not found:
        return "–"
    text = f"{statistics.median(found):,.{digits}f}{unit}"
    if len(found) > 1:
        text += f" ({min(found):,.{digits}f}{unit}–{max(found):,.{digits}f}{unit})"
    if len(found) < len(values):
        text += f" [{len(found)} of {len(values)} runs]"
    return text


def _figure(row: dict | None, key: str) -> float | None:
    return row[key] if row and row["valid"] else None  # an unverified copy has no figure


def throughput(runs: list[dict]) -> list[str]:
    lines = ["| data set | row | rec/s, median (range) | rec/CPU-s, median (range) | peak RSS MB, median |",
             "|---|---|---:|---:|---:|"]
    for size, label in SETS.items():
        for name in THROUGHPUT:
            rows = [row_of(run, name, size) for run in runs]
            if not any(rows):
                continue
            rss = [mb for mb in (rss_mb(row) for row in rows if row) if mb]
            lines.append(f"| {label} | {NAMES[name]} | {spread([_figure(r, 'records_per_second') for r in rows])} | "
                         f"{spread([_figure(r, 'records_per_cpu_second') for r in rows])} | "
                         f"{f'{statistics.median(rss):,.0f}' if rss else '–'} |")
    return lines


def _ratio(run: dict, ours: str, other: str, size: str, key: str) -> float | None:
    a, b = _figure(row_of(run, ours, size), key), _figure(row_of(run, other, size), key)
    return a / b if a and b else None


def ratios(runs: list[dict]) -> list[str]:
    lines = [f"| data set | ratio (within each run) | {MEASURES['records_per_second']}, median (range) | "
             f"{MEASURES['records_per_cpu_second']}, median (range) | each run's records/s ratio |",
             "|---|---|---:|---:|---|"]
    for size, label in SETS.items():
        for ours, other in RATIOS:
            per_second = [_ratio(run, ours, other, size, "records_per_second") for run in runs]
            if not any(per_second):
                continue
            per_cpu = [_ratio(run, ours, other, size, "records_per_cpu_second") for run in runs]
            each = ", ".join("–" if r is None else f"{r:.2f}×" for r in per_second)
            lines.append(f"| {label} | **{NAMES[ours]} / {NAMES[other]}** | **{spread(per_second, 2, '×')}** | "
                         f"{spread(per_cpu, 2, '×')} | {each} |")
    return lines


def latency(runs: list[dict]) -> list[str]:
    lines = ["| replicator | offered load | p50 | p99 | p99.9 | max | Kafka alone p99 | its cores | idle cores |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rates = sorted({r["rate"] for run in runs for r in run.get("latency") or []})
    for rate in rates:
        for who in LATENCY:
            found = [latency_of(run, who, rate) for run in runs]
            found = [r for r in found if r and r["valid"]]
            if not found:
                continue
            cells = [spread([r.get(p) for r in found], 1) for p in (*PERCENTILES, "direct_p99_ms")]
            cells += [spread([r.get(p) for r in found], 2) for p in ("replicator_cores", "idle_cores")]
            lines.append(f"| {NAMES[who]} | {rate:,}/s | " + " | ".join(cells) + " |")
    return lines


def targets(runs: list[dict]) -> list[str]:
    """Each target in each run, and in how many runs it was met."""
    per_run = [checks(run) for run in runs]
    lines = ["| what | target | " + " | ".join(f"run {i}" for i in range(1, len(runs) + 1)) + " | met in |",
             "|---|---|" + "---|" * len(runs) + "---|"]
    for i, (what, _, target, _) in enumerate(per_run[0]):
        found = [run[i] for run in per_run]
        met = [m for _, _, _, m in found]
        verdict = "–" if all(m is None for m in met) else f"{sum(bool(m) for m in met)} of {len(runs)}"
        lines.append(f"| {what} | {target} | " + " | ".join(figure for _, figure, _, _ in found) + f" | {verdict} |")
    return lines


def summary(runs: list[dict]) -> str:
    commits = sorted({(run.get("source") or {}).get("commit") or "?" for run in runs})
    compared = {baseline(run) for run in runs}
    return "\n".join([
        f"{len(runs)} runs of commit {', '.join(commits)}; our rows against {', '.join(NAMES[c] for c in compared)}",
        "", "Throughput", "", *throughput(runs),
        "", "Ratios, computed within each run", "", *ratios(runs),
        "", "End-to-end latency, ms (verified loads only)", "", *latency(runs),
        "", "Targets", "", *targets(runs),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m workbench.bench.summary", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="result JSON files of `python -m workbench.bench`")
    args = parser.parse_args()
    print(summary([json.loads(path.read_text()) for path in args.runs]))


if __name__ == "__main__":
    main()
