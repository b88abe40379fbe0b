"""The bench says how far the brokers' disk reads ahead: at thousands of partitions that, not the
replicator, sets how fast the brokers take writes (BENCHMARKS.md, *Scale*)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from workbench.bench.harness import readahead_kb
from workbench.bench.report import _scale

SWEEP = {"plan": {"records": 1000, "record_bytes": 100, "idle_seconds": 20}, "points": []}


def test_the_scale_report_warns_of_a_disk_that_reads_ahead_megabytes():
    text = "\n".join(_scale(SWEEP, 8192))
    assert "**The brokers' disk reads ahead 8,192 KiB**" in text
    assert "up to 16 MiB into each broker's page cache" in text


def test_the_scale_report_states_an_ordinary_read_ahead_without_alarm():
    text = "\n".join(_scale(SWEEP, 128))
    assert "The brokers' disk reads ahead 128 KiB." in text and "**" not in text


def test_the_scale_report_says_when_the_read_ahead_is_unknown():
    assert "read-ahead is not known" in "\n".join(_scale(SWEEP, None))


def test_read_ahead_is_none_off_a_block_device():
    assert readahead_kb(Path("/proc")) is None


def test_read_ahead_is_that_of_the_disk_under_the_path(tmp_path):
    source = subprocess.run(["findmnt", "-no", "SOURCE", "--target", str(tmp_path)],
                            capture_output=True, text=True).stdout.strip()
    queue = Path("/sys/class/block") / Path(source).name / "queue" / "read_ahead_kb"
    if not source.startswith("/dev/") or not queue.exists():
        pytest.skip(f"{tmp_path} is not on a whole disk ({source or 'no source'})")
    assert readahead_kb(tmp_path) == int(queue.read_text())
