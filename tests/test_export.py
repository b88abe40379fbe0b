"""replicator.export: what the series are fed, on a backend that records every call."""

from __future__ import annotations

from replicator.backlog import BacklogFigures, PartitionBacklog
from replicator.export import BacklogExporter, Exporter
from replicator.metrics import Latency, Snapshot


class Recorded:
    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def inc(self, value, tags):
        self.calls.append((self.name, "inc", value, tags))

    def set(self, value, tags):
        self.calls.append((self.name, "set", value, tags))

    def observe(self, value, tags):
        self.calls.append((self.name, "observe", value, tags))


class Recording:
    def __init__(self):
        self.calls: list = []
        self.made: list[str] = []

    def metric(self, series):
        self.made.append(series.name)
        return Recorded(series.name.removeprefix("kafka_replicator_"), self.calls)

    def of(self, name: str) -> list:
        return [call[1:] for call in self.calls if call[0] == name]


def snapshot(**fields) -> Snapshot:
    values = dict(records={}, bytes={}, loop_skipped={}, error_skipped={}, errors=0, commits=0,
                  commit_seconds=0.0, rebalances=0, lag={}, latency_ms=[])
    return Snapshot(**{**values, **fields})


def partition(number: int, records: int | None, seconds: float | None, owner: str | None = None):
    return PartitionBacklog("orders", number, 0, records or 0, records, seconds, owner)


def test_batches_are_counted_per_topic_and_how_by_their_increase():
    backend = Recording()
    exporter = Exporter(backend, "sourceToTarget", "sourceToTarget-0")
    exporter.publish(snapshot(batches={("orders", "copy"): 3}), [], 1)
    exporter.publish(snapshot(batches={("orders", "copy"): 5, ("orders", "encode"): 1}), [], 1)
    tags = {"direction": "sourceToTarget", "member": "sourceToTarget-0", "topic": "orders"}
    assert backend.of("batches_written") == [("inc", 3, {**tags, "how": "copy"}), ("inc", 2, {**tags, "how": "copy"}),
                                             ("inc", 1, {**tags, "how": "encode"})]


def test_each_latency_sample_goes_to_the_member_histogram_and_its_topic_histogram():
    backend = Recording()
    Exporter(backend, "sourceToTarget", "m").publish(snapshot(), [Latency("orders", 12.0), Latency(None, 7.0)], 1)
    member = {"direction": "sourceToTarget", "member": "m"}
    assert backend.of("replication_latency_ms") == [("observe", 12.0, member), ("observe", 7.0, member)]
    assert backend.of("topic_latency_ms") == [("observe", 12.0, {**member, "topic": "orders"})]


def test_a_member_makes_no_backlog_series_and_the_backlog_no_member_series():
    member, backlog = Recording(), Recording()
    Exporter(member, "sourceToTarget", "m")
    BacklogExporter(backlog, "sourceToTarget")
    assert not set(member.made) & set(backlog.made)
    assert set(backlog.made) == {"kafka_replicator_committed_lag", "kafka_replicator_lag_seconds",
                                 "kafka_replicator_partitions_ownerless"}


def test_the_backlog_sets_each_partition_and_zeroes_one_no_longer_measured():
    backend = Recording()
    exporter = BacklogExporter(backend, "sourceToTarget")
    exporter.publish(BacklogFigures("sourceToTarget", [partition(0, 4, 30.0), partition(1, 0, 0.0, "m")]))
    backend.calls.clear()
    exporter.publish(BacklogFigures("sourceToTarget", [partition(0, 6, None)]))  # 1 gone; 0's age unread
    tags = {"direction": "sourceToTarget", "topic": "orders"}
    assert backend.of("committed_lag") == [("set", 6, {**tags, "partition": "0"}), ("set", 0, {**tags, "partition": "1"})]
    assert backend.of("lag_seconds") == [("set", 0, {**tags, "partition": "1"})]
    assert backend.of("partitions_ownerless") == [("set", 1, {"direction": "sourceToTarget"})]
