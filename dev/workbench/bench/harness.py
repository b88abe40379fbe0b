"""The benchmark run: data set, throughput rows, latency rows, verification, results."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path


from ..sandbox import CLUSTERS, GC_LOG, KAFKA_VERSION, Sandbox, cache_root, java_executable
from . import costs, data, jars, latency, mirrormaker, ours, perftools, procstat, report
from . import failover, scale
from .failover import Failover
from .measure import Copy, watch_copy

log = logging.getLogger("workbench.bench")

OURS = list(ours.ROWS)
# The exactly-once row runs with the tuned row's settings: it measures what exactly once costs MM2.
MM2_EXACTLY_ONCE = "mirrormaker2-eos"
MIRROR_MAKERS = {"mirrormaker2": None, "mirrormaker2-tuned": mirrormaker.DEFAULT_TUNING,
                 MM2_EXACTLY_ONCE: mirrormaker.DEFAULT_TUNING}
REPLICATORS = [*OURS, ours.RAY_ROW, *MIRROR_MAKERS]
# The Ray row measures what Ray costs in throughput, and MM2's exactly-once row what exactly
# once costs it in throughput: the latency and failover rows run neither.
LATENCY_ROWS = [*OURS, "mirrormaker2", "mirrormaker2-tuned"]
# Before each throughput row: the machine's cores less than QUIET_BUSY busy for the plan's
# quiet_seconds, or QUIET_TIMEOUT_SECONDS waited.
QUIET_BUSY = 0.15
QUIET_TIMEOUT_SECONDS = 60.0
FAILOVER = [*OURS, "mirrormaker2"]
ROWS = ["ceiling", *REPLICATORS, "chart", "latency", "costs"]
EXTRA_ROWS = ["relay", "failover", "mm2-search", "scale"]
ALIASES = {"ours": list(OURS)}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# 3,000-partition topics on each side need more than the tests' broker heap; every run gets
# it, so that a run with the scale sweep and one without compare.
BENCH_BROKER_HEAP = ("-Xms512m", "-Xmx2g")
# Kafka's default group.initial.rebalance.delay.ms, as production brokers run: members
# started together join one generation, instead of the first copying alone until the next
# one's join rebalances the group in the middle of the copy.
GROUP_JOIN_DELAY_MS = 3000


@dataclass
class LatencySession:
    """One replicator running for the latency rows, on topics of its own (one per load)."""

    who: str
    topics: dict[int, str]
    targets: dict[int, str]
    runner: object
    source: str
    target: str
    ready: bool = False

    def close(self) -> None:
        self.runner.stop()
        data.delete_topics(self.source, list(self.topics.values()))
        data.delete_topics(self.target, list(self.targets.values()))


@dataclass
class Plan:
    """How big a run is. `full` is the issue's data set; `quick` and `tiny` shrink it."""

    name: str
    # 6,000,000 records of 100 B: batch mode copies them in 3.5-5 s. Over 2,000,000 (about 2 s)
    # one stall of the machine moved a ratio by a fifth, and every row's records/s came out
    # lower (BENCHMARKS.md, Results).
    records_100b: int
    records_1k: int
    # 100 B records one per batch: they pre-load at ~9,000 records/s here (the batched sets at
    # ~100,000), so 600,000 take ~70 s; fewer would copy in well under a second.
    records_one_per_batch: int
    chart_records: int
    latency_seconds: float
    loads: tuple[int, ...] = (1000, 10000)
    latency_turns: int = 3  # per replicator and load, sharing latency_seconds
    latency_warm_up_seconds: float = 5.0  # an uncounted turn per replicator and load, before them (0: none)
    quiet_seconds: float = 3.0  # the machine calm this long before each throughput row (0: no wait)
    sizes: tuple[str, ...] = ("100B", "1KiB", data.ONE_PER_BATCH)
    chart_seconds: float = 90.0
    settle_seconds: float = 2.0
    costs_records: int = 100_000
    failover_records: int = 2_000  # per partition
    # Rows run on the first data set only: a second copy would prove nothing the first did not.
    first_set_only: tuple[str, ...] = ()


