"""The results as a Markdown table (ratios ours / MirrorMaker 2) and a PNG chart."""

from __future__ import annotations

from pathlib import Path

NAMES = {"ours": "ours", "mirrormaker2": "MirrorMaker 2", "relay": "bare kafka-python relay", "chart settings": "existing chart's settings",
         "ceiling": "ceiling (Kafka perf tools)"}
SIZES = ("100B", "1KiB")


def _num(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def _row(results: dict, name: str, size: str) -> dict | None:
    for row in results["throughput"]:
        if row["name"] == name and row["size"] == size:
            return row
    return None


def table(results: dict) -> str:
    members = results.get("members")
    lines = [
        f"Throughput ({results['mode']} run; ours: {members} members, MirrorMaker 2: tasks.max={members})",
        "",
        "| row | 100 B rec/s | 100 B MB/s | 100 B rec/CPU-s | 1 KiB rec/s | 1 KiB MB/s | 1 KiB rec/CPU-s | verified |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in ("ours", "mirrormaker2", "chart settings", "ceiling"):
        cells, checks = [], []
        present = False
        for size in SIZES:
            row = _row(results, name, size)
            if row is None:
                cells += ["–"] * 3
                continue
            present = True
            mark = "" if row["valid"] else " ✗"
            cells += [_num(row["records_per_second"]) + mark, _num(row["mb_per_second"], 1),
                      _num(row["records_per_cpu_second"])]
            checks.append(f"{size} {'ok' if row['valid'] else 'INVALID'}")
        if present:
            label = NAMES[name] + (" (subset)" if name == "chart settings" else "")
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {', '.join(checks)} |")
        if name == "mirrormaker2":
            cells = []
            for size in SIZES:
                a, b = _row(results, "ours", size), _row(results, "mirrormaker2", size)
                if a and b:
                    cells += [_ratio(a["records_per_second"], b["records_per_second"]),
                              _ratio(a["mb_per_second"], b["mb_per_second"]),
                              _ratio(a["records_per_cpu_second"], b["records_per_cpu_second"])]
                else:
                    cells += ["–"] * 3
            lines.append("| **ours / MirrorMaker 2** | " + " | ".join(f"**{c}**" for c in cells) + " | |")
    chart, ours = _row(results, "chart settings", "100B"), _row(results, "ours", "100B")
    if chart and ours:
        lines.append(f"| ours / chart settings (100 B) | {_ratio(ours['records_per_second'], chart['records_per_second'])}"
                     " | | | | | | |")
    if results.get("latency"):
        lines += ["", "End-to-end latency (producer CreateTime to arrival on the target), ms", "",
                  "| replicator | offered load | p50 | p99 | max | records | verified | Kafka alone p50 / p99 |",
                  "|---|---:|---:|---:|---:|---:|---|---:|"]
        by = {(r["replicator"], r["rate"]): r for r in results["latency"]}
        for who in ("ours", "mirrormaker2", "relay"):
            for rate in sorted({r["rate"] for r in results["latency"]}):
                r = by.get((who, rate))
                if r:
                    offered = f"{rate:,}/s" + (f" (achieved {r['achieved_rate']:,.0f}/s)"
                                               if r.get("achieved_rate") and r["achieved_rate"] < 0.95 * rate else "")
                    lines.append(f"| {NAMES[who]} | {offered} | {_num(r['p50_ms'], 1)} | {_num(r['p99_ms'], 1)} | "
                                 f"{_num(r['max_ms'], 1)} | {r['arrived']:,} | {'ok' if r['valid'] else 'INVALID'} | "
                                 f"{_num(r.get('direct_p50_ms'), 1)} / {_num(r.get('direct_p99_ms'), 1)} |")
        for rate in sorted({r["rate"] for r in results["latency"]}):
            a, b = by.get(("ours", rate)), by.get(("mirrormaker2", rate))
            if a and b:
                lines.append(f"| **ours / MirrorMaker 2** | {rate:,}/s | **{_ratio(a['p50_ms'], b['p50_ms'])}** | "
                             f"**{_ratio(a['p99_ms'], b['p99_ms'])}** | **{_ratio(a['max_ms'], b['max_ms'])}** | | | |")
    c = results.get("cpu_per_record") or {}
    if c.get("records"):
        lines += ["", f"CPU per record with kafka-python ({c['records']:,} records of 100 B, µs)", "",
                  "| decode (consumer poll) | encode (producer send + I/O) | ours (flow, checkpoint, provenance) "
                  "| sum: our floor | = records per CPU-second |",
                  "|---:|---:|---:|---:|---:|",
                  f"| {c['decode_us']:.1f} | {c['encode_us']:.1f} | {c['ours_us']:.1f} | {c['floor_us']:.1f} | "
                  f"{c['floor_records_per_cpu_second']:,.0f} |"]
    return "\n".join(lines)


def chart(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"ours": "#1f77b4", "mirrormaker2": "#ff7f0e", "chart settings": "#7f7f7f", "ceiling": "#2ca02c"}
    names = [n for n in ("ours", "mirrormaker2", "chart settings", "ceiling")
             if any(r["name"] == n for r in results["throughput"])]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    width = 0.8 / max(1, len(names))
    for panel, (key, title, scale) in enumerate((
            ("records_per_second", "Throughput (records/s)", "log"),
            ("records_per_cpu_second", "Records per CPU-second", "log"))):
        ax = axes[panel]
        for i, name in enumerate(names):
            xs, ys = [], []
            for j, size in enumerate(SIZES):
                row = _row(results, name, size)
                if row and row.get(key):
                    xs.append(j + (i - (len(names) - 1) / 2) * width)
                    ys.append(row[key])
            if not ys:
                continue
            bars = ax.bar(xs, ys, width, label=NAMES[name], color=colors[name])
            ax.bar_label(bars, labels=[_short(y) for y in ys], fontsize=7, padding=1)
        ax.set_xticks(range(len(SIZES)), ["100 B records", "1 KiB records"])
        ax.set_yscale(scale)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    ax = axes[2]
    lat = results.get("latency") or []
    rates = sorted({r["rate"] for r in lat})
    groups = [(who, rate) for rate in rates for who in ("ours", "mirrormaker2")]
    by = {(r["replicator"], r["rate"]): r for r in lat}
    for k, (pct, hatch) in enumerate((("p50_ms", ""), ("p99_ms", "//"), ("max_ms", ".."))):
        xs, ys, cs = [], [], []
        for g, (who, rate) in enumerate(groups):
            r = by.get((who, rate))
            if r and r.get(pct):
                xs.append(g + (k - 1) * 0.27)
                ys.append(r[pct])
                cs.append(colors[who])
        if not ys:
            continue
        bars = ax.bar(xs, ys, 0.27, color=cs, hatch=hatch, edgecolor="white", label=pct.replace("_ms", ""))
        ax.bar_label(bars, labels=[_short(y) for y in ys], fontsize=7, padding=1)
    ax.set_xticks(range(len(groups)), [f"{'ours' if w == 'ours' else 'MM2'}\n{r:,}/s" for w, r in groups], fontsize=8)
    for g, (who, rate) in enumerate(groups):
        r = by.get((who, rate))
        if r and r.get("direct_p99_ms"):
            ax.hlines([r["direct_p50_ms"], r["direct_p99_ms"]], g - 0.42, g + 0.42, colors="black",
                      linestyles=["solid", "dashed"], linewidth=1,
                      label="Kafka alone p50 / p99 (no replication)" if g == 0 else None)
    if groups:
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_title("End-to-end latency (ms): p50, p99 (//), max (..)", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    machine = results.get("machine", {})
    fig.suptitle(f"kafka-replicator vs MirrorMaker 2 — {results['mode']} run, {machine.get('cpus')} CPUs "
                 f"({machine.get('cpu_model', '')}), brokers on the same machine", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.0f}k" if value >= 1e4 else f"{value / 1e3:.1f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
