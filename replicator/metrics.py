"""What a Flow counts. Plain Python: the Ray actor exports it, the CLI prints it."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Latency(NamedTuple):
    """One end-to-end latency sample: of a batch of `topic`'s records, in milliseconds."""

    topic: str | None
    ms: float


@dataclass
class Snapshot:
    """Totals since the flow started, plus the current lag and recent latencies."""

    records: dict[str, int]
    bytes: dict[str, int]
    loop_skipped: dict[str, int]
    error_skipped: dict[str, int]
    errors: int
    commits: int
    commit_seconds: float
    rebalances: int
    lag: dict[str, int]
    latency_ms: list[float]
    # written batches by (topic, how): copy (as they came), merge (several into one), encode (rebuilt)
    batches: dict[tuple[str, str], int] = field(default_factory=dict)
    lost_upstream: dict[str, int] = field(default_factory=dict)  # records deleted at the source uncopied
    at: float = field(default_factory=time.time)

    def latency(self, q: float) -> float | None:
        return percentile(self.latency_ms, q)


class FlowMetrics:
    """Counters updated by the flow's thread, read from any thread.

    Records and bytes (of the batches written) are counted per topic once per batch;
    end-to-end latency (acknowledgement time minus the newest record's timestamp) is
    sampled once per acknowledged batch.
    """

    def __init__(self, window: int = 4096):
        self._lock = threading.Lock()
        self.records: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.batches: Counter[tuple[str, str]] = Counter()
        self.loop_skipped: Counter[str] = Counter()
        self.error_skipped: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.errors = 0
        self.commits = 0
        self.commit_seconds = 0.0
        self.rebalances = 0
        self.lag: dict[str, int] = {}
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._new_latencies: deque[Latency] = deque(maxlen=16 * window)

    def shipped(self, topic: str, how: str, records: int, nbytes: int, loop_skipped: int) -> None:
        """One source range handed to the target producer (or skipped, how == "skip")."""
        with self._lock:
            if records:
                self.records[topic] += records
                self.bytes[topic] += nbytes
                self.batches[topic, how] += 1
            if loop_skipped:
                self.loop_skipped[topic] += loop_skipped

    def skipped(self, topic: str) -> None:
        with self._lock:
            self.error_skipped[topic] += 1
            self.errors += 1

    def lost_upstream(self, topic: str, records: int) -> None:
        """Records the source deleted before they were copied."""
        with self._lock:
            self.lost[topic] += records

    def failed(self) -> None:
        with self._lock:
            self.errors += 1

    def committed(self, seconds: float) -> None:
        with self._lock:
            self.commits += 1
            self.commit_seconds += seconds

    def rebalanced(self) -> None:
        with self._lock:
            self.rebalances += 1

    def set_lag(self, lag: dict[str, int]) -> None:
        with self._lock:
            self.lag = lag

    def acknowledged(self, timestamp_ms: int, topic: str | None = None) -> None:
        """One latency sample, of a batch of `topic` (deque appends are thread-safe)."""
        latency = time.time() * 1000.0 - timestamp_ms
        self._latency_ms.append(latency)
        self._new_latencies.append(Latency(topic, latency))

    def drain_latencies(self) -> list[Latency]:
        """Latency samples taken since the last call, for histogram export."""
        drained = []
        while self._new_latencies:
            drained.append(self._new_latencies.popleft())
        return drained

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                records=dict(self.records),
                bytes=dict(self.bytes),
                loop_skipped=dict(self.loop_skipped),
                error_skipped=dict(self.error_skipped),
                errors=self.errors,
                commits=self.commits,
                commit_seconds=self.commit_seconds,
                rebalances=self.rebalances,
                lag=dict(self.lag),
                latency_ms=list(self._latency_ms),
                batches=dict(self.batches),
                lost_upstream=dict(self.lost),
            )
