"""The scale sweep (issue 24, `--only scale`): ours (batch mode, bare members) and MirrorMaker 2
tuned copying the same number of 100 B records spread over more and more partitions and topics,
and our members' count at one shape.

Each point: records/s, CPU per record, each process's peak RSS, start-up to the first record on
the target, each process's CPU while idle (copy done, nothing to copy), and for ours with two or
more members the time a member's SIGKILL takes to be absorbed (the group stable again, the
remaining members owning every partition). At the plan's translation shape: the offset map
topic's growth and the time `offsets translate` takes for a group committed on every partition.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from replicator import wire
from . import data, failover, mirrormaker, ours
from .measure import Copy, watch_topics
from .procstat import CpuMeter, rss_bytes

log = logging.getLogger(__name__)

OURS = "ours-batch"
MM2 = "mirrormaker2-tuned"
RECORD_SIZE = 100
# The targets.
KEEPS_RATE = 0.8  # of the smallest shape's records/s, at the largest single-topic shape
IDLE_CPU_PERCENT = 5.0  # of a core, per process
STARTUP_SECONDS = 30.0
# Every shape's records are written in batches of this size (the Kafka producer's default), so
# that the points differ in partitions only. Batch mode copies them as bytes, or merges them
# where a partition brings a full batch's worth in a fetch (replicator.shipping).
BATCH_BYTES = 16 * 1024


@dataclass(frozen=True)
class Shape:
    topics: int
    partitions: int  # per topic

    @property
    def label(self) -> str:
        return f"{self.topics}×{self.partitions}"

    @property
    def total(self) -> int:
        return self.topics * self.partitions


@dataclass(frozen=True)
class ScalePlan:
    shapes: tuple[Shape, ...]
    records: int  # per shape, spread evenly over its partitions
    idle_seconds: float
    member_shape: Shape | None  # where the member counts are swept
    member_counts: tuple[int, ...]
    translate_shape: Shape
    # Config overrides for ours: the tiny plan shortens the session timeout so that a kill is
    # absorbed in seconds (the others keep the shipped 45 s, which bounds what a kill costs).
    overrides: dict = field(default_factory=dict)

    def only(self, labels: list[str]) -> "ScalePlan":
        """This plan with only the shapes named "TOPICSxPARTITIONS" (a run that completes another)."""
        wanted = {label.replace("x", "×") for label in labels}
        unknown = wanted - {s.label for s in self.shapes}
        if unknown:
            raise ValueError(f"no such shapes in the plan: {sorted(unknown)}")
        return replace(self, shapes=tuple(s for s in self.shapes if s.label in wanted))


SIX, SIXTY, SIX_HUNDRED, THREE_THOUSAND = (Shape(1, n) for n in (6, 60, 600, 3000))
TOPICS = Shape(300, 10)
PLANS = {
    "full": ScalePlan((SIX, SIXTY, SIX_HUNDRED, THREE_THOUSAND, TOPICS), 1_000_000, 20.0,
                      SIX_HUNDRED, (1, 2, 4), THREE_THOUSAND),
    "quick": ScalePlan((SIX, SIXTY, SIX_HUNDRED, THREE_THOUSAND, TOPICS), 150_000, 10.0,
                       SIX_HUNDRED, (1, 2, 4), THREE_THOUSAND),
    # One shape of a topic, one of several: both ways of pre-loading and verifying.
    "tiny": ScalePlan((SIX, Shape(3, 20)), 3_000, 3.0, None, (), Shape(3, 20),
                      {"consumerGroup": {"sourceToTarget": {"sessionTimeoutMs": 6000,
                                                            "heartbeatIntervalMs": 1000}}}),
}


@dataclass
class Point:
    """One replicator copying one shape with some members (MM2: tasks.max)."""

    replicator: str
    shape: str
    topics: int
    partitions: int  # in all
    members: int
    records: int
    records_per_second: float | None = None
    cpu_seconds: float | None = None  # over the copy
    cpu_us_per_record: float | None = None
    copy_seconds: float | None = None
    startup_seconds: float | None = None  # process start to the first record on the target
    peak_rss_bytes: list[int] = field(default_factory=list)  # per process, over the copy
    idle_cpu_percent: list[float] = field(default_factory=list)  # per process, of a core
    kill_absorbed_seconds: float | None = None
    kill: str = ""
    valid: bool = False
    verification: str = ""

    def as_json(self) -> dict:
        return asdict(self)


def datasets(shape: Shape, records: int) -> list[data.DataSet]:
    per_topic = records // shape.topics
    return [data.DataSet(f"bench.scale.{shape.topics}x{shape.partitions}.n{records}" +
                         (f".t{i:03d}" if shape.topics > 1 else ""), per_topic, RECORD_SIZE, shape.partitions)
            for i in range(shape.topics)]


class RssPeaks:
    """Each process's peak resident memory, sampled in a thread of its own."""

    def __init__(self, pids: list[int], interval: float = 0.2):
        self.pids, self.interval = pids, interval
        self.peaks = {pid: 0 for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "RssPeaks":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peaks[pid] = max(self.peaks[pid], rss_bytes(pid))
            self._stop.wait(self.interval)


def idle_cpu(pids: list[int], seconds: float) -> list[float]:
    """Each process's CPU over `seconds`, as a percentage of one core."""
    meters = [CpuMeter([pid]) for pid in pids]
    for meter in meters:
        meter.mark()
    time.sleep(seconds)
    return [round(100.0 * meter.since_mark() / seconds, 2) for meter in meters]


class Sweep:
    def __init__(self, source: str, target: str, work: Path, plan: ScalePlan, members: int,
                 run_id: str, stamp=log.info):
        self.source, self.target, self.work, self.plan = source, target, work, plan
        self.members, self.run_id, self.stamp = members, run_id, stamp
        self.points: list[Point] = []
        self.offsets: dict = {}

    def run(self) -> dict:
        for shape in self.plan.shapes:
            counts = (self.plan.member_counts if shape == self.plan.member_shape else (self.members,))
            try:
                sets = self._preloaded(shape)
            except Exception as exc:  # the other shapes' figures still count
                log.exception("pre-loading %s failed", shape.label)
                self.points += [Point(who, shape.label, shape.topics, shape.total, members, self.plan.records,
                                      verification=f"not run: pre-load failed: {str(exc)[:300]}")
                                for members in counts for who in (OURS, MM2)]
                continue
            for members in counts:
                self.points.append(self.ours(shape, sets, members))
                self.points.append(self.mirror_maker(shape, sets, members))
        return self.results()

    # -- data ------------------------------------------------------------------------------

    def _preloaded(self, shape: Shape) -> list[data.DataSet]:
        """The shape's topics on the source: reused from an earlier run if they are still there."""
        cache = self.work.parent / "scale-datasets.json"
        known = json.loads(cache.read_text()) if cache.exists() else {}
        key = f"{self.source}/{shape.label}/{self.plan.records}/{BATCH_BYTES}"
        if key in known:
            cached = [data.DataSet.from_json(d) for d in known[key]]
            if all(data.source_holds(self.source, d) for d in cached):
                log.info("reusing the %s topics already on the source", shape.label)
                return cached
        sets = datasets(shape, self.plan.records)
        started = time.monotonic()
        if data.delete_topics(self.source, [d.topic for d in sets]):
            time.sleep(2.0)  # let the deletion finish before the topics are created again
        preload_many(self.source, sets)
        known[key] = [d.as_json() for d in sets]
        cache.write_text(json.dumps(known))
        self.stamp(f"scale {shape.label}: {self.plan.records:,} records pre-loaded in "
                   f"{time.monotonic() - started:.0f} s")
        return sets

    # -- the replicators -------------------------------------------------------------------

    def ours(self, shape: Shape, sets: list[data.DataSet], members: int) -> Point:
        label = f"scale-{shape.topics}x{shape.partitions}-m{members}"
        group = f"bench-{label}-{self.run_id}"
        routes = {d.topic: f"{d.topic}.ours-{self.run_id}" for d in sets}
        config = ours.write_config(self.work / f"{label}.yaml", self.source, self.target, group, routes,
                                   members, OURS, self.plan.overrides)
        translating = shape == self.plan.translate_shape and members == self.members
        map_before = failover.map_size(self.target) if translating else {}
        point = Point(OURS, shape.label, shape.topics, shape.total, members, self.plan.records)
        runner = ours.Replicators(config, members, self.work, label).start()
        try:
            self._copy(point, runner, {routes[d.topic]: d.counts for d in sets})
            if members > 1 and runner.alive():
                point.kill_absorbed_seconds = self._kill(runner, group, shape.total)
                point.kill = ("SIGKILL of one member: seconds until the group was stable with the "
                              f"other {members - 1} owning all {shape.total:,} partitions")
            else:
                point.kill = "one member: nothing takes over"
        finally:
            runner.stop()
        self._verify(point, sets, routes)
        if translating:
            self.offsets = self._translation(config, sets, map_before)
        data.delete_topics(self.target, list(routes.values()))
        self._stamp(point)
        return point

    def mirror_maker(self, shape: Shape, sets: list[data.DataSet], tasks: int) -> Point:
        topics = [d.topic for d in sets]
        data.delete_topics(self.target, topics)  # identity policy: the target topics have the source's names
        point = Point(MM2, shape.label, shape.topics, shape.total, tasks, self.plan.records,
                      kill="not measured: one process (its tasks restart with it)")
        mm2 = mirrormaker.MirrorMaker(self.source, self.target, topics, tasks, self.work,
                                      uuid.uuid4().hex[:6], tuning=mirrormaker.DEFAULT_TUNING).start()
        try:
            self._copy(point, mm2, {d.topic: d.counts for d in sets}, extra_timeout=30.0)
        finally:
            mm2.stop()
        self._verify(point, sets, {t: t for t in topics})
        data.delete_topics(self.target, topics)
        self._stamp(point)
        return point

    def _copy(self, point: Point, runner, expected: dict[str, dict[int, int]], extra_timeout: float = 0.0) -> None:
        """Time the copy, then measure the idle processes (the copy is done: nothing to copy)."""
        timeout = 90.0 + extra_timeout + point.records / 5_000 + point.partitions / 50
        with RssPeaks(runner.pids) as rss:
            copy: Copy = watch_topics(self.target, expected, runner.pids, runner.started, timeout,
                                      point.records * RECORD_SIZE, alive=runner.alive)
        point.peak_rss_bytes = [rss.peaks[pid] for pid in runner.pids]
        point.startup_seconds = _round(copy.startup_seconds)
        if not copy.finished:
            point.verification = f"did not finish: {copy.copied:,} of {copy.records:,} records on the target"
            return
        point.records_per_second = _round(copy.records_per_second)
        point.copy_seconds = _round(copy.copy_seconds)
        point.cpu_seconds = _round(copy.cpu_seconds)
        point.cpu_us_per_record = _round(1e6 * copy.cpu_seconds / copy.records if copy.cpu_seconds else None)
        time.sleep(2.0)  # the last commits and acknowledgements
        point.idle_cpu_percent = idle_cpu(runner.pids, self.plan.idle_seconds)

    def _kill(self, runner: ours.Replicators, group: str, partitions: int, timeout: float = 180.0) -> float | None:
        victim = runner.procs[0]
        victim.kill()
        killed = time.monotonic()
        victim.wait()
        survivors = {f"bench-m{m}" for m in range(1, runner.members)}
        while time.monotonic() - killed < timeout:
            if _owned_by(self.source, group, survivors, partitions):
                return round(time.monotonic() - killed, 2)
            time.sleep(0.5)
        return None

    def _verify(self, point: Point, sets: list[data.DataSet], routes: dict[str, str]) -> None:
        if point.records_per_second is None:
            return
        if len(sets) == 1:
            verdict = data.verify(self.target, routes[sets[0].topic], sets[0])
        else:
            verdict = verify_many(self.target, sets, routes)
        point.valid, point.verification = verdict.valid, verdict.detail

    def _translation(self, config: Path, sets: list[data.DataSet], map_before: dict) -> dict:
        """`offsets translate` for a group committed half-way through every partition."""
        group = f"bench-scale-app-{self.run_id}"
        offsets = {TopicPartition(d.topic, p): count // 2 for d in sets for p, count in d.counts.items()}
        consumer = KafkaConsumer(bootstrap_servers=self.source, group_id=group, enable_auto_commit=False)
        try:
            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        finally:
            consumer.close()
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "cluster.cli", "--log-level", "WARNING", "offsets",
                               "translate", "--config", str(config), "--group", group, "--json"],
                              capture_output=True, text=True, env=ours._env(), timeout=600)
        seconds = time.monotonic() - started
        translated = None
        try:
            translated = sum(row["target_offset"] is not None for row in json.loads(done.stdout))
        except (ValueError, KeyError, TypeError):
            log.warning("offsets translate printed no JSON table: %s", (done.stdout + done.stderr)[-2000:])
        map_after = failover.map_size(self.target)
        result = {"partitions": len(offsets), "translate_seconds": round(seconds, 2),
                  "translated": translated, "exit_code": done.returncode,
                  "map_before": map_before, "map_after": map_after,
                  "map_added": {k: map_after.get(k, 0) - map_before.get(k, 0) for k in map_after}}
        self.stamp(f"scale translate: {result}")
        return result

    def _stamp(self, point: Point) -> None:
        self.stamp(f"scale {point.replicator} {point.shape} ×{point.members}: {_fmt(point.records_per_second)} rec/s, "
                   f"{_fmt(point.cpu_us_per_record)} µs CPU/record, start-up {point.startup_seconds} s, "
                   f"idle {point.idle_cpu_percent} % of a core, kill {point.kill_absorbed_seconds} s, "
                   f"valid={point.valid}")

    def results(self) -> dict:
        plan = {"records": self.plan.records, "record_bytes": RECORD_SIZE, "idle_seconds": self.plan.idle_seconds,
                "shapes": [s.label for s in self.plan.shapes], "members": self.members,
                "member_counts": list(self.plan.member_counts),
                "member_shape": self.plan.member_shape.label if self.plan.member_shape else None,
                "ours_overrides": self.plan.overrides}
        return {"plan": plan, "points": [p.as_json() for p in self.points], "offsets": self.offsets,
                "targets": targets(self.points, self.members)}


