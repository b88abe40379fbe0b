"""The benchmark's processes: their CPU seconds, from /proc (utime + stime of every
thread; for a measured window, each thread's scheduler runtime), and how they are stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def machine_busy() -> tuple[float, float]:
    """The machine's busy and total CPU time so far, in ticks of every core (/proc/stat)."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def idle_cores(since: tuple[float, float], seconds: float) -> float:
    """The machine's cores left idle, on average, over the `seconds` since a `machine_busy()`."""
    busy, total = machine_busy()
    return ((total - since[1]) - (busy - since[0])) / _TICKS / seconds


def wait_quiet(busy_below: float, settled: float, timeout: float) -> tuple[float, float]:
    """Wait until the machine's cores were less than `busy_below` busy (a fraction, all cores
    together) for `settled` seconds in a row, or `timeout`; the seconds waited and the busy
    fraction of the last second."""
    started = time.monotonic()
    quiet_since = None
    busy, total = machine_busy()
    fraction = 1.0
    while True:
        time.sleep(0.5)
        now_busy, now_total = machine_busy()
        fraction = (now_busy - busy) / max(1, now_total - total)
        busy, total = now_busy, now_total
        now = time.monotonic()
        if fraction >= busy_below:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        if quiet_since is not None and now - quiet_since >= settled or now - started >= timeout:
            return now - started, fraction


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


def rss_bytes(pid: int) -> int:
    """Resident memory of a live process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds each live thread of a process ran, to the microsecond.

    The scheduler's own sum (`se.sum_exec_runtime`, milliseconds): /proc/<pid>/stat counts
    10 ms ticks, too coarse for a copy that uses a few tens of milliseconds. Empty where the
    kernel does not expose it.
    """
    seconds = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return seconds
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/sched", "rb") as handle:
                for line in handle:
                    if line.startswith(b"se.sum_exec_runtime"):
                        seconds[int(tid)] = float(line.split(b":")[1]) / 1000.0
                        break
        except (OSError, ValueError):
            continue
    return seconds


class CpuMeter:
    """CPU seconds used by a set of processes between two marks. `pids`: a list, or a callable
    giving the processes of now (a Ray cluster's workers come and go)."""

    def __init__(self, pids):
        self._pids = pids if callable(pids) else (lambda listed=list(pids): listed)
        self._start = None
        self._last: dict[int, float] = {}
        self._threads: dict[tuple[int, int], float] = {}

    @property
    def pids(self) -> list[int]:
        return self._pids()

    def rss(self) -> int:
        """The processes' resident memory now, in bytes."""
        return sum(rss_bytes(pid) for pid in self.pids)

    def sample(self) -> float:
        # A process that exited keeps its last reading (its final ticks since the last sample are lost).
        for pid in self.pids:
            value = cpu_seconds(pid)
            if value:
                self._last[pid] = value
        return sum(self._last.values())

    def mark(self) -> None:
        self._start = self.sample()
        self._threads = self._thread_times()

    def since_mark(self) -> float:
        threads = self._thread_times()
        if threads and self._threads:
            # A thread started since the mark counts whole; one that ended since loses
            # what it ran after the mark (our members' and MM2's threads live long).
            return sum(max(0.0, ran - self._threads.get(key, 0.0)) for key, ran in threads.items())
        return self.sample() - (self._start or 0.0)

    def _thread_times(self) -> dict[tuple[int, int], float]:
        return {(pid, tid): ran for pid in self.pids
                for tid, ran in thread_cpu_seconds(pid).items()}


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
