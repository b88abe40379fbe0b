"""The fixed data set: generated, pre-loaded into the source, and checked on the target.

Record ``i`` of partition ``p`` of a topic is fully determined by (p, i): its key, its
value (a slice of a seeded random block) and its header. The pre-loader computes, per
partition, a digest of (key, value, header) in offset order while it produces; a copy is
valid when every target partition holds exactly as many records as the source partition
and the same digest, i.e. the same records in the same order (headers other than the
data set's own, e.g. our provenance headers, are left out of the digest).

A data set is normally produced in large batches; a `one_per_batch` one holds every
record in a batch of its own, the worst case for a replicator that copies batches.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import multiprocessing
import random
import time
from dataclasses import asdict, dataclass, field

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from replicator import wire

log = logging.getLogger(__name__)

HEADER = "bench-seq"
PARTITIONS = 6
# The label of the data set of 100 B records, each in a batch of its own.
ONE_PER_BATCH = "100B-1perbatch"
_BLOCK = random.Random(20240601).randbytes(1 << 16)


def key_of(partition: int, index: int) -> bytes:
    return b"p%d-%010d" % (partition, index)


def value_of(partition: int, index: int, size: int) -> bytes:
    start = (index * 7919 + partition * 104729) % (len(_BLOCK) - size)
    return _BLOCK[start:start + size]


def header_of(index: int) -> bytes:
    return b"%d" % index


class Digest:
    """Running digest of one partition's records, in order."""

    __slots__ = ("_hash", "count")

    def __init__(self):
        self._hash = hashlib.blake2b(digest_size=16)
        self.count = 0

    def add(self, key: bytes | None, value: bytes | None, seq: bytes | None) -> None:
        update = self._hash.update
        update(key or b"<null>")
        update(b"|%d|" % len(value or b""))
        update(value or b"")
        update(seq or b"<none>")
        self.count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass
class DataSet:
    """One source topic of the data set and what it must hold."""

    topic: str
    records: int
    size: int
    partitions: int = PARTITIONS
    counts: dict[int, int] = field(default_factory=dict)
    digests: dict[int, str] = field(default_factory=dict)
    preload_seconds: float | None = None
    one_per_batch: bool = False

    @property
    def bytes(self) -> int:
        return self.records * self.size

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "DataSet":
        data = dict(data)
        data["counts"] = {int(k): v for k, v in data.get("counts", {}).items()}
        data["digests"] = {int(k): v for k, v in data.get("digests", {}).items()}
        return cls(**data)


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS, configs: dict | None = None) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "configs": configs or {}}},
                            wait_for_metadata=True)
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def _wait_for_leaders(bootstrap: str, topic: str, partitions: int) -> None:
    """Until every partition's leader answers: the metadata names a new topic's leaders a moment
    before they take writes, and the pre-load sends without retries (NotLeaderForPartition on a
    busy machine)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        consumer.close()


def delete_topics(bootstrap: str, topics: list[str]) -> bool:
    """Delete those of `topics` that exist; True if there were any."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            admin.delete_topics(doomed)
        return bool(doomed)
    except UnknownTopicOrPartitionError:
        return False
    finally:
        admin.close()


def end_offsets(consumer: KafkaConsumer, topic: str, partitions: int) -> dict[int, int]:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}


IN_PROCESS_BELOW = 50_000


class _LocalQueue(list):
    put = list.append

    def get(self, timeout=None):
        return self.pop(0)


# A one-per-batch preload waits for the record this many records back: the producer's
# backlog of one-record batches stays bounded instead of growing with the data set.
ONE_PER_BATCH_WINDOW = 2_000


def _batching(one_per_batch: bool) -> dict:
    if one_per_batch:
        # A batch is full as soon as it holds one record (batch_size=1), and linger_ms=0
        # sends it at once: every record travels, and is stored, in a batch of its own.
        return {"linger_ms": 0, "batch_size": 1}
    return {"linger_ms": 20, "batch_size": 1 << 20}