PLANS = {
    "full": Plan("full", 6_000_000, 500_000, 600_000, 30_000, 60.0),
    "quick": Plan("quick", 80_000, 20_000, 20_000, 2_000, 5.0, latency_warm_up_seconds=2.0, settle_seconds=1.0,
                  costs_records=30_000),
    # The smoke test's: every kind of row once (1 KiB copies go the same way as 100 B), ours on
    # one-record batches too. MM2's rows once: their clients' settings and their copies verified
    # are the point, and each of its JVMs costs the suite about 8 s. No uncounted latency turn:
    # the figures of a tiny run mean nothing anyway.
    "tiny": Plan("tiny", 6_000, 1_200, 2_000, 300, 1.0, latency_turns=2, latency_warm_up_seconds=0.0,
                 quiet_seconds=0.0, chart_seconds=30.0, settle_seconds=0.5, costs_records=5_000, failover_records=400,
                 sizes=("100B", data.ONE_PER_BATCH), first_set_only=tuple(MIRROR_MAKERS)),
}


@dataclass
class Row:
    """One throughput measurement: a replicator (or tool) copying one data set."""

    name: str
    size: str
    records: int
    bytes: int
    records_per_second: float | None = None
    mb_per_second: float | None = None
    records_per_cpu_second: float | None = None
    cpu_seconds: float | None = None
    seconds: float | None = None
    startup_seconds: float | None = None
    valid: bool = False
    verification: str = ""
    note: str = ""
    details: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return dict(self.__dict__)


