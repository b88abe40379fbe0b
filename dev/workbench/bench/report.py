"""The results as Markdown tables (ratios of our modes to MirrorMaker 2 tuned, or to MirrorMaker 2
as shipped in a run without the tuned row; the targets) and a PNG chart."""

from __future__ import annotations

from pathlib import Path

from .data import ONE_PER_BATCH

NAMES = {"ours-batch": "ours, batch mode", "ours-record": "ours, record mode",
         "ours-exactly-once": "ours, batch mode, exactly once", "mirrormaker2": "MirrorMaker 2",
         "mirrormaker2-tuned": "MirrorMaker 2 tuned", "mirrormaker2-eos": "MirrorMaker 2 tuned, exactly once",
         "ours-ray": "ours on Ray, batch mode", "relay": "bare kafka-python relay", "chart settings": "existing chart's settings",
         "ceiling": "ceiling (Kafka perf tools)"}
SHORT = {"ours-batch": "batch", "ours-ray": "Ray", "ours-record": "record", "ours-exactly-once": "exactly once",
         "mirrormaker2": "MM2", "mirrormaker2-tuned": "MM2 tuned", "mirrormaker2-eos": "MM2 exactly once"}
COLORS = {"ours-batch": "#1f77b4", "ours-ray": "#6baed6", "ours-record": "#9ecae1", "ours-exactly-once": "#08519c",
          "mirrormaker2": "#ff7f0e", "mirrormaker2-tuned": "#d62728", "mirrormaker2-eos": "#8c564b",
          "chart settings": "#7f7f7f", "ceiling": "#2ca02c"}
OURS = ("ours-batch", "ours-record", "ours-exactly-once")
MIRROR_MAKERS = ("mirrormaker2", "mirrormaker2-tuned", "mirrormaker2-eos")
SEARCH = "mm2-search:"  # rows of the tuning search: "mm2-search:<tuning>"
THROUGHPUT = (*OURS, "ours-ray", *MIRROR_MAKERS, "chart settings", "ceiling")
LATENCY = (*OURS, *MIRROR_MAKERS, "relay")
SETS = {"100B": "100 B", "1KiB": "1 KiB", ONE_PER_BATCH: "100 B, 1 record per batch"}
MEASURES = {"records_per_second": "records/s", "records_per_cpu_second": "records per CPU-second"}


