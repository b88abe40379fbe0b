"""The failover row: a consumer group moves to the target; what does it lose, what does it read twice?

Per replicator, on a topic of its own: records (with an aborted transaction among them) are
written to the source; an application group commits positions part-way through each
partition, as a consumer that processed that far; the replicator copies everything and
moves the group's offsets to the target (ours: the offset map and `syncGroupOffsets`'s
pass; MirrorMaker 2: its checkpoints with `sync.group.offsets.enabled`, as documented);
then a consumer of that group on the target reads from the offsets it finds there to
the end. Every record carries a unique value, so the reads are checked one by one
against the source records after each position.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from replicator.config import load_config
from replicator.group_sync import GroupSync
from replicator.offset_map import PartitionMap, Span
from replicator.translation import Translator, coordinated
from replicator import map_topic
from . import data, mirrormaker, ours

log = logging.getLogger("workbench.bench")

PARTITIONS = 3


@dataclass
class FailoverRun:
    replicator: str
    records: int
    expected: int = 0  # records after the group's positions: what it still had to process
    read: int = 0
    lost: int = 0
    read_twice: int = 0
    foreign: int = 0  # read but never committed on the source (aborted records)
    on_target: int = 0  # records in the target topic: the copies, replayed ones included
    positions: dict = field(default_factory=dict)  # partition: (source position, target offset)
    seconds: float | None = None  # from the copy's end to the group's offsets on the target
    translate_seconds: float | None = None  # ours: `offsets translate` of the group, map read included
    valid: bool = False
    detail: str = ""

    def as_json(self) -> dict:
        return asdict(self)


def load(source: str, topic: str, per_partition: int) -> dict[int, list[bytes]]:
    """Unique values per partition, with an aborted transaction in partition 0 half-way."""
    data.create_topic(source, topic, PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=source, linger_ms=5)
    aborting = KafkaProducer(bootstrap_servers=source, transactional_id=f"{topic}-tx")
    aborting.init_transactions()
    for partition in range(PARTITIONS):
        for i in range(per_partition):
            producer.send(topic, key=b"k%d" % i, value=b"%s-%d-%d" % (topic.encode(), partition, i),
                          partition=partition)
            if partition == 0 and i == per_partition // 2:
                producer.flush()
                aborting.begin_transaction()
                for j in range(20):
                    aborting.send(topic, value=b"aborted-%d" % j, partition=0)
                aborting.flush()  # written to the log, then aborted
                aborting.abort_transaction()
    producer.flush()
    producer.close()
    aborting.close()
    return values_after(source, topic, {p: 0 for p in range(PARTITIONS)})


def values_after(bootstrap: str, topic: str, offsets: dict[int, int], timeout: float = 120.0) -> dict[int, list[bytes]]:
    """What a read_committed consumer placed at `offsets` reads to the end, per partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                             enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in offsets]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, offsets[tp.partition])
        ends = consumer.end_offsets(partitions)
        found: dict[int, list[bytes]] = {p: [] for p in offsets}
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                found[tp.partition].extend(r.value for r in records)
        return found
    finally:
        consumer.close()


