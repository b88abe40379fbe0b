"""A member's figures as Ray metrics: on the Ray dashboard and its Prometheus endpoint.

Ray names them ray_kafka_replicator_* in Prometheus. Counters are fed the increase
since the last export, so they keep counting when the member replaces a failed flow
with a new one (whose own counts start at zero).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ray.util.metrics import Counter, Gauge, Histogram

from replicator.metrics import Snapshot

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000]

MEMBER = ("direction", "member")
TOPIC = ("direction", "topic", "member")
PARTITION = ("direction", "topic", "partition", "member")
GROUP = ("direction", "group", "member")

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
    """Publishes one member's FlowMetrics snapshots to ray.util.metrics.

    Not thread-safe: the member serializes its calls.
    """

    def __init__(self, direction: str, member: str):
        self._tags = {"direction": direction, "member": member}
        self._previous: Snapshot | None = None
        self._lagging: set[str] = set()
        self._totals = Totals()
        self.records = Counter("kafka_replicator_records_replicated",
                               "Records handed to the target producer", TOPIC)
        self.bytes = Counter("kafka_replicator_bytes_replicated",
                             "Bytes of the record batches written to the target", TOPIC)
        self.loop_skipped = Counter("kafka_replicator_records_loop_skipped",
                                    "Records not copied back to the cluster they came from", TOPIC)
        self.error_skipped = Counter("kafka_replicator_records_error_skipped",
                                     "Records the target rejected and onError: skip skipped", TOPIC)
        self.lost_upstream = Counter("kafka_replicator_records_lost_upstream",
                                     "Records the source deleted (retention, DeleteRecords) before "
                                     "they were copied", TOPIC)
        self.errors = Counter("kafka_replicator_errors",
                              "Failed sends and rejected records", MEMBER)
        self.latency = Histogram("kafka_replicator_replication_latency_ms",
                                 "Target acknowledgement time minus the record's timestamp",
                                 LATENCY_BOUNDARIES_MS, MEMBER)
        self.lag = Gauge("kafka_replicator_consumer_lag",
                         "Source log-end offset minus the member's position", PARTITION)
        self.commits = Counter("kafka_replicator_commits",
                               "Offset commits to the source cluster", MEMBER)
        self.commit_seconds = Counter("kafka_replicator_commit_seconds",
                                      "Time spent committing; over commits, the mean commit latency",
                                      MEMBER)
        self.rebalances = Counter("kafka_replicator_rebalances",
                                  "Partition assignments received by the member", MEMBER)
        self.restarts = Counter("kafka_replicator_actor_restarts",
                                "Times Ray restarted the member's actor", MEMBER)
        self.assigned = Gauge("kafka_replicator_assigned_partitions",
                              "Partitions the member owns", MEMBER)
        self.synced = Counter("kafka_replicator_group_offsets_synced",
                              "Offsets of consumer groups written on the target by the group "
                              "offset sync", GROUP)
        self.sync_behind = Gauge("kafka_replicator_group_sync_behind",
                                 "Records a synced group's offsets on the target are behind its "
                                 "translated source offsets", GROUP)
        self._synced: dict[str, int] = {}

    def restarted(self) -> None:
        self.restarts.inc(1, self._tags)

    def new_flow(self) -> None:
        """The next snapshots come from a new flow, counting from zero."""
        self._previous = None

    def publish(self, snapshot: Snapshot, latencies: list[float], assigned: int) -> Totals:
        """Export what changed since the previous snapshot; return the running totals."""
        before = self._previous or _NOTHING
        self._previous = snapshot
        totals = self._totals
        for topic in snapshot.records.keys() | snapshot.loop_skipped.keys() | snapshot.error_skipped.keys():
            tags = {**self._tags, "topic": topic}
            totals.records += _add(self.records, snapshot.records, before.records, topic, tags)
            totals.bytes += _add(self.bytes, snapshot.bytes, before.bytes, topic, tags)
            totals.loop_skipped += _add(self.loop_skipped, snapshot.loop_skipped,
                                        before.loop_skipped, topic, tags)
            _add(self.error_skipped, snapshot.error_skipped, before.error_skipped, topic, tags)
        for topic in snapshot.lost_upstream:
            _add(self.lost_upstream, snapshot.lost_upstream, before.lost_upstream, topic,
                 {**self._tags, "topic": topic})
        totals.errors += _increase(self.errors, snapshot.errors - before.errors, self._tags)
        totals.commits += _increase(self.commits, snapshot.commits - before.commits, self._tags)
        _increase(self.commit_seconds, snapshot.commit_seconds - before.commit_seconds, self._tags)
        totals.rebalances += _increase(self.rebalances, snapshot.rebalances - before.rebalances,
                                       self._tags)
        for latency in latencies:
            self.latency.observe(max(0.0, latency), self._tags)
        self._export_lag(snapshot.lag)
        self.assigned.set(assigned, self._tags)
        return replace(totals)

    def publish_sync(self, figures) -> None:
        """Export the group offset sync's figures (a replicator.group_sync.SyncFigures)."""
        for group, written in dict(figures.written).items():
            tags = {**self._tags, "group": group}
            _increase(self.synced, written - self._synced.get(group, 0), tags)
            self._synced[group] = written
        for group, behind in dict(figures.behind).items():
            self.sync_behind.set(behind, {**self._tags, "group": group})

    def _export_lag(self, lag: dict[str, int]) -> None:
        for name, value in lag.items():
            self.lag.set(value, self._partition(name))
        # A partition that moved to another member: its lag is that member's to report now.
        for name in self._lagging - lag.keys():
            self.lag.set(0, self._partition(name))
        self._lagging = set(lag)

    def _partition(self, name: str) -> dict[str, str]:
        topic, _, partition = name.rpartition("[")
        return {**self._tags, "topic": topic, "partition": partition.rstrip("]")}


def _add(counter: Counter, now: dict[str, int], before: dict[str, int], topic: str,
         tags: dict[str, str]) -> int:
    return _increase(counter, now.get(topic, 0) - before.get(topic, 0), tags)


def _increase(counter: Counter, amount: float, tags: dict[str, str]) -> float:
    """Add a positive amount (Ray's counters refuse zero) and return what was added."""
    if amount <= 0:
        return 0
    counter.inc(amount, tags)
    return amount