def _preload_worker(bootstrap: str, topic: str, size: int, plan: dict[int, int], queue,
                    one_per_batch: bool) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks=1, max_request_size=16 << 20,
        max_in_flight_requests_per_connection=5,
        retries=0,  # a retry could reorder or duplicate: the counts would tell, and the preload fails
        **_batching(one_per_batch),
    )
    digests = {p: Digest() for p in plan}
    futures = collections.deque()
    try:
        producer.partitions_for(topic)  # metadata first: the fast path below does not wait for it
        # The pre-load is the slowest part of a run from scratch, and its records are valid.
        send = wire.unchecked_send(producer)
        tps = {p: TopicPartition(topic, p) for p in plan}
        # Round-robin over the worker's partitions so that every batch fills at once.
        for index in range(max(plan.values(), default=0)):
            for partition, count in plan.items():
                if index < count:
                    key, value, seq = key_of(partition, index), value_of(partition, index, size), header_of(index)
                    future = send(tps[partition], key, value, [(HEADER, seq)])
                    digests[partition].add(key, value, seq)
                    if one_per_batch:
                        futures.append(future)
                        if len(futures) > ONE_PER_BATCH_WINDOW:
                            futures.popleft().get(timeout=60)
                    elif index % 50_000 == 0:
                        futures.append(future)
        producer.flush(timeout=600)
        for future in futures:
            future.get(timeout=60)
        queue.put({p: (d.count, d.hexdigest()) for p, d in digests.items()})
    except BaseException as exc:  # reported to the parent, which fails the run
        queue.put(exc)
    finally:
        producer.close(timeout=30)


def collect(queue, procs, deadline: float):
    """One result per process; an exception if one died without answering or time ran out."""
    import queue as queues

    for _ in procs:
        while True:
            try:
                yield queue.get(timeout=1.0)
                break
            except queues.Empty:
                if time.monotonic() > deadline:
                    raise RuntimeError("worker processes did not finish in time") from None
                if not any(proc.is_alive() for proc in procs) and queue.empty():
                    raise RuntimeError("a worker process died; see its output above") from None


def preload(bootstrap: str, dataset: DataSet, workers: int = 2, timeout: float = 600.0) -> DataSet:
    """Produce the data set into a fresh source topic with `workers` processes; fill in its digests."""
    create_topic(bootstrap, dataset.topic, dataset.partitions)
    _wait_for_leaders(bootstrap, dataset.topic, dataset.partitions)
    per_partition = [dataset.records // dataset.partitions] * dataset.partitions
    for p in range(dataset.records % dataset.partitions):
        per_partition[p] += 1
    plans: list[dict[int, int]] = [{} for _ in range(workers)]
    for partition, count in enumerate(per_partition):
        plans[partition % workers][partition] = count
    started = time.monotonic()
    if dataset.records < IN_PROCESS_BELOW:  # not worth starting processes for
        queue = _LocalQueue()
        _preload_worker(bootstrap, dataset.topic, dataset.size, dict(enumerate(per_partition)), queue,
                        dataset.one_per_batch)
        return _preloaded(bootstrap, dataset, queue.get(), started)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_preload_worker, daemon=True,
                         args=(bootstrap, dataset.topic, dataset.size, plan, queue, dataset.one_per_batch))
             for plan in plans if plan]
    for proc in procs:
        proc.start()
    results = {}
    try:
        for item in collect(queue, procs, started + timeout):
            if isinstance(item, BaseException):
                raise RuntimeError(f"pre-loading {dataset.topic} failed: {item!r}")
            results.update(item)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return _preloaded(bootstrap, dataset, results, started)