def _num(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def row_of(results: dict, name: str, size: str) -> dict | None:
    for row in results["throughput"]:
        if row["name"] == name and row["size"] == size:
            return row
    return None


def baseline(results: dict) -> str:
    """What our rows are compared with: MirrorMaker 2 tuned when the run has it."""
    measured = {row["name"] for row in results["throughput"]} | {r["replicator"] for r in results.get("latency") or []}
    return "mirrormaker2-tuned" if "mirrormaker2-tuned" in measured else "mirrormaker2"


def _name(name: str) -> str:
    if name.startswith(SEARCH):
        return f"MirrorMaker 2, tuning {name[len(SEARCH):]!r}"
    return NAMES[name]


def latency_of(results: dict, who: str, rate: int) -> dict | None:
    for run in results.get("latency") or []:
        if run["replicator"] == who and run["rate"] == rate:
            return run
    return None


def table(results: dict) -> str:
    lines = _throughput(results)
    if results.get("latency"):
        lines += _latency_table(results)
    lines += _costs(results.get("cpu_per_record") or {}, "records of 100 B")
    lines += _costs(results.get("cpu_per_record_one_per_batch") or {}, "records of 100 B, one per batch,")
    if results.get("failover"):
        lines += _failover(results["failover"])
    if results.get("translation"):
        t = results["translation"]
        lines += ["", f"Translation in memory: one commit in each of {t['partitions']:,} partitions of "
                      f"{t['records_per_partition']:,} records ({t['spans_per_partition']} spans each) "
                      f"in {t['seconds']:.3f} s"]
    if results.get("offset_map"):
        m = results["offset_map"]
        lines += ["", f"Offset map on the target after this run: {m['records']:,} records, "
                      f"{m['spans']:,} spans, {m['bytes']:,} bytes (before compaction)"]
    if results.get("scale"):
        lines += _scale(results["scale"], (results.get("machine") or {}).get("disk_readahead_kb"))
    lines += _targets(results)
    return "\n".join(lines)


# Above this, each partition's index files cost its broker megabytes of page cache (harness.readahead_kb).
READAHEAD_WARN_KB = 512


def _scale(sweep: dict, readahead_kb: int | None = None) -> list[str]:
    plan = sweep["plan"]
    lines = ["", f"Scale: {plan['records']:,} records of {plan['record_bytes']} B per shape (topics × partitions); "
                 f"idle CPU over {plan['idle_seconds']:.0f} s after the copy; RSS and idle CPU per process",
             "", "| replicator | shape | members | rec/s | µs CPU/record | start-up (s) | peak RSS (MB) | "
                 "idle CPU (% of a core) | kill absorbed (s) | verified |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for p in sweep["points"]:
        rss = ", ".join(f"{b / 1e6:,.0f}" for b in p["peak_rss_bytes"])
        idle = ", ".join(f"{c:.1f}" for c in p["idle_cpu_percent"]) or "–"
        kill = _num(p["kill_absorbed_seconds"], 1)
        lines.append(f"| {NAMES[p['replicator']]} | {p['shape']} | {p['members']} | {_num(p['records_per_second'])} | "
                     f"{_num(p['cpu_us_per_record'], 2)} | {_num(p['startup_seconds'], 1)} | {rss} | {idle} | "
                     f"{kill} | {'ok' if p['valid'] else 'INVALID: ' + p['verification']} |")
    if readahead_kb is None:
        lines += ["", "The brokers' disk read-ahead is not known (the bench did not start the brokers)."]
    elif readahead_kb > READAHEAD_WARN_KB:
        lines += ["", f"**The brokers' disk reads ahead {readahead_kb:,} KiB**: the first touch of each partition's "
                      f"two index files pulls up to {2 * readahead_kb / 1024:,.0f} MiB into each broker's page cache, "
                      "and the brokers spend the wide shapes faulting pages in (the kernel's default is 128 KiB)."]
    else:
        lines += ["", f"The brokers' disk reads ahead {readahead_kb:,} KiB."]
    offsets = sweep.get("offsets") or {}
    if offsets:
        added = offsets["map_added"]
        lines += ["", f"Offset map: the copy of {offsets['partitions']:,} partitions changed it by "
                      f"{added.get('records', 0):+,} records (compaction drops superseded ones), "
                      f"{added.get('spans', 0):+,} spans, {added.get('bytes', 0):+,} bytes "
                      f"(now {offsets['map_after'].get('spans', 0):,} spans, "
                      f"{offsets['map_after'].get('bytes', 0):,} bytes in all); "
                      f"`offsets translate` of a group committed on all of them: {offsets['translate_seconds']:.1f} s, "
                      f"{offsets['translated']} of {offsets['partitions']:,} partitions translated"]
    if sweep.get("targets"):
        lines += ["", "| replicator | what | figure | target | met? |", "|---|---|---|---|---|"]
        lines += [f"| {NAMES[t['replicator']]} | {t['what']} | {t['figure']} | {t['target']} | "
                  f"{'yes' if t['met'] else '**no**'} |" for t in sweep["targets"]]
    return lines


def _failover(runs: list[dict]) -> list[str]:
    lines = ["", "Failover: a consumer group moves to the target from the offsets the replicator put there",
             "", "| replicator | records | offsets on the target (replays included) | still to process | lost | "
             "read twice | never committed on the source | offsets ready after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        if not r["read"] and not r["expected"]:
            lines.append(f"| {NAMES[r['replicator']]} | {r['records']:,} | | {r['detail']} | | | | |")
            continue
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.1f} s"
        translated = "" if r.get("translate_seconds") is None else f" (translate {r['translate_seconds']:.2f} s)"
        lines.append(f"| {NAMES[r['replicator']]} | {r['records']:,} | {r['on_target']:,} | {r['expected']:,} | {r['lost']:,} | "
                     f"{r['read_twice']:,} | {r['foreign']:,} | {seconds}{translated} |")
    return lines


def _throughput(results: dict) -> list[str]:
    members = results.get("members")
    compared = baseline(results)
    searched = sorted({row["name"] for row in results["throughput"] if row["name"].startswith(SEARCH)})
    lines = [
        f"Throughput ({results['mode']} run; ours: {members} members, MirrorMaker 2: tasks.max={members})",
        "",
        "| data set | row | rec/s | MB/s | rec/CPU-s | peak RSS (MB) | verified |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for size, label in SETS.items():
        for name in (*THROUGHPUT, *searched):
            row = row_of(results, name, size)
            if row is None:
                continue
            mark = "" if row["valid"] else " ✗"
            subset = " (subset)" if name == "chart settings" else ""
            lines.append(f"| {label} | {_name(name)}{subset} | {_num(row['records_per_second'])}{mark} | "
                         f"{_num(row['mb_per_second'], 1)} | {_num(row['records_per_cpu_second'])} | "
                         f"{_num(rss_mb(row))} | {'ok' if row['valid'] else 'INVALID'} |")
            if name in (compared, "chart settings"):
                lines += _ratio_lines(results, size, name)
            elif name == "mirrormaker2-eos":  # exactly once against exactly once
                lines += _ratio_lines(results, size, name, ("ours-exactly-once",))
    return lines


def rss_mb(row: dict) -> float | None:
    rss = row.get("details", {}).get("copy", {}).get("peak_rss_bytes")
    return rss / 1e6 if rss else None


def _ratio_lines(results: dict, size: str, other: str, names: tuple[str, ...] = (*OURS, "ours-ray")) -> list[str]:
    """Each of our `names` against `other` on one data set: records/s and per CPU-second
    (MB/s is the same ratio as records/s: the same records were copied)."""
    lines = []
    theirs = row_of(results, other, size)
    for name in names:
        ours = row_of(results, name, size)
        if ours and theirs:
            lines.append(f"| {SETS[size]} | **{NAMES[name]} / {NAMES[other]}** | "
                         f"**{_ratio(ours['records_per_second'], theirs['records_per_second'])}** | | "
                         f"**{_ratio(ours['records_per_cpu_second'], theirs['records_per_cpu_second'])}** | | |")
    return lines


def _latency_table(results: dict) -> list[str]:
    lines = ["", "End-to-end latency (producer CreateTime to arrival on the target), ms; each load "
             "measured in turns taken in rotation by the replicators", "",
             "| replicator | offered load | p50 | p99 | p99.9 | max | records | turns | verified "
             "| Kafka alone p50 / p99 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    rates = sorted({r["rate"] for r in results["latency"]})
    for who in LATENCY:
        for rate in rates:
            r = latency_of(results, who, rate)
            if r:
                offered = f"{rate:,}/s" + (f" (achieved {r['achieved_rate']:,.0f}/s)"
                                           if r.get("achieved_rate") and r["achieved_rate"] < 0.95 * rate else "")
                lines.append(f"| {NAMES[who]} | {offered} | {_num(r['p50_ms'], 1)} | {_num(r['p99_ms'], 1)} | "
                             f"{_num(r.get('p999_ms'), 1)} | {_num(r['max_ms'], 1)} | {r['arrived']:,} | "
                             f"{r.get('turns', 1)} | {'ok' if r['valid'] else 'INVALID'} | "
                             f"{_num(r.get('direct_p50_ms'), 1)} / {_num(r.get('direct_p99_ms'), 1)} |")
    compared = baseline(results)
    for who in OURS:
        for rate in rates:
            a, b = latency_of(results, who, rate), latency_of(results, compared, rate)
            if a and b:
                ratios = [_ratio(a.get(pct), b.get(pct)) for pct in ("p50_ms", "p99_ms", "p999_ms", "max_ms")]
                lines.append(f"| **{NAMES[who]} / {NAMES[compared]}** | {rate:,}/s | "
                             + " | ".join(f"**{r}**" for r in ratios) + " | | | | |")
    own = [(who, rate, latency_of(results, who, rate)) for who in OURS for rate in rates]
    own = [(who, rate, r) for who, rate, r in own if r and r.get("own_metric", {}).get("writes")]
    if own:
        lines += ["", "Our own metric (`kafka_replicator_topic_latency_ms`: target acknowledgement minus "
                  "CreateTime, one observation per write, p50/p99 estimated from its buckets) beside "
                  "the bench's arrivals, ms", "",
                  "| replicator | offered load | bench p50 / p99 | own metric p50 / p99 | writes observed |",
                  "|---|---:|---:|---:|---:|"]
        for who, rate, r in own:
            m = r["own_metric"]
            lines.append(f"| {NAMES[who]} | {rate:,}/s | {_num(r['p50_ms'], 1)} / {_num(r['p99_ms'], 1)} | "
                         f"{_num(m.get('p50_ms'), 1)} / {_num(m.get('p99_ms'), 1)} | {m['writes']:,} |")
    return lines


# The steps of costs.py, as the table names them.
STEPS = {"fetch": "fetch + split (the Fetcher)", "plan": "plan (Shipper.plan, batch mode)",
         "rewrite": "rewrite (writer fields + CRC-32C: a copy's header, a merge's stamp)",
         "request": "produce request (build + serialize)",
         "merge": "merge as bytes (batch mode's small batches) + stamp",
         "merge + provenance": "merge as bytes with provenance headers appended + stamp (record mode)",
         "re-encode": "re-encode (decode + encode + stamp: fallbacks)",
         # Results of code before 2026-12-06, when record mode decoded every record.
         "re-encode + provenance": "re-encode with provenance headers (record mode until 2026-12-06)"}


def _costs(c: dict, records: str) -> list[str]:
    if c.get("error"):
        return ["", f"CPU per record: not measured ({c['error']})"]
    if not c.get("records"):
        return []
    per_batch, per_record = c["us_per_batch"], c["us_per_record"]
    lines = ["", f"CPU of our data path's steps, in process ({c['records']:,} {records} in "
             f"{c['batches']:,} batches of {c['batch_records']:,.0f} records and {c['batch_bytes']:,.0f} bytes "
             f"on average, {c['requests']:,} produce requests; median of {c['runs']} runs)", "",
             "| step | µs per batch | µs per record |", "|---|---:|---:|"]
    lines += [f"| {name} | {per_batch[step]:,.1f} | {per_record[step]:.3f} |"
              for step, name in STEPS.items() if step in per_batch]
    relay = c.get("kafka_python") or {}
    relay_us, relay_rate = "–", "–"
    if relay.get("records"):
        relay_us = f"{relay['decode_us']:.1f} + {relay['encode_us']:.1f} = {relay['relay_us']:.1f}"
        relay_rate = f"{relay['records_per_cpu_second']:,.0f}"
    lines += ["", "CPU of a whole path per record, and the records per CPU-second it implies", "",
              "| | batch mode: fetch + plan + rewrite + request "
              "| record mode: fetch + merge with provenance + request "
              "| a kafka-python relay: consumer decode + producer encode |",
              "|---|---:|---:|---:|",
              f"| µs per record | {c['batch_mode_us']:.2f} | {c['record_mode_us']:.2f} | {relay_us} |",
              f"| records per CPU-second | {c['batch_mode_records_per_cpu_second']:,.0f} | "
              f"{c['record_mode_records_per_cpu_second']:,.0f} | {relay_rate} |",
              "", c.get("note", "")]
    return lines


# -- targets ---------------------------------------------------------------------------------

# A check: (what, figure, target, met). A target counts as met only on verified copies; a
# ratio reported without a target has `met` None.
Check = tuple[str, str, str, bool | None]


def _targets(results: dict) -> list[str]:
    found = checks(results)
    if all(figure.startswith("not measured") for _, figure, _, _ in found):
        return []  # a run of other rows (--only)
    lines = ["", "Targets", "", "| what | figure | target | met? |", "|---|---|---|---|"]
    lines += [f"| {what} | {figure} | {target} | {'–' if met is None else 'yes' if met else '**no**'} |"
              for what, figure, target, met in found]
    return lines


def checks(results: dict) -> list[Check]:
    """The targets of one run, each checked within it."""
    return [
        _ratio_check(results, "ours-batch", "100B", "records_per_second", 2.0),
        _ratio_check(results, "ours-batch", "1KiB", "records_per_second", 1.5),
        _ratio_check(results, "ours-batch", "100B", "records_per_cpu_second", 5.0),
        _ratio_check(results, "ours-batch", ONE_PER_BATCH, "records_per_second", 1.0),
        _p99_check(results, "ours-batch", 1000),
        _p99_check(results, "ours-batch", 10000),
        _keeps_up_check(results, "ours-batch", 10000),
        _ratio_check(results, "ours-record", "100B", "records_per_second", 0.8),
        _ratio_check(results, "ours-exactly-once", "100B", "records_per_second", 2.0),
        _ratio_check(results, "ours-exactly-once", "100B", "records_per_second", None, against="mirrormaker2-eos"),
        _ratio_check(results, "ours-ray", "100B", "records_per_second", 0.9, against="ours-batch"),
    ]


def _ratio_check(results: dict, name: str, size: str, key: str, minimum: float | None,
                 against: str | None = None) -> Check:
    """Our row against another on `key`; with no `minimum`, the ratio is reported only."""
    compared = against or baseline(results)
    what = f"{NAMES[name]}: {MEASURES[key]} vs {NAMES[compared]}, {SETS[size]}"
    target = "reported (no target)" if minimum is None else f"≥ {minimum:.1f}×"
    unmet = None if minimum is None else False
    ours, theirs = row_of(results, name, size), row_of(results, compared, size)
    if not (ours and theirs and ours[key] and theirs[key]):
        return what, "not measured", target, unmet
    ratio = ours[key] / theirs[key]
    figure = f"{ratio:.2f}× ({_num(ours[key])} vs {_num(theirs[key])})"
    if not (ours["valid"] and theirs["valid"]):
        return what, figure + ", copy not verified", target, unmet
    return what, figure, target, None if minimum is None else ratio >= minimum


def _p99_check(results: dict, who: str, rate: int) -> Check:
    compared = baseline(results)
    what = f"{NAMES[who]}: p99 latency at {rate:,} records/s"
    target = f"≤ {NAMES[compared]}'s"
    ours, theirs = latency_of(results, who, rate), latency_of(results, compared, rate)
    if not (ours and theirs and ours["p99_ms"] is not None and theirs["p99_ms"] is not None):
        return what, "not measured", target, False
    figure = f"{ours['p99_ms']:.1f} ms vs {theirs['p99_ms']:.1f} ms"
    if not (ours["valid"] and theirs["valid"]):
        return what, figure + ", not every record arrived", target, False
    return what, figure, target, ours["p99_ms"] <= theirs["p99_ms"]


def _keeps_up_check(results: dict, who: str, rate: int) -> Check:
    what = f"{NAMES[who]}: keeps up with {rate:,} records/s offered"
    target = "achieved ≥ 95% of offered, every record arrived"
    run = latency_of(results, who, rate)
    if not (run and run["sent"]):
        return what, "not measured" + (f": {run['detail']}" if run else ""), target, False
    achieved = run["achieved_rate"] or 0.0
    figure = f"achieved {achieved:,.0f}/s; {run['arrived']:,} of {run['sent']:,} records arrived"
    # valid: every record sent arrived, once, in order per partition.
    return what, figure, target, achieved >= 0.95 * rate and run["valid"]


# -- chart -----------------------------------------------------------------------------------


def chart(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    names = [n for n in THROUGHPUT if any(r["name"] == n for r in results["throughput"])]
    for ax, key, title in ((axes[0], "records_per_second", "Throughput (records/s)"),
                           (axes[1], "records_per_cpu_second", "Records per CPU-second")):
        _throughput_panel(ax, results, names, key, title)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    _latency_panel(axes[2], results.get("latency") or [])
    machine = results.get("machine", {})
    fig.suptitle(f"kafka-replicator vs MirrorMaker 2 (as shipped and tuned) — {results['mode']} run, "
                 f"{machine.get('cpus')} CPUs ({machine.get('cpu_model', '')}), brokers on the same machine",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _throughput_panel(ax, results: dict, names: list[str], key: str, title: str) -> None:
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs, ys = [], []
        for j, size in enumerate(SETS):
            row = row_of(results, name, size)
            if row and row.get(key):
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(row[key])
        if ys:
            bars = ax.bar(xs, ys, width, label=NAMES[name], color=COLORS[name])
            ax.bar_label(bars, labels=[_short(y) for y in ys], fontsize=6, padding=1)
    ax.set_xticks(range(len(SETS)), ["100 B records", "1 KiB records", "100 B records,\n1 per batch"])
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def _latency_panel(ax, lat: list[dict]) -> None:
    # Runs in which records arrived (the table lists the others, as INVALID).
    by = {(r["replicator"], r["rate"]): r for r in lat if r["arrived"]}
    groups = [(who, rate) for rate in sorted({r["rate"] for r in lat}) for who in (*OURS, *MIRROR_MAKERS)
              if (who, rate) in by]
    for k, (pct, hatch) in enumerate((("p50_ms", ""), ("p99_ms", "//"), ("max_ms", ".."))):
        xs, ys, cs = [], [], []
        for g, group in enumerate(groups):
            value = by[group].get(pct)
            if value:
                xs.append(g + (k - 1) * 0.27)
                ys.append(value)
                cs.append(COLORS[group[0]])
        if ys:
            bars = ax.bar(xs, ys, 0.27, color=cs, hatch=hatch, edgecolor="white", label=pct.replace("_ms", ""))
            ax.bar_label(bars, labels=[_short(y) for y in ys], fontsize=6, padding=1)
    ax.set_xticks(range(len(groups)), [f"{SHORT[who]}\n{rate:,}/s" for who, rate in groups], fontsize=8)
    for g, group in enumerate(groups):
        r = by[group]
        if r.get("direct_p99_ms"):
            ax.hlines([r["direct_p50_ms"], r["direct_p99_ms"]], g - 0.42, g + 0.42, colors="black",
                      linestyles=["solid", "dashed"], linewidth=1,
                      label="Kafka alone p50 / p99 (no replication)" if g == 0 else None)
    if groups:
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_title("End-to-end latency (ms): p50, p99 (//), max (..)", fontsize=11)
    ax.grid(axis="y", alpha=0.3)


def _short(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.0f}k" if value >= 1e4 else f"{value / 1e3:.1f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