def _copy_row(name: str, size: str, dataset: data.DataSet, copy: Copy, verdict: data.Verdict | None,
              note: str = "") -> Row:
    row = Row(name, size, copy.records, copy.bytes, copy.records_per_second, copy.mb_per_second,
              copy.records_per_cpu_second, copy.cpu_seconds, copy.copy_seconds, copy.startup_seconds,
              note=note, details={"copy": copy.as_json()})
    if not copy.finished:
        row.verification = f"did not finish: {copy.copied} of {copy.records} records on the target"
    elif verdict is not None:
        row.valid, row.verification = verdict.valid, verdict.detail
        row.details["verification"] = verdict.as_json()
    return row


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.plan = PLANS[args.mode]
        if args.latency_seconds is not None:
            self.plan = replace(self.plan, latency_seconds=args.latency_seconds)
        self.members = args.members
        self.tunings = {**MIRROR_MAKERS, "mirrormaker2-tuned": args.mm2_tuning, MM2_EXACTLY_ONCE: args.mm2_tuning}
        self.run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
        self.source_commit = source_commit()  # at the start: the code that runs
        self.work = Path(args.work_dir or (cache_root() / "bench" / self.run_id)).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.sandbox: Sandbox | None = None
        self.source = args.source
        self.target = args.target
        self.rows: list[Row] = []
        self.latency: list[dict] = []
        self.costs: dict = {}
        self.costs_one_per_batch: dict = {}
        self.failover: list[dict] = []
        self.translation: dict = {}
        self.offset_map: dict = {}
        self.scale: dict = {}
        self.started = time.monotonic()
        self.timeline: list[tuple[str, float]] = []
        self.ray: ours.OnRay | None = None  # up during an ours-ray row only

    # -- setup -------------------------------------------------------------------------

    def _stamp(self, what: str) -> None:
        elapsed = time.monotonic() - self.started
        self.timeline.append((what, round(elapsed, 1)))
        log.info("[%5.0fs] %s", elapsed, what)

    def _quiet(self, before: str) -> None:
        """Wait for the machine to calm down before a row: the brokers go on after a copy
        (flushing, deleting the last row's target topic), and whichever row came next paid
        for it (ours-batch, right after the ceiling row: 401,606 records/s of 100 B in a full
        run, 704,005 alone minutes later)."""
        if not self.plan.quiet_seconds:  # the smoke test's: it shares the machine with other tests
            return
        waited, busy = procstat.wait_quiet(QUIET_BUSY, self.plan.quiet_seconds, QUIET_TIMEOUT_SECONDS)
        self._stamp(f"quiet before {before}: waited {waited:.1f} s, cores {busy:.0%} busy at the end")

    def setup(self) -> None:
        jars.mirror_maker_libs()
        jars.tools_libs()
        if not (self.source and self.target):
            self.sandbox = Sandbox(self.args.state_dir or (cache_root() / "bench-sandbox"),
                                   broker_heap=BENCH_BROKER_HEAP, group_join_delay_ms=GROUP_JOIN_DELAY_MS)
            info = self.sandbox.up()
            self.source, self.target = info.source.bootstrap_servers, info.target.bootstrap_servers
        self._stamp(f"clusters ready: source {self.source}, target {self.target}")

    def datasets(self) -> dict[str, data.DataSet]:
        """The data set's topics on the source: pre-loaded now, or reused if already there."""
        only = selected(self.args.only)
        if "failover" in only and only <= {"failover", *REPLICATORS}:
            return {}  # `--only failover [replicators]`: its topics are its own
        if only == {"scale"}:
            return {}  # the sweep pre-loads its own topics
        cache = self.work.parent / "datasets.json"
        known = json.loads(cache.read_text()) if cache.exists() else {}
        wanted = {
            "100B": data.DataSet(f"bench.100b.n{self.plan.records_100b}", self.plan.records_100b, 100),
            "1KiB": data.DataSet(f"bench.1k.n{self.plan.records_1k}", self.plan.records_1k, 1024),
            data.ONE_PER_BATCH: data.DataSet(f"bench.100b-1perbatch.n{self.plan.records_one_per_batch}",
                                             self.plan.records_one_per_batch, 100, one_per_batch=True),
            "chart": data.DataSet(f"bench.chart.n{self.plan.chart_records}", self.plan.chart_records, 100),
        }
        wanted = {label: dataset for label, dataset in wanted.items()
                  if label in self.plan.sizes or label == "chart"}
        for label, dataset in wanted.items():
            key = f"{self.source}/{dataset.topic}"
            if key in known:
                cached = data.DataSet.from_json(known[key])
                if data.source_holds(self.source, cached):
                    wanted[label] = cached
                    log.info("reusing %s already on the source", dataset.topic)
                    continue
            if data.delete_topics(self.source, [dataset.topic]):
                time.sleep(2.0)  # let the deletion finish before the topic is created again
            data.preload(self.source, dataset, workers=self.args.preload_workers)
            known[key] = dataset.as_json()
            cache.write_text(json.dumps(known, indent=1))
        self._stamp("data set on the source")
        return wanted

    # -- throughput ----------------------------------------------------------------------

    def _timeout(self, dataset: data.DataSet) -> float:
        return 60.0 + dataset.records / 8_000

    def ceiling(self, size: str, dataset: data.DataSet) -> Row:
        topic = f"{dataset.topic}.ceiling-{self.run_id}"
        data.create_topic(self.target, topic)
        timeout = 60.0 + dataset.records / 20_000
        produce = lambda: perftools.produce(self.target, topic, dataset.records, dataset.size,  # noqa: E731
                                            self.work / f"ceiling-produce-{size}.log", timeout)
        consume = lambda: perftools.consume(self.source, dataset.topic, dataset.records,  # noqa: E731
                                            self.work / f"ceiling-consume-{size}.log", timeout)
        if dataset.records < data.IN_PROCESS_BELOW:
            # A tiny data set measures JVM start-up anyway: start both tools at once.
            with ThreadPoolExecutor(2) as pool:
                producing, consuming = pool.submit(produce), pool.submit(consume)
                produced, consumed = producing.result(), consuming.result()
        else:
            produced, consumed = produce(), consume()
        verdict = data.verify_counts(self.target, topic, dataset.records)
        data.delete_topics(self.target, [topic])
        rates = [r for r in (produced.records_per_second, consumed.records_per_second) if r]
        rate = min(rates) if len(rates) == 2 else None
        cpu = produced.cpu_seconds + consumed.cpu_seconds
        row = Row("ceiling", size, dataset.records, dataset.bytes, rate,
                  rate * dataset.size / 1e6 if rate else None,
                  # Both tools' JVMs, start-up included: indicative only.
                  dataset.records / cpu if cpu else None, cpu, None, None,
                  valid=produced.ok and consumed.ok and verdict.valid,
                  verification=verdict.detail + f"; consumer read {consumed.records} records",
                  note="min(producer perf test on the target, consumer perf test on the source)",
                  details={"producer": produced.as_json(), "consumer": consumed.as_json()})
        self._stamp(f"ceiling {size}: producer {produced.records_per_second} rec/s, "
                    f"consumer {consumed.records_per_second} rec/s")
        return row

    def ours(self, name: str, size: str, dataset: data.DataSet, profile: bool = False) -> Row:
        label = f"{name}-{size}"
        target_topic = f"{dataset.topic}.{name}-{self.run_id}"
        group = f"bench-{label}-{self.run_id}"
        config = ours.write_config(self.work / f"{label}.yaml", self.source, self.target,
                                   group, {dataset.topic: target_topic},
                                   self.members, name, self.args.override)
        transactional = bool(ours.SETTINGS[name].get("exactlyOnce"))
        # A transactional copy is complete once its positions are committed: its end offsets
        # count transaction markers too.
        done = (lambda: data.group_at(self.source, group, dataset.topic, dataset.counts)) if transactional else None
        if name == ours.RAY_ROW:
            # A node for this row alone: left up, its processes would share the cores with
            # every row and latency turn after it, MM2's and ours.
            self.ray = ours.OnRay(self.work)
            self._stamp("Ray node ready for the ours-ray row")
            members = self.ray.run(config)
            note = f"{ours.describe(name)}, the driver and {self.members} member actors on a local Ray node"
        else:
            members = ours.Replicators(config, self.members, self.work, label, profile=profile).start()
            note = f"{ours.describe(name)}, {self.members} replicate processes (members of one group)"
        try:
            copy = watch_copy(self.target, target_topic, dataset.counts, members.pids, members.started,
                              self._timeout(dataset), dataset.bytes, alive=members.alive, done=done)
        finally:
            codes = members.stop()
            if self.ray is not None:
                self.ray.close()
                self.ray = None
        verdict = (data.verify(self.target, target_topic, dataset, transactional=transactional)
                   if copy.finished else None)
        row = _copy_row(name, size, dataset, copy, verdict, note=note)
        row.details["exit_codes"] = codes
        data.delete_topics(self.target, [target_topic])
        self._stamp(f"{name} {size}: {_fmt(row.records_per_second)} rec/s, valid={row.valid}")
        return row

    def mirror_maker(self, size: str, dataset: data.DataSet, name: str = "mirrormaker2",
                     tuning: str | None = None) -> Row:
        # Identity replication policy: the target topic has the source's name.
        tag = uuid.uuid4().hex[:6]
        transactional = name == MM2_EXACTLY_ONCE
        data.delete_topics(self.target, [dataset.topic])
        mm2 = mirrormaker.MirrorMaker(self.source, self.target, [dataset.topic], self.members,
                                      self.work, tag, tuning=tuning, exactly_once=transactional).start()
        reads = 0

        def committed() -> bool:
            """The copy is done once a read_committed reader sees every record: read it only
            when the stable offsets allow it, since each look reads the whole topic."""
            if not data.stable_at(self.target, dataset.topic, dataset.counts):
                return False
            nonlocal reads
            reads += 1
            return data.committed_counts(self.target, dataset.topic) == dataset.counts

        try:
            copy = watch_copy(self.target, dataset.topic, dataset.counts, mm2.pids, mm2.started,
                              self._timeout(dataset) + 30, dataset.bytes, alive=mm2.alive,
                              done=committed if transactional else None)
        finally:
            code = mm2.stop()
        verdict = (data.verify(self.target, dataset.topic, dataset, transactional=transactional)
                   if copy.finished else None)
        settings = f", tuning {tuning!r}: {mirrormaker.TUNINGS[tuning]}" if tuning else ", as shipped"
        if transactional:
            settings += ", exactly.once.source.support=enabled, source consumer read_committed"
        row = _copy_row(name, size, dataset, copy, verdict,
                        note=f"dedicated mode, tasks.max={self.members}{settings}")
        row.details["exit_code"] = code
        row.details["client_settings"] = mirrormaker.client_settings(self.work, tag)
        row.details["task_clients"] = mirrormaker.task_clients(self.work, tag)
        if transactional:
            row.details["committed_reads"] = reads
        if not copy.finished:
            row.details["log_tail"] = mirrormaker.log_tail(self.work, tag)
        data.delete_topics(self.target, [dataset.topic])
        self._stamp(f"{name} {size}: {_fmt(row.records_per_second)} rec/s, valid={row.valid}")
        return row

    def chart(self, dataset: data.DataSet) -> Row:
        target_topic = f"{dataset.topic}.chart-{self.run_id}"
        data.create_topic(self.target, target_topic, dataset.partitions)
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.bench.chartsettings", self.source, self.target,
             dataset.topic, target_topic, str(dataset.records), str(self.plan.chart_seconds)],
            stdout=open(self.work / "chart.log", "wb"), stderr=subprocess.STDOUT, env=ours._env())
        try:
            copy = watch_copy(self.target, target_topic, dataset.counts, [proc.pid], started,
                              self.plan.chart_seconds + 30, dataset.bytes, alive=lambda: proc.poll() is None)
        finally:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        verdict = data.verify(self.target, target_topic, dataset) if copy.finished else None
        row = _copy_row("chart settings", "100B", dataset, copy, verdict,
                        note=f"bounded subset: {dataset.records} records of 100 B")
        data.delete_topics(self.target, [target_topic])
        self._stamp(f"chart settings: {_fmt(row.records_per_second)} rec/s, valid={row.valid}")
        return row

    # -- latency -------------------------------------------------------------------------

    def latency_rows(self, whos: list[str]) -> list[dict]:
        """Each replicator's latency at each load, measured in the plan's latency_turns taken
        in rotation while all of them run (each on topics of its own, idle out of its turn).

        One row after the other, whichever ran first met the brokers still busy with the
        throughput rows (its Kafka-alone p99 was the run's worst each time); in turns, every
        replicator sees the machine as the others do. Even so, the stage's first turn met the
        MM2 JVMs just started and late records for most of its 20 s: each load begins with an
        uncounted turn per replicator.
        """
        sessions = []
        try:
            for who in whos:
                sessions.append(self._latency_session(who))
            rows = []
            for rate in self.plan.loads:
                turns: dict[str, list[latency.LatencyRun]] = {who: [] for who in whos}
                for session in sessions:  # a turn not counted: nobody's first turn meets a cold machine
                    if session.ready and self.plan.latency_warm_up_seconds:
                        latency.measure(self.source, self.target, session.topics[rate], session.targets[rate],
                                        rate, self.plan.latency_warm_up_seconds)
                before = {session.who: self._own_latency(session, rate) for session in sessions}
                for round_ in range(self.plan.latency_turns):
                    shift = round_ % len(sessions)
                    for session in sessions[shift:] + sessions[:shift]:
                        if session.ready:
                            turns[session.who].append(latency.measure(
                                self.source, self.target, session.topics[rate], session.targets[rate], rate,
                                self.plan.latency_seconds / self.plan.latency_turns,
                                pids=lambda runner=session.runner: runner.pids))
                for session in sessions:
                    row = self._latency_row(session, rate, turns[session.who])
                    after = self._own_latency(session, rate)
                    if before[session.who] is not None and after is not None:
                        row["own_metric"] = latency.own_metric(before[session.who], after)
                    rows.append({"replicator": session.who, **row})
            return rows
        finally:
            for session in sessions:
                session.close()

    def _latency_row(self, session: LatencySession, rate: int, turns: list[latency.LatencyRun]) -> dict:
        if not session.ready:
            return latency.LatencyRun(rate, self.plan.latency_seconds,
                                      detail="replicator never copied the warm-up records").as_json()
        run = latency.combined(turns)
        # The whole topic too (warm-up records included): counts per partition match.
        src = data.verify_counts(self.source, session.topics[rate], -1)
        arrived = data.committed_counts(self.target, session.targets[rate])
        if src.counts != arrived:
            run.valid = False
            run.detail += f"; topic counts differ: source {src.counts}, target {arrived}"
        logs = self._broker_gc_logs()
        gc = latency.pauses_during(latency.gc_pauses(logs), run) if logs else None
        self._stamp(f"latency {session.who} {rate}/s in {len(turns)} turns: p50 {_fmt(run.p50_ms)} ms, "
                    f"p99 {_fmt(run.p99_ms)} ms, p99.9 {_fmt(run.p999_ms)} ms, max {_fmt(run.max_ms)} ms, "
                    f"Kafka alone p99 {_fmt(run.direct_p99_ms)} ms, its cores {_fmt(run.replicator_cores, 2)}, "
                    f"idle cores {_fmt(run.idle_cores, 2)}, "
                    + (f"brokers' GC pauses {gc['pauses']}, longest {_fmt(gc['max_ms'])} ms, " if gc else "")
                    + f"valid={run.valid}")
        return {**run.as_json(), **({"broker_gc": gc} if gc else {})}

    def _broker_gc_logs(self) -> list[Path]:
        """The sandbox brokers' GC logs, rotated ones too; none for clusters given by address
        alone, without the state directory of the sandbox running them."""
        state_dir = self.sandbox.state_dir if self.sandbox else self.args.state_dir
        if state_dir is None:
            return []
        return [log for name in CLUSTERS for log in sorted((Path(state_dir) / name).glob(f"{GC_LOG}*"))]

    def _own_latency(self, session: LatencySession, rate: int) -> dict[float, float] | None:
        """Our members' own latency histogram of the load's topic; None for others, or unread."""
        if session.who not in OURS or not session.ready:
            return None
        try:
            return latency.metric_buckets(session.runner.metrics_ports, session.topics[rate])
        except OSError as exc:
            log.warning("%s: its members' /metrics not read: %r", session.who, exc)
            return None

    def _latency_session(self, who: str) -> LatencySession:
        """`who` started on topics of its own, one per load, and warmed up."""
        tag = uuid.uuid4().hex[:6]
        topics = {rate: f"bench.lat{rate}.{who}-{tag}" for rate in self.plan.loads}
        for topic in topics.values():
            data.create_topic(self.source, topic)
        if who in OURS:
            targets = {rate: f"{t}.copy" for rate, t in topics.items()}
            config = ours.write_config(self.work / f"{who}-latency.yaml", self.source, self.target,
                                       f"bench-{who}-lat-{tag}", {topics[r]: targets[r] for r in topics},
                                       self.members, who, self.args.override)
            runner = ours.Replicators(config, self.members, self.work, f"{who}-latency", metrics=True)
        elif who == "relay":
            targets = {rate: f"{t}.copy" for rate, t in topics.items()}
            for topic in targets.values():  # the relay creates no topics
                data.create_topic(self.target, topic)
            runner = ours.Relay(self.source, self.target, f"bench-relay-{tag}",
                                {topics[r]: targets[r] for r in topics}, self.work)
        else:
            targets = dict(topics)
            runner = mirrormaker.MirrorMaker(self.source, self.target, list(topics.values()), self.members,
                                             self.work, tag, tuning=self.tunings[who])
        session = LatencySession(who, topics, targets, runner.start(), self.source, self.target)
        session.ready = self._warm_up(topics, targets, session.runner,
                                      group=f"bench-{who}-lat-{tag}" if who in OURS else None)
        return session

    def _warm_up(self, topics: dict, targets: dict, runner, records: int = 60, timeout: float = 90.0,
                 group: str | None = None) -> bool:
        """Send a few records through each topic and wait until they arrived: the replicator
        is up, owns its partitions and the target topics exist before the clock starts.

        With `group`, also wait until every member owns partitions: the first member up
        copies the warm-up alone, and the rebalance that hands partitions to the others
        would otherwise hold the first second of the load (p99 ~0.6 s at 1,000 records/s).
        """
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        producer = KafkaProducer(bootstrap_servers=self.source)
        for topic in topics.values():
            for i in range(records):
                producer.send(topic, b"warm-up", b"W%d" % i, partition=i % data.PARTITIONS)
        producer.flush()
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers=self.target)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and runner.alive():
                done = True
                for target in targets.values():
                    tps = [TopicPartition(target, p) for p in range(data.PARTITIONS)]
                    try:
                        done = done and sum(consumer.end_offsets(tps).values()) >= records
                    except Exception:
                        done = False
                if done and (group is None or self._group_settled(group)):
                    time.sleep(self.plan.settle_seconds)  # let the replicator settle into its loop
                    return True
                time.sleep(0.5)
            return False
        finally:
            consumer.close()

    def _group_settled(self, group: str) -> bool:
        """Whether the group is stable with each of our members owning partitions."""
        description = data.group_description(self.source, group)
        owners = {member.get("group_instance_id") or member.get("member_id")
                  for member in description.get("members", ())
                  if (member.get("member_assignment") or {}).get("assigned_partitions")}
        return description.get("group_state") == "Stable" and len(owners) == self.members

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> dict:
        self.setup()
        sets = self.datasets()
        only = selected(self.args.only)
        for index, size in enumerate(self.plan.sizes):
            dataset = sets.get(size)
            if dataset is None:
                continue
            here = only - set(self.plan.first_set_only) if index else only
            # The brokers' own limit is measured on the batched data sets only.
            if "ceiling" in here and not dataset.one_per_batch:
                self._quiet(f"ceiling {size}")
                self.rows.append(self.ceiling(size, dataset))
            for name in (*OURS, ours.RAY_ROW):
                if name in here:
                    self._quiet(f"{name} {size}")
                    self.rows.append(self.ours(name, size, dataset, profile=self.args.profile))
            for name, tuning in self.tunings.items():
                if name in here:
                    self._quiet(f"{name} {size}")
                    self.rows.append(self.mirror_maker(size, dataset, name, tuning))
            if "mm2-search" in here:  # not by default: which tuning the tuned row uses
                for tuning in mirrormaker.TUNINGS:
                    self._quiet(f"mm2-search:{tuning} {size}")
                    self.rows.append(self.mirror_maker(size, dataset, f"mm2-search:{tuning}", tuning))
        if "chart" in only:
            self.rows.append(self.chart(sets["chart"]))
        if only & {"latency", "relay"}:
            # Latency of the replicators --only names, or of all of them if it names none.
            whos = [r for r in LATENCY_ROWS if r in only] or (list(LATENCY_ROWS) if "latency" in only else [])
            if "relay" in only:  # not by default: kafka-python's own latency, for the analysis
                whos.append("relay")
            self.latency = self.latency_rows(whos)
        if "costs" in only:
            self.costs = self.cpu_per_record(sets["100B"])
            if data.ONE_PER_BATCH in sets:  # where batch mode merges instead of copying
                self.costs_one_per_batch = self.cpu_per_record(sets[data.ONE_PER_BATCH])
        if "failover" in only:  # not by default: a correctness comparison, not a speed one
            scenario = Failover(self.source, self.target, self.members, self.work, self.plan.failover_records)
            # A tuning changes nothing of how MM2 translates offsets: the failover row runs it as shipped.
            for who in [r for r in FAILOVER if r in only] or FAILOVER:
                run = scenario.run(who)
                self.failover.append(run.as_json())
                self._stamp(f"failover {who}: {run.detail}")
            self.translation = failover.translation_cost()
            self._stamp(f"translation in memory: {self.translation}")
        if "scale" in only:  # not by default: ours and MM2 tuned as partitions, topics and members grow
            plan = scale.PLANS[self.plan.name]
            if self.args.scale_shapes:
                plan = plan.only(self.args.scale_shapes)
            if self.args.scale_records:
                plan = replace(plan, records=self.args.scale_records)
            if self.sandbox is not None:
                self._stamp(f"scale: the brokers' disk reads ahead {readahead_kb(self.sandbox.state_dir)} KiB")
            self.scale = scale.Sweep(self.source, self.target, self.work, plan, self.members,
                                     self.run_id, self._stamp).run()
        if only & {"failover", *OURS}:
            self.offset_map = failover.map_size(self.target)
            self._stamp(f"offset map on the target: {self.offset_map}")
        return self.results(sets)

    def cpu_per_record(self, dataset: data.DataSet) -> dict:
        """kafka-python's decode and encode cost: a side measurement, so a failure is logged
        and recorded in the results instead of losing the rows measured before it."""
        try:
            result = costs.measure(self.source, dataset.topic, min(self.plan.costs_records, dataset.records))
        except Exception as exc:
            log.exception("CPU per record not measured")
            return {"error": repr(exc)}
        self._stamp(f"CPU per record: {result}")
        return result

    def results(self, sets: dict[str, data.DataSet]) -> dict:
        return {
            "run_id": self.run_id,
            "mode": self.plan.name,
            "command": "python -m workbench.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "source": self.source_commit,
            "members": self.members,
            "seconds": round(time.monotonic() - self.started, 1),
            "machine": machine(self.sandbox.state_dir if self.sandbox else None),
            "versions": versions(),
            "datasets": {label: {k: v for k, v in ds.as_json().items() if k != "digests"}
                         for label, ds in sets.items()},
            "throughput": [row.as_json() for row in self.rows],
            "latency": self.latency,
            "cpu_per_record": self.costs,
            "cpu_per_record_one_per_batch": self.costs_one_per_batch,
            "failover": self.failover,
            "translation": self.translation,
            "offset_map": self.offset_map,
            "scale": self.scale,
            "timeline": self.timeline,
            "work_dir": str(self.work),
        }

    def close(self) -> None:
        if self.ray is not None:
            self.ray.close()
        if self.sandbox is not None and not self.args.keep_sandbox:
            self.sandbox.down()