def _preloaded(bootstrap: str, dataset: DataSet, results, started: float) -> DataSet:
    if isinstance(results, BaseException):
        raise RuntimeError(f"pre-loading {dataset.topic} failed: {results!r}")
    dataset.preload_seconds = time.monotonic() - started
    dataset.counts = {p: results[p][0] for p in sorted(results)}
    dataset.digests = {p: results[p][1] for p in sorted(results)}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        ends = end_offsets(consumer, dataset.topic, dataset.partitions)
    finally:
        consumer.close()
    if ends != dataset.counts:
        raise RuntimeError(f"pre-loading {dataset.topic}: the source holds {ends}, expected {dataset.counts}")
    if dataset.one_per_batch:
        _check_one_per_batch(bootstrap, dataset)
    log.info("pre-loaded %s: %d records of %d bytes in %.1fs (%.0f records/s)", dataset.topic,
             dataset.records, dataset.size, dataset.preload_seconds,
             dataset.records / dataset.preload_seconds)
    return dataset


def _check_one_per_batch(bootstrap: str, dataset: DataSet) -> None:
    """Each partition's log on the broker is exactly as large as its records would be, each
    in a batch of its own (a batch header per record): else the data set is not the worst
    case it stands for, and the preload fails."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        answers = admin.describe_log_dirs([dataset.topic])
    finally:
        admin.close()
    stored = dict(sorted(
        (partition["partition_index"], partition["partition_size"])
        for answer in answers for log_dir in answer["log_dirs"] for topic in log_dir["topics"]
        if topic["name"] == dataset.topic for partition in topic["partitions"] if not partition["is_future_key"]))
    expected = {p: _one_record_batches_bytes(p, count, dataset.size) for p, count in dataset.counts.items()}
    if stored != expected:
        raise RuntimeError(f"pre-loading {dataset.topic}: the source's partitions hold {stored} bytes; "
                           f"one record per batch would be {expected}")


def _one_record_batches_bytes(partition: int, count: int, size: int) -> int:
    # A record alone in its batch has offset and timestamp deltas of 0.
    return sum(wire.one_record_batch_size(key_of(partition, index), value_of(partition, index, size),
                                          [(HEADER, header_of(index))])
               for index in range(count))


def source_holds(bootstrap: str, dataset: DataSet) -> bool:
    """True if the source topic already holds exactly the data set (a re-run reuses it)."""
    if not dataset.counts:
        return False
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        if dataset.topic not in (consumer.topics() or set()):
            return False
        return end_offsets(consumer, dataset.topic, dataset.partitions) == dataset.counts
    finally:
        consumer.close()


# -- verification ---------------------------------------------------------------------------


def _read_worker(bootstrap: str, topic: str, partitions: list[int], ends: dict[int, int],
                 deadline: float, queue) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed",
        fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20, receive_buffer_bytes=4 << 20,
    )
    digests = {p: Digest() for p in partitions}
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if ends[tp.partition] > 0}
        while remaining and time.time() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500, max_records=100_000).items():
                digest = digests[tp.partition]
                add = digest.add
                for record in batch:
                    seq = None
                    for name, value in record.headers:
                        if name == HEADER:
                            seq = value
                    add(record.key, record.value, seq)
            for tp in list(remaining):
                if consumer.position(tp) >= ends[tp.partition]:
                    remaining.discard(tp)
        queue.put({p: (d.count, d.hexdigest()) for p, d in digests.items()})
    except BaseException as exc:
        queue.put(exc)
    finally:
        consumer.close()


@dataclass
class Verdict:
    valid: bool
    detail: str
    seconds: float
    counts: dict[int, int] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"valid": self.valid, "detail": self.detail, "seconds": round(self.seconds, 2),
                "counts": self.counts}


def verify(bootstrap: str, topic: str, dataset: DataSet, workers: int = 2,
           timeout: float = 300.0, transactional: bool = False) -> Verdict:
    """Does `topic` on the target hold exactly the data set's records, per partition, in order,
    for a read_committed reader?"""
    started = time.monotonic()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if len(partitions) != dataset.partitions:
            return Verdict(False, f"{topic} has {len(partitions)} partitions, expected "
                           f"{dataset.partitions}", time.monotonic() - started)
        ends = end_offsets(consumer, topic, dataset.partitions)
    finally:
        consumer.close()
    # Transaction markers take offsets too: a transactional copy ends past the source.
    if any(ends[p] < dataset.counts[p] for p in dataset.counts) or (
            not transactional and ends != dataset.counts):
        missing = sum(dataset.counts.values()) - sum(ends.values())
        return Verdict(False, f"counts per partition differ: target {ends}, source {dataset.counts} "
                       f"({missing:+d} missing)", time.monotonic() - started, ends)
    if dataset.records < IN_PROCESS_BELOW:
        workers = 1  # not worth starting processes for
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue() if workers > 1 else _LocalQueue()
    groups = [list(range(dataset.partitions))[i::workers] for i in range(workers)]
    deadline = time.time() + timeout
    if workers == 1:
        _read_worker(bootstrap, topic, groups[0], ends, deadline, queue)
        item = queue.get()
        if isinstance(item, BaseException):
            return Verdict(False, f"reading {topic} failed: {item!r}", time.monotonic() - started, ends)
        return _judge(dataset, item, ends, time.monotonic() - started)
    procs = [ctx.Process(target=_read_worker, args=(bootstrap, topic, g, ends, deadline, queue), daemon=True)
             for g in groups if g]
    for proc in procs:
        proc.start()
    results = {}
    failure = None
    try:
        for item in collect(queue, procs, time.monotonic() + timeout + 30):
            if isinstance(item, BaseException):
                failure = item
            else:
                results.update(item)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    seconds = time.monotonic() - started
    if failure is not None:
        return Verdict(False, f"reading {topic} failed: {failure!r}", seconds, ends)
    return _judge(dataset, results, ends, seconds)


def _judge(dataset: DataSet, results: dict, ends: dict[int, int], seconds: float) -> Verdict:
    bad = [p for p in range(dataset.partitions)
           if results.get(p) != (dataset.counts[p], dataset.digests[p])]
    if bad:
        return Verdict(False, f"content differs in partitions {bad} (count or key/value/header "
                       "digest)", seconds, ends)
    return Verdict(True, f"{sum(dataset.counts.values())} records: counts and content digest match "
                   "per partition", seconds, ends)


def group_description(bootstrap: str, group: str) -> dict:
    """The group as DescribeGroups tells it; empty if the cluster did not answer."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return admin.describe_groups([group]).get(group, {})
    except Exception:
        return {}
    finally:
        admin.close()


