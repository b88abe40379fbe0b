"""The benchmark's processes: their CPU seconds, from /proc (utime + stime of every
thread), and how they are stopped."""

from __future__ import annotations

import os
import signal
import subprocess

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process used so far (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return 0.0
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def total_cpu(pids) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


class CpuMeter:
    """CPU seconds used by a set of processes between two marks."""

    def __init__(self, pids):
        self.pids = list(pids)
        self._start = None
        self._last = {pid: 0.0 for pid in self.pids}

    def sample(self) -> float:
        # A process that exited keeps its last reading (its final ticks since the last sample are lost).
        for pid in self.pids:
            value = cpu_seconds(pid)
            if value:
                self._last[pid] = value
        return sum(self._last.values())

    def mark(self) -> None:
        self._start = self.sample()

    def since_mark(self) -> float:
        return self.sample() - (self._start or 0.0)


def terminate(proc: subprocess.Popen | None, timeout: float = 30.0) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`; the exit code (None if never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