def selected(only: list[str] | None) -> set[str]:
    """The rows --only asks for (`ours` stands for both modes); every default row without it."""
    if not only:
        return set(ROWS)
    return {name for item in only for name in ALIASES.get(item, [item])}


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.{digits}f}"


def machine(broker_data: Path | None = None) -> dict:
    """What the figures depend on: cores, memory, and the read-ahead of the brokers' disk when
    the bench started the brokers itself (None when it did not)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "memory": mem, "platform": platform.platform(),
            "load_average": os.getloadavg(),
            "disk_readahead_kb": readahead_kb(broker_data) if broker_data else None}


def readahead_kb(path: Path) -> int | None:
    """How far the kernel reads ahead on the disk holding ``path`` (None off a block device).

    Kafka maps each partition's offset and time index files (10 MiB, mostly holes) and the
    first touch of a mapping pulls in this much around it: at the 8 MiB of the VM the
    published runs used, 16 MiB of page cache per partition on each broker, and the scale
    sweep's brokers thrash at 3,000 partitions (BENCHMARKS.md, *Scale*)."""
    try:
        device = os.stat(path).st_dev
    except OSError:
        return None
    block = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    for queue in (block / "queue", block / ".." / "queue"):  # a partition's queue is its disk's
        try:
            return int((queue / "read_ahead_kb").read_text())
        except (OSError, ValueError):
            continue
    return None


