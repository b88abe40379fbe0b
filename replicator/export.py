"""A member's figures, and a direction's backlog, as metrics for any metrics library: the
series, and what feeds them.

Two backends publish the same series: Ray's `ray.util.metrics` (cluster/telemetry.py; Prometheus
sees them as ray_kafka_replicator_*) and `prometheus_client` for `replicate --metrics-port`
(replicator/prometheus.py; kafka_replicator_*). Counters are fed the increase since the last
export, so they keep counting when the member replaces a failed flow with a new one (whose own
counts start at zero). The backlog's series (no `member` label) come from one place per
direction, which measures it (replicator.backlog) whether or not members run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from .backlog import BacklogFigures
from .metrics import Latency, Snapshot

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000]

MEMBER = ("direction", "member")
TOPIC = ("direction", "topic", "member")
PARTITION = ("direction", "topic", "partition", "member")
GROUP = ("direction", "group", "member")
HOW = ("direction", "topic", "how", "member")
BACKLOG = ("direction", "topic", "partition")
DIRECTION = ("direction",)


@dataclass(frozen=True)
class Series:
    """One metric: its kind, name (without a backend's prefix), help text and labels."""

    kind: str  # counter, gauge or histogram
    name: str
    help: str
    labels: tuple[str, ...]


SERIES = {series.name: series for series in (
    Series("counter", "kafka_replicator_records_replicated", "Records handed to the target producer", TOPIC),
    Series("counter", "kafka_replicator_bytes_replicated",
           "Bytes of the record batches written to the target", TOPIC),
    Series("counter", "kafka_replicator_records_loop_skipped",
           "Records not copied back to the cluster they came from", TOPIC),
    Series("counter", "kafka_replicator_records_error_skipped",
           "Records the target rejected and onError: skip skipped", TOPIC),
    Series("counter", "kafka_replicator_records_lost_upstream",
           "Records the source deleted (retention, DeleteRecords) before they were copied", TOPIC),
    Series("counter", "kafka_replicator_errors", "Failed sends and rejected records", MEMBER),
    Series("counter", "kafka_replicator_batches_written",
           "Record batches written to the target, by how: copy (as fetched), merge (several "
           "fetched into one) or encode (rebuilt)", HOW),
    Series("histogram", "kafka_replicator_replication_latency_ms",
           "Target acknowledgement time minus the record's timestamp", MEMBER),
    Series("histogram", "kafka_replicator_topic_latency_ms",
           "Target acknowledgement time minus the record's timestamp, per source topic", TOPIC),
    Series("gauge", "kafka_replicator_consumer_lag",
           "Source log-end offset minus the member's position, in the partitions it owns", PARTITION),
    Series("counter", "kafka_replicator_commits", "Offset commits to the source cluster", MEMBER),
    Series("counter", "kafka_replicator_commit_seconds",
           "Time spent committing; over commits, the mean commit latency", MEMBER),
    Series("counter", "kafka_replicator_rebalances", "Partition assignments received by the member", MEMBER),
    Series("counter", "kafka_replicator_actor_restarts", "Times Ray restarted the member's actor", MEMBER),
    Series("gauge", "kafka_replicator_assigned_partitions", "Partitions the member owns", MEMBER),
    Series("gauge", "kafka_replicator_partition_stopped",
           "1 while the partition is stopped by a record the target rejected (onError: fail)", PARTITION),
    Series("counter", "kafka_replicator_group_offsets_synced",
           "Offsets of consumer groups written on the target by the group offset sync", GROUP),
    Series("gauge", "kafka_replicator_group_sync_behind",
           "Records a synced group's offsets on the target are behind its translated source offsets",
           GROUP),
    Series("gauge", "kafka_replicator_committed_lag",
           "Source log-end offset minus the group's committed offset, owned by a member or not",
           BACKLOG),
    Series("gauge", "kafka_replicator_lag_seconds",
           "Age of the oldest source record not yet copied (the one at the group's committed "
           "offset); 0 when caught up", BACKLOG),
    Series("gauge", "kafka_replicator_partitions_ownerless",
           "Replicated partitions that no member of the direction's group owns", DIRECTION),
)}


class Metric(Protocol):
    """A backend's metric, as Ray's take their tags: one method of these per kind."""

    def inc(self, value: float, tags: dict[str, str]) -> None: ...

    def set(self, value: float, tags: dict[str, str]) -> None: ...

    def observe(self, value: float, tags: dict[str, str]) -> None: ...


class Backend(Protocol):
    def metric(self, series: Series) -> Metric: ...


_NOTHING = Snapshot(records={}, bytes={}, loop_skipped={}, error_skipped={}, errors=0, commits=0,
                    commit_seconds=0.0, rebalances=0, lag={}, latency_ms=[])


@dataclass
class Totals:
    """What a member did since its process started, across the flows it ran."""

    records: int = 0
    bytes: int = 0
    loop_skipped: int = 0
    errors: int = 0
    commits: int = 0
    rebalances: int = 0


class Exporter:
    """Publishes one member's FlowMetrics snapshots to a backend.

    Not thread-safe: the member serializes its calls.
    """

    def __init__(self, backend: Backend, direction: str, member: str):
        self._tags = {"direction": direction, "member": member}
        self._previous: Snapshot | None = None
        self._lagging: set[str] = set()
        self._stopped: set[str] = set()
        self._totals = Totals()
        self._synced: dict[str, int] = {}
        self._metrics = {name: backend.metric(series) for name, series in SERIES.items()
                         if "member" in series.labels}

    def _metric(self, short: str) -> Metric:
        return self._metrics[f"kafka_replicator_{short}"]

    def restarted(self) -> None:
        self._metric("actor_restarts").inc(1, self._tags)

    def new_flow(self) -> None:
        """The next snapshots come from a new flow, counting from zero."""
        self._previous = None

    def publish(self, snapshot: Snapshot, latencies: list[Latency], assigned: int,
                stopped: list[str] = ()) -> Totals:
        """Export what changed since the previous snapshot, and the partitions (`topic[p]`)
        stopped by an error now; return the running totals."""
        before = self._previous or _NOTHING
        self._previous = snapshot
        totals = self._totals
        add = self._add
        for topic in snapshot.records.keys() | snapshot.loop_skipped.keys() | snapshot.error_skipped.keys():
            tags = {**self._tags, "topic": topic}
            totals.records += add("records_replicated", snapshot.records, before.records, topic, tags)
            totals.bytes += add("bytes_replicated", snapshot.bytes, before.bytes, topic, tags)
            totals.loop_skipped += add("records_loop_skipped", snapshot.loop_skipped,
                                       before.loop_skipped, topic, tags)
            add("records_error_skipped", snapshot.error_skipped, before.error_skipped, topic, tags)
        for topic in snapshot.lost_upstream:
            add("records_lost_upstream", snapshot.lost_upstream, before.lost_upstream, topic,
                {**self._tags, "topic": topic})
        totals.errors += self._increase("errors", snapshot.errors - before.errors, self._tags)
        totals.commits += self._increase("commits", snapshot.commits - before.commits, self._tags)
        self._increase("commit_seconds", snapshot.commit_seconds - before.commit_seconds, self._tags)
        totals.rebalances += self._increase("rebalances", snapshot.rebalances - before.rebalances,
                                            self._tags)
        for (topic, how), written in snapshot.batches.items():
            self._increase("batches_written", written - before.batches.get((topic, how), 0),
                           {**self._tags, "topic": topic, "how": how})
        latency, by_topic = self._metric("replication_latency_ms"), self._metric("topic_latency_ms")
        for topic, ms in latencies:
            latency.observe(max(0.0, ms), self._tags)
            if topic is not None:
                by_topic.observe(max(0.0, ms), {**self._tags, "topic": topic})
        self._export_lag(snapshot.lag)
        self._export_stopped(set(stopped))
        self._metric("assigned_partitions").set(assigned, self._tags)
        return replace(totals)

    def publish_sync(self, figures) -> None:
        """Export the group offset sync's figures (a replicator.group_sync.SyncFigures)."""
        for group, written in dict(figures.written).items():
            tags = {**self._tags, "group": group}
            self._increase("group_offsets_synced", written - self._synced.get(group, 0), tags)
            self._synced[group] = written
        for group, behind in dict(figures.behind).items():
            self._metric("group_sync_behind").set(behind, {**self._tags, "group": group})

    def _export_lag(self, lag: dict[str, int]) -> None:
        gauge = self._metric("consumer_lag")
        for name, value in lag.items():
            gauge.set(value, self._partition(name))
        # A partition that moved to another member: its lag is that member's to report now.
        for name in self._lagging - lag.keys():
            gauge.set(0, self._partition(name))
        self._lagging = set(lag)

    def _export_stopped(self, stopped: set[str]) -> None:
        gauge = self._metric("partition_stopped")
        for name in stopped:
            gauge.set(1, self._partition(name))
        # Restarted, or moved to another member: stopped no more here.
        for name in self._stopped - stopped:
            gauge.set(0, self._partition(name))
        self._stopped = stopped

    def _partition(self, name: str) -> dict[str, str]:
        topic, _, partition = name.rpartition("[")
        return {**self._tags, "topic": topic, "partition": partition.rstrip("]")}

    def _add(self, short: str, now: dict[str, int], before: dict[str, int], topic: str,
             tags: dict[str, str]) -> int:
        return self._increase(short, now.get(topic, 0) - before.get(topic, 0), tags)

    def _increase(self, short: str, amount: float, tags: dict[str, str]) -> float:
        """Add a positive amount (Ray's counters refuse zero) and return what was added."""
        if amount <= 0:
            return 0
        self._metric(short).inc(amount, tags)
        return amount


class BacklogExporter:
    """Publishes one direction's backlog measures (replicator.backlog) to a backend.

    A partition no longer measured (its topic deleted, or no longer copied) is set to 0:
    Ray's gauges cannot be removed. A lag in seconds that could not be read this time keeps
    its last value.
    """

    def __init__(self, backend: Backend, direction: str):
        self._tags = {"direction": direction}
        self._metrics = {name: backend.metric(series) for name, series in SERIES.items()
                         if "member" not in series.labels}
        self._measured: set[tuple[str, str]] = set()

    def publish(self, figures: BacklogFigures) -> None:
        records = self._metrics["kafka_replicator_committed_lag"]
        seconds = self._metrics["kafka_replicator_lag_seconds"]
        measured = set()
        for partition in figures.partitions:
            tags = {**self._tags, "topic": partition.topic, "partition": str(partition.partition)}
            measured.add((partition.topic, tags["partition"]))
            if partition.records is not None:
                records.set(partition.records, tags)
            if partition.seconds is not None:
                seconds.set(partition.seconds, tags)
        for topic, partition in self._measured - measured:
            tags = {**self._tags, "topic": topic, "partition": partition}
            records.set(0, tags)
            seconds.set(0, tags)
        self._measured = measured
        self._metrics["kafka_replicator_partitions_ownerless"].set(figures.ownerless, self._tags)