def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + 30
        while True:
            errors = coordinated(admin.alter_group_offsets, group,
                                 {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
            refused = {tp: error for tp, error in errors.items() if error.errno != 0}
            if not refused:
                return
            if time.monotonic() > deadline or not all(e.retriable for e in refused.values()):
                raise RuntimeError(f"could not commit {group}'s offsets: {refused}")
            time.sleep(0.5)
    finally:
        admin.close()


def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = coordinated(admin.list_group_offsets, {group: None}).get(group, {})
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        admin.close()


def judge(run: FailoverRun, source_values: dict[int, list[bytes]], positions: dict[int, int],
          read: dict[int, list[bytes]]) -> FailoverRun:
    """Count, per record, what the failed-over consumer missed and what it read again."""
    for partition, values in source_values.items():
        processed, pending = values[:positions[partition]], values[positions[partition]:]
        got = read.get(partition, [])
        run.expected += len(pending)
        run.read += len(got)
        run.lost += len(set(pending) - set(got))
        done, known = set(processed), set(values)
        run.read_twice += sum(1 for v in got if v in done) + len(got) - len(set(got))
        run.foreign += sum(1 for v in got if v not in known)
    run.valid = run.lost == 0 and run.foreign == 0
    run.detail = (f"{run.expected} records to process after the group's positions; read {run.read}: "
                  f"{run.lost} lost, {run.read_twice} read twice, {run.foreign} never committed "
                  "on the source")
    return run


class Failover:
    """Runs the scenario for one replicator; `bench` gives the clusters, members and work dir."""

    def __init__(self, source: str, target: str, members: int, work: Path, per_partition: int):
        self.source, self.target, self.members, self.work = source, target, members, work
        self.per_partition = per_partition
        self.translated_in: float | None = None

    def run(self, who: str) -> FailoverRun:
        tag = uuid.uuid4().hex[:6]
        topic, group = f"bench.failover.{who}-{tag}", f"bench-failover-app-{tag}"
        source_values = load(self.source, topic, self.per_partition)
        # Positions on no round number: MM2 syncs offsets every offset.lag.max (100) records.
        positions = {p: min(len(v), self.per_partition * (p + 1) // 4 + 37) for p, v in source_values.items()}
        source_positions = self._source_offsets(topic, positions)
        commit(self.source, group, {TopicPartition(topic, p): o for p, o in source_positions.items()})
        run = FailoverRun(who, sum(len(v) for v in source_values.values()))
        try:
            wanted = {p: len(v) for p, v in source_values.items()}
            target_topic, offsets, seconds = (self._mirror_maker(topic, group, tag, wanted)
                                              if who == "mirrormaker2" else self._ours(who, topic, group, tag, wanted))
        except Exception as exc:
            run.detail = f"failed: {exc!r}"
            return run
        finally:
            data.delete_topics(self.source, [topic])
        run.seconds = seconds
        run.translate_seconds = self.translated_in
        run.positions = {p: (source_positions[p], offsets.get(p)) for p in source_positions}
        if len(offsets) < PARTITIONS:
            run.detail = f"the group has offsets on the target for {sorted(offsets)} only"
            data.delete_topics(self.target, [target_topic])
            return run
        read = values_after(self.target, target_topic, offsets)
        run.on_target = sum(self._ends(self.target, target_topic).values())
        data.delete_topics(self.target, [target_topic])
        return judge(run, source_values, positions, read)

    def _source_offsets(self, topic: str, positions: dict[int, int]) -> dict[int, int]:
        """The source offset of the record at each position (the aborted records take offsets)."""
        consumer = KafkaConsumer(bootstrap_servers=self.source, isolation_level="read_committed",
                                 enable_auto_commit=False)
        try:
            offsets = {}
            for partition, position in positions.items():
                tp = TopicPartition(topic, partition)
                consumer.assign([tp])
                consumer.seek(tp, 0)
                seen = 0
                while partition not in offsets:
                    for record in consumer.poll(timeout_ms=500).get(tp, []):
                        if seen == position:
                            offsets[partition] = record.offset
                            break
                        seen += 1
            return offsets
        finally:
            consumer.close()

    def _ours(self, who: str, topic: str, group: str, tag: str, wanted: dict[int, int]) -> tuple[str, dict[int, int], float]:
        target_topic = f"{topic}.copy"
        replicator_group = f"bench-failover-{who}-{tag}"

        def configured(name: str, commit_interval_ms: int):
            return ours.write_config(
                self.work / f"failover-{who}-{name}.yaml", self.source, self.target, replicator_group,
                {topic: target_topic}, self.members, who, {
                    "consumerGroup": {"sourceToTarget": {"groupId": replicator_group,
                                                         "autoCommitIntervalMs": commit_interval_ms}},
                    "replication": {"sourceToTarget": {"syncGroupOffsets": {"enabled": True, "groups": [group]}}}})

        # The crash: everything copied, nothing committed, the members killed.
        members = ours.Replicators(configured("crashing", 3_600_000), self.members, self.work,
                                   f"failover-{who}-crashing").start()
        try:
            self._wait_copied(target_topic, wanted, members.alive)
        finally:
            members.kill()
        config = configured("after", 1_000)
        members = ours.Replicators(config, self.members, self.work, f"failover-{who}").start()
        try:
            self._wait_copied(target_topic, wanted, members.alive)
            ends = {TopicPartition(topic, p): o for p, o in self._ends(self.source, topic).items()}
            try:
                _wait(lambda: committed(self.source, replicator_group) == ends, 60, "the replicator's commit")
            except TimeoutError as exc:
                logs = "".join(f"\n{path.name}: " + "".join(path.read_text(errors="replace").splitlines(True)[-15:])
                               for path in sorted(self.work.glob(f"failover-{who}-m*.log")))
                raise TimeoutError(f"{exc}: committed {committed(self.source, replicator_group)}, "
                                   f"source ends {ends}; the members' last lines:{logs}") from None
        finally:
            members.stop()
        started = time.monotonic()
        with Translator(load_config(config), "sourceToTarget") as translator:
            translator.translate(group)
        self.translated_in = time.monotonic() - started
        started = time.monotonic()
        GroupSync(load_config(config), "sourceToTarget").sync_once()
        return target_topic, self._target_offsets(group, target_topic), time.monotonic() - started

    def _mirror_maker(self, topic: str, group: str, tag: str, wanted: dict[int, int]) -> tuple[str, dict[int, int], float]:
        self.translated_in = None
        # The crash: everything copied, its source offsets not flushed yet, the process killed.
        mm2 = mirrormaker.MirrorMaker(self.source, self.target, [topic], self.members, self.work, tag,
                                      groups=[group], flush_interval_ms=3_600_000).start()
        try:
            self._wait_copied(topic, wanted, mm2.alive)
        finally:
            mm2.kill()
        mm2 = mirrormaker.MirrorMaker(self.source, self.target, [topic], self.members, self.work, tag,
                                      groups=[group]).start()
        try:
            self._wait_copied(topic, wanted, mm2.alive)
            _wait(lambda: self._ends_stable(topic), 120, "MirrorMaker 2's replay")
            started = time.monotonic()
            _wait(lambda: len(self._target_offsets(group, topic)) == PARTITIONS and self._stable(group, topic),
                  120, "MirrorMaker 2's group offset sync")
            seconds = time.monotonic() - started
        finally:
            mm2.stop()
        return topic, self._target_offsets(group, topic), seconds

    def _ends_stable(self, topic: str, seconds: float = 5.0) -> bool:
        before = self._ends(self.target, topic)
        time.sleep(seconds)
        return self._ends(self.target, topic) == before

    def _stable(self, group: str, topic: str, seconds: float = 5.0) -> bool:
        before = self._target_offsets(group, topic)
        time.sleep(seconds)
        return self._target_offsets(group, topic) == before

    def _target_offsets(self, group: str, topic: str) -> dict[int, int]:
        return {tp.partition: o for tp, o in committed(self.target, group).items() if tp.topic == topic}

    def _wait_copied(self, target_topic: str, wanted: dict[int, int], alive) -> None:
        """Until the target partitions hold at least the source's committed records."""
        def copied() -> bool:
            ends = self._ends(self.target, target_topic)
            return all(ends.get(p, 0) >= n for p, n in wanted.items())

        _wait(lambda: not alive() or copied(), 180, f"{target_topic} copied")
        if not alive():
            raise RuntimeError("the replicator stopped")

    @staticmethod
    def _ends(bootstrap: str, topic: str) -> dict[int, int]:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap)
        try:
            if topic not in consumer.topics():
                return {}
            return data.end_offsets(consumer, topic, PARTITIONS)
        finally:
            consumer.close()


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def translation_cost(partitions: int = 2_000, records: int = 1_000_000, replay_every: int = 10_000,
                     replayed: int = 500) -> dict:
    """Translating one commit per partition through a large map, in memory: each partition
    holds `records` copied with a crash replaying `replayed` of them every `replay_every`."""
    spans, target = [], 0
    for start in range(0, records, replay_every):
        spans.append(Span(start, target, replay_every))
        target += replay_every
        spans.append(Span(start + replay_every - replayed, target, replayed))
        target += replayed
    maps = [PartitionMap(list(spans)) for _ in range(partitions)]
    started = time.perf_counter()
    for partition, spans_of in enumerate(maps):
        spans_of.translate(partition * 997 % records, records)
    return {"partitions": partitions, "records_per_partition": records, "spans_per_partition": len(spans),
            "seconds": round(time.perf_counter() - started, 3)}


def map_size(bootstrap: str) -> dict:
    """The offset map topic on `bootstrap`: records, distinct spans and bytes held."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        if map_topic.TOPIC not in consumer.topics():
            return {}
        consumer.assign([map_topic.PARTITION])
        consumer.seek_to_beginning(map_topic.PARTITION)
        end = consumer.end_offsets([map_topic.PARTITION])[map_topic.PARTITION]
        records, size, keys = 0, 0, set()
        deadline = time.monotonic() + 120
        while consumer.position(map_topic.PARTITION) < end and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    records += 1
                    size += len(record.key or b"") + len(record.value or b"")
                    keys.add(record.key)
        return {"records": records, "spans": len(keys), "bytes": size}
    finally:
        consumer.close()