def source_commit() -> dict:
    """The commit the run's code comes from, and whether files differed from it (results
    aside): None outside a git clone."""
    repo = Path(__file__).resolve().parents[3]

    def git(*args) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    changed = git("status", "--porcelain", "--", ".", f":!{RESULTS_DIR.relative_to(repo)}")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(changed) if changed is not None else None}


def versions() -> dict:
    import kafka

    java = subprocess.run([java_executable(), "-version"], capture_output=True, text=True).stderr.splitlines()
    return {"python": platform.python_version(), "kafka_python": kafka.__version__,
            "brokers": KAFKA_VERSION, "mirror_maker": jars.MIRROR_MAKER_VERSION,
            "kafka_tools": jars.TOOLS_VERSION, "java": java[0] if java else ""}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.bench",
        description="Throughput, CPU cost and latency of our replicator against MirrorMaker 2.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="a small data set and short latency runs (a few minutes)")
    mode.add_argument("--tiny", dest="mode", action="store_const", const="tiny",
                      help="a few thousand records, seconds of latency (the smoke test)")
    parser.set_defaults(mode="full")
    parser.add_argument("--members", type=int, default=2,
                        help="our members per direction, and MirrorMaker 2's tasks.max (default 2)")
    parser.add_argument("--source", help="bootstrap servers of a running source cluster (else the sandbox)")
    parser.add_argument("--target", help="bootstrap servers of a running target cluster (else the sandbox)")
    parser.add_argument("--state-dir", type=Path, help="sandbox state directory "
                        "(default ~/.cache/kafka-replicator/bench-sandbox); with --source and --target, "
                        "that of the sandbox running them, whose brokers' GC logs the latency rows read")
    parser.add_argument("--keep-sandbox", action="store_true",
                        help="leave the sandbox running (a re-run then reuses the pre-loaded data)")
    parser.add_argument("--work-dir", type=Path, help="logs and configs of this run")
    parser.add_argument("--out", type=Path, help="results JSON (default: dev/workbench/bench/results/"
                        "bench-full.json for a full run, else in the work dir); the PNG goes next to it")
    parser.add_argument("--only", nargs="+", choices=ROWS + EXTRA_ROWS + list(ALIASES),
                        help="run these rows only (ours: ours-batch, ours-record and ours-exactly-once; "
                        "mirrormaker2-eos: MirrorMaker 2 tuned with exactly-once source support; with latency, "
                        "the latency rows of the replicators named, or of all if none is; relay: "
                        "latency of a bare kafka-python poll/send loop, not run by default; "
                        "failover: a consumer group moved to the target by each replicator named, "
                        "or by all, not run by default; mm2-search: MirrorMaker 2 with each of its "
                        "tunings, not run by default; scale: ours and MirrorMaker 2 tuned over "
                        "1×6 to 1×3,000 and 300×10 partitions and 1, 2 and 4 members, not run by default)")
    parser.add_argument("--scale-shapes", nargs="+", metavar="TOPICSxPARTITIONS",
                        help="the scale sweep's shapes to run, of its plan's (e.g. 1x6 1x3000 300x10)")
    parser.add_argument("--scale-records", type=int, metavar="N",
                        help="records per shape in the scale sweep (default: the plan's, 1,000,000 in a full run)")
    parser.add_argument("--latency-seconds", type=float, metavar="SECONDS",
                        help="each latency load's length (default: the plan's, 60 s in a full run)")
    parser.add_argument("--preload-workers", type=int, default=2)
    parser.add_argument("--mm2-tuning", choices=list(mirrormaker.TUNINGS), default=mirrormaker.DEFAULT_TUNING,
                        help=f"the mirrormaker2-tuned row's settings (default {mirrormaker.DEFAULT_TUNING}; "
                        "mm2-search runs them all)")
    parser.add_argument("--profile", action="store_true", help="cProfile our replicate processes")
    parser.add_argument("--set", dest="override", type=json.loads, default=None, metavar="JSON",
                        help='config overrides for ours, e.g. \'{"producer": {"lingerMs": 10}}\'')
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        bench.close()
    # A full run's results are the ones BENCHMARKS.md shows; smaller runs stay in their work dir.
    # A sweep alone keeps its own file: it leaves the full run's results as they are.
    stem = "scale" if selected(args.only) == {"scale"} else "bench"
    out = args.out or (RESULTS_DIR / f"{stem}-full.json" if args.mode == "full" else bench.work / f"{stem}-{args.mode}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(report.table(results))
    png = out.with_suffix(".png")
    if not (results["throughput"] or results["latency"]):
        print(f"\nresults: {out}")
        return 0
    try:
        report.chart(results, png)
        print(f"\nresults: {out}\nchart:   {png}")
    except ImportError:
        print(f"\nresults: {out}\n(no chart: pip install -e '.[bench]' for matplotlib)")
    return 0