def targets(points: list[Point], members: int) -> list[dict]:
    """The issue's targets, per replicator, from the verified points."""
    checks = []
    for who in (OURS, MM2):
        mine = [p for p in points if p.replicator == who and p.valid]
        single = {p.partitions: p for p in mine if p.topics == 1 and p.members == members}
        if len(single) >= 2:
            smallest, largest = single[min(single)], single[max(single)]
            ratio = largest.records_per_second / smallest.records_per_second
            checks.append({"replicator": who, "what": f"records/s at {largest.shape} vs {smallest.shape}",
                           "figure": f"{ratio:.2f}× ({largest.records_per_second:,.0f} vs "
                                     f"{smallest.records_per_second:,.0f})",
                           "target": f"≥ {KEEPS_RATE}×", "met": ratio >= KEEPS_RATE})
        if mine:
            idle = max(max(p.idle_cpu_percent or [0.0]) for p in mine)
            checks.append({"replicator": who, "what": "idle CPU per process, worst point",
                           "figure": f"{idle:.1f} % of a core", "target": f"< {IDLE_CPU_PERCENT:.0f} %",
                           "met": idle < IDLE_CPU_PERCENT})
            startup = max(p.startup_seconds or 0.0 for p in mine)
            checks.append({"replicator": who, "what": "start-up to the first record, worst point",
                           "figure": f"{startup:.1f} s", "target": f"< {STARTUP_SECONDS:.0f} s",
                           "met": startup < STARTUP_SECONDS})
    return checks