def committed_counts(bootstrap: str, topic: str, partitions: int = PARTITIONS,
                     timeout: float = 120.0) -> dict[int, int]:
    """Records per partition as a read_committed reader sees them (transaction markers and
    aborted records take offsets, so end offsets overcount a transactional copy)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed", max_partition_fetch_bytes=16 << 20)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        counts = {tp.partition: 0 for tp in tps}
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500, max_records=100_000).items():
                counts[tp.partition] += len(batch)
        return counts
    finally:
        consumer.close()


def stable_at(bootstrap: str, topic: str, counts: dict[int, int]) -> bool:
    """Whether each partition's last stable offset reaches `counts`: a transactional copy of
    `counts` records needs it before a read_committed reader sees them all, but it is not
    enough (transaction markers take offsets too)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    try:
        stable = end_offsets(consumer, topic, len(counts))
    except KafkaError:  # the topic is still being created
        return False
    finally:
        consumer.close()
    return all(stable[p] >= count for p, count in counts.items())


def verify_counts(bootstrap: str, topic: str, expected_total: int, partitions: int = PARTITIONS) -> Verdict:
    """A count-only check (the ceiling row writes records of its own, not copies)."""
    started = time.monotonic()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        ends = end_offsets(consumer, topic, partitions)
    finally:
        consumer.close()
    total = sum(ends.values())
    return Verdict(total == expected_total, f"{total} records written, {expected_total} expected "
                   "(count check)", time.monotonic() - started, ends)


def group_at(bootstrap: str, group: str, topic: str, counts: dict[int, int]) -> bool:
    """Whether `group` has committed `counts` (the end of each partition) on `topic`."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    except KafkaError:  # the group's coordinator is still being set up
        return False
    finally:
        admin.close()
    return all(offsets.get(TopicPartition(topic, p)) is not None
               and offsets[TopicPartition(topic, p)].offset >= end for p, end in counts.items())