# -- many topics at once -------------------------------------------------------------------------


def preload_many(bootstrap: str, sets: list[data.DataSet]) -> None:
    """Pre-load a shape's topics through one idempotent producer (a producer, or a process,
    per topic would cost more than the records at 300 topics); idempotence lets it retry
    without reordering or duplicating.

    Partition after partition, in batches of BATCH_BYTES: every shape's batches are alike, so
    the sweep measures partitions. Round-robin over all partitions filled each batch at 1×6
    but gave one-record batches at 1×3000, and the wide points measured small batches."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([_new_topic(d) for d in sets], timeout_ms=120_000)
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:  # every leader answers before the records go (the sends do not retry)
        deadline = time.monotonic() + 120
        while not {d.topic for d in sets} <= set(consumer.topics()) and time.monotonic() < deadline:
            time.sleep(0.5)
        consumer.end_offsets([TopicPartition(d.topic, p) for d in sets for p in range(d.partitions)])
    finally:
        consumer.close()
    started = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20,
                             batch_size=BATCH_BYTES, max_request_size=16 << 20, request_timeout_ms=120_000,
                             delivery_timeout_ms=600_000)
    try:
        for d in sets:
            producer.partitions_for(d.topic)
        send = wire.unchecked_send(producer)
        digests = {(d.topic, p): data.Digest() for d in sets for p in range(d.partitions)}
        plan = {(d.topic, p): d.records // d.partitions + (p < d.records % d.partitions)
                for d in sets for p in range(d.partitions)}
        tps = {key: TopicPartition(*key) for key in plan}
        last = {}
        for key, count in plan.items():
            partition = key[1]
            for index in range(count):
                k, v, seq = data.key_of(partition, index), data.value_of(partition, index, RECORD_SIZE), \
                    data.header_of(index)
                last[key] = send(tps[key], k, v, [(data.HEADER, seq)])
                digests[key].add(k, v, seq)
        producer.flush(timeout=600)
        for future in last.values():
            future.get(timeout=60)
    finally:
        producer.close(timeout=30)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        ends = consumer.end_offsets(list(tps.values()))
    finally:
        consumer.close()
    for d in sets:
        d.counts = {p: digests[(d.topic, p)].count for p in range(d.partitions)}
        d.digests = {p: digests[(d.topic, p)].hexdigest() for p in range(d.partitions)}
        d.preload_seconds = time.monotonic() - started
        held = {p: ends[tps[(d.topic, p)]] for p in range(d.partitions)}
        if held != d.counts:
            raise RuntimeError(f"pre-loading {d.topic}: the source holds {held}, expected {d.counts}")


def _new_topic(dataset: data.DataSet) -> NewTopic:
    return NewTopic(dataset.topic, dataset.partitions, 1)


def verify_many(bootstrap: str, sets: list[data.DataSet], routes: dict[str, str],
                timeout: float = 300.0) -> data.Verdict:
    """data.verify for many small topics at once, through one consumer."""
    started = time.monotonic()
    expected = {TopicPartition(routes[d.topic], p): (d.counts[p], d.digests[p]) for d in sets for p in d.counts}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             isolation_level="read_committed", fetch_max_bytes=64 << 20)
    try:
        tps = list(expected)
        ends = consumer.end_offsets(tps)
        wrong = [tp for tp in tps if ends[tp] != expected[tp][0]]
        if wrong:
            return data.Verdict(False, f"counts differ in {len(wrong)} partitions, e.g. {wrong[0]}: "
                                f"target {ends[wrong[0]]}, source {expected[wrong[0]][0]}", time.monotonic() - started)
        digests = {tp: data.Digest() for tp in tps}
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=500, max_records=100_000).items():
                add = digests[tp].add
                for record in batch:
                    seq = next((value for name, value in record.headers if name == data.HEADER), None)
                    add(record.key, record.value, seq)
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
    finally:
        consumer.close()
    seconds = time.monotonic() - started
    bad = [tp for tp in tps if (digests[tp].count, digests[tp].hexdigest()) != expected[tp]]
    if bad:
        return data.Verdict(False, f"content differs in {len(bad)} partitions, e.g. {bad[0]} (count or "
                            "key/value/header digest)", seconds)
    return data.Verdict(True, f"{sum(c for c, _ in expected.values())} records in {len(sets)} topics: counts "
                        "and content digest match per partition", seconds)


def _owned_by(bootstrap: str, group: str, members: set[str], partitions: int) -> bool:
    """Whether the group is stable with exactly `members` (static ids) owning all `partitions`."""
    description = data.group_description(bootstrap, group)
    owners, owned = set(), 0
    for member in description.get("members", ()):
        owners.add(member.get("group_instance_id") or member.get("member_id"))
        for assigned in (member.get("member_assignment") or {}).get("assigned_partitions", ()):
            owned += len(assigned["partitions"])
    return description.get("group_state") == "Stable" and owners == members and owned == partitions


def _round(value, digits: int = 3):
    return None if value is None else round(value, digits)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:,.1f}"
