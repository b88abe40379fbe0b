"""End-to-end latency at a fixed offered load.

A load process produces records to a source topic at a fixed rate; each record's
CreateTime is set by that producer when it sends. An arrival process consumes the
replicated topic on the target and takes, for every record, the wall-clock time its
poll returned minus the record's CreateTime. A second arrival process does the same on
the source topic itself: the latency of Kafka alone (produce, fetch) on this machine at
that moment, the floor under any replicator's figure. Each runs in a process of its own
so that none's work delays another's clock readings.
"""

from __future__ import annotations

import bisect
import multiprocessing
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from .data import PARTITIONS, Digest, value_of
from .procstat import CpuMeter, idle_cores, machine_busy

VALUE_SIZE = 100
TICK = 0.005
LATE_MS = 100.0
HISTOGRAM_EDGES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 60000]


def latency_key(index: int) -> bytes:
    return b"L%010d" % index


def expected_digests(records: int, partitions: int = PARTITIONS) -> dict[int, tuple[int, str]]:
    digests = {p: Digest() for p in range(partitions)}
    for index in range(records):
        digests[index % partitions].add(latency_key(index), b"", None)
    return {p: (d.count, d.hexdigest()) for p, d in digests.items()}


def _load(bootstrap: str, topic: str, rate: int, seconds: float, start_at: float, queue) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=0, batch_size=262144)
    send = producer.send
    sent = 0
    try:
        while time.time() < start_at:
            time.sleep(0.001)
        started = time.monotonic()
        total = int(rate * seconds)
        while sent < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            while sent < due:
                # CreateTime is taken here, at send, by the producer.
                send(topic, value_of(sent % PARTITIONS, sent, VALUE_SIZE), latency_key(sent),
                     [("bench-seq", b"%d" % sent)], sent % PARTITIONS)
                sent += 1
            time.sleep(TICK)
        producer.flush(timeout=60)
        queue.put(("sent", sent, time.monotonic() - started))
    except BaseException as exc:
        queue.put(("error", repr(exc), 0.0))
    finally:
        producer.close(timeout=10)


def _arrivals(bootstrap: str, topic: str, ready, stop_after, queue, label: str = "arrived") -> None:
    # read_committed: an exactly-once copy arrives when its transaction commits.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=100, isolation_level="read_committed")
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    for tp in tps:
        consumer.position(tp)
    ready.set()
    latencies: list[float] = []
    late: list[float] = []  # CreateTimes (ms) of the records that took over LATE_MS
    digests = {p: Digest() for p in range(PARTITIONS)}
    expected = None
    deadline = None
    try:
        while True:
            batches = consumer.poll(timeout_ms=100, max_records=10_000)
            now_ms = time.time() * 1000.0
            for tp, batch in batches.items():
                add = digests[tp.partition].add
                for record in batch:
                    latency = now_ms - record.timestamp
                    latencies.append(latency)
                    if latency > LATE_MS:
                        late.append(record.timestamp)
                    add(record.key, b"", None)
            if expected is None and not stop_after.empty():
                expected, grace = stop_after.get()
                deadline = time.monotonic() + grace
            if expected is not None and (len(latencies) >= expected or time.monotonic() > deadline):
                break
        queue.put((label, latencies, {p: (d.count, d.hexdigest()) for p, d in digests.items()},
                   late))
    except BaseException as exc:
        queue.put(("error", repr(exc), {}))
    finally:
        consumer.close()


def percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class LatencyRun:
    rate: int
    seconds: float
    sent: int = 0
    arrived: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    achieved_rate: float | None = None
    valid: bool = False
    detail: str = ""
    histogram: dict = field(default_factory=dict)
    # Records over LATE_MS, by the second of the load they were sent in: when it stalled.
    late_by_second: dict = field(default_factory=dict)
    # Kafka alone: the same records' arrival on the source topic (no replication).
    direct_p50_ms: float | None = None
    direct_p99_ms: float | None = None
    direct_max_ms: float | None = None
    # While the load ran: the replicator's processes' cores, and the machine's cores left idle.
    # A replicator's own work slows everyone's clock readings, Kafka alone's too.
    replicator_cores: float | None = None
    idle_cores: float | None = None
    turns: int = 1  # measurements combined into this one (`combined`)
    # Wall-clock time (epoch s) the load of each turn began: to line stalls up with GC logs.
    turn_starts: list = field(default_factory=list)
    # Every arrival's latency and Kafka alone's, sorted, ms: what `combined` pools.
    samples: list = field(default_factory=list, repr=False)
    direct_samples: list = field(default_factory=list, repr=False)

    def as_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("samples", "direct_samples")}

    def summarize(self) -> None:
        """The percentiles and histogram of `samples` and `direct_samples`."""
        latencies, floor = self.samples, self.direct_samples
        self.arrived = len(latencies)
        self.p50_ms, self.p99_ms, self.p999_ms = (percentile(latencies, q) for q in (0.5, 0.99, 0.999))
        self.max_ms = latencies[-1] if latencies else None
        self.direct_p50_ms, self.direct_p99_ms = percentile(floor, 0.5), percentile(floor, 0.99)
        self.direct_max_ms = floor[-1] if floor else None
        self.histogram = {f"<={e}ms": bisect.bisect_right(latencies, e) for e in HISTOGRAM_EDGES_MS}


def combined(turns: list[LatencyRun]) -> LatencyRun:
    """Turns at the same rate as one run: their arrivals pooled; valid if every turn was."""
    run = LatencyRun(turns[0].rate, sum(t.seconds for t in turns), turns=len(turns))
    run.sent = sum(t.sent for t in turns)
    run.turn_starts = [start for t in turns for start in t.turn_starts]
    rates = [t.achieved_rate for t in turns if t.achieved_rate]
    run.achieved_rate = sum(rates) / len(rates) if rates else None
    run.replicator_cores, run.idle_cores = (_mean([getattr(t, name) for t in turns])
                                            for name in ("replicator_cores", "idle_cores"))
    run.samples = sorted(x for t in turns for x in t.samples)
    run.direct_samples = sorted(x for t in turns for x in t.direct_samples)
    run.summarize()
    run.valid = bool(turns) and all(t.valid for t in turns)
    run.detail = "; ".join(f"turn {i + 1}: {t.detail}" for i, t in enumerate(turns))
    run.late_by_second = {f"turn {i + 1} s{second}": n for i, t in enumerate(turns)
                          for second, n in t.late_by_second.items()}
    return run


def measure(source: str, target: str, source_topic: str, target_topic: str, rate: int,
            seconds: float, grace: float = 30.0, pids: Callable[[], list[int]] | None = None) -> LatencyRun:
    """Offer `rate` records/s for `seconds` and time each record's arrival on the target;
    with `pids`, the replicator's processes, also the cores they and the machine used."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    ready, stop_after = ctx.Event(), ctx.Queue()
    direct_ready, direct_stop = ctx.Event(), ctx.Queue()
    arrivals = ctx.Process(target=_arrivals, args=(target, target_topic, ready, stop_after, queue), daemon=True)
    direct = ctx.Process(target=_arrivals, args=(source, source_topic, direct_ready, direct_stop, queue, "direct"),
                         daemon=True)
    arrivals.start()
    direct.start()
    run = LatencyRun(rate, seconds)
    if not (ready.wait(60) and direct_ready.wait(60)):
        for proc in (arrivals, direct):
            proc.kill()
        run.detail = "the arrival consumers did not start"
        return run
    load_started_ms = (time.time() + 1.0) * 1000.0
    run.turn_starts = [load_started_ms / 1000.0]
    load = ctx.Process(target=_load, args=(source, source_topic, rate, seconds, load_started_ms / 1000.0,
                                           queue), daemon=True)
    load.start()
    cpu: dict[str, float] = {}
    sampler = threading.Thread(target=_cpu_during, args=(pids, load_started_ms / 1000.0, seconds, cpu),
                               daemon=True) if pids is not None else None
    if sampler:
        sampler.start()
    sent = arrived = direct_arrived = None
    try:
        while sent is None or arrived is None or direct_arrived is None:
            item = queue.get(timeout=seconds + grace + 120)
            if item[0] == "sent":
                sent = item
                stop_after.put((item[1], grace))
                direct_stop.put((item[1], grace))
            elif item[0] == "arrived":
                arrived = item
            elif item[0] == "direct":
                direct_arrived = item
            else:
                run.detail = f"load or arrival process failed: {item[1]}"
                stop_after.put((0, 0.0))
                direct_stop.put((0, 0.0))
                return run
    finally:
        for proc in (load, arrivals, direct):
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        if sampler:
            sampler.join(timeout=seconds + 5)
    run.replicator_cores, run.idle_cores = cpu.get("replicator"), cpu.get("idle")
    run.sent, run.achieved_rate = sent[1], sent[1] / sent[2] if sent[2] else None
    run.samples, run.direct_samples = sorted(arrived[1]), sorted(direct_arrived[1])
    run.summarize()
    run.late_by_second = _late_by_second(arrived[3], load_started_ms)
    expected = expected_digests(run.sent)
    if arrived[2] != expected:
        bad = [p for p in expected if arrived[2].get(p) != expected[p]]
        run.detail = (f"{run.arrived} of {run.sent} records arrived; partitions {bad} differ from "
                      "what was sent (count or key order)")
    else:
        run.valid = True
        run.detail = f"all {run.sent} records arrived once, in order per partition"
    return run


def _cpu_during(pids: Callable[[], list[int]], start_at: float, seconds: float, out: dict) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    meter, machine, started = CpuMeter(pids), machine_busy(), time.monotonic()
    meter.mark()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    out["replicator"], out["idle"] = meter.since_mark() / elapsed, idle_cores(machine, elapsed)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


# `-Xlog:gc:file=...:time` writes one line per stop-the-world pause, e.g.
# [2026-12-06T10:48:00.123+0000] GC(12) Pause Young (Normal) (G1 Evacuation Pause) 60M->9M(512M) 4.321ms
_GC_PAUSE = re.compile(r"^\[([^\]]+)\] GC\(\d+\) Pause .* ([\d.]+)ms$")


def gc_pauses(logs: Iterable[Path]) -> list[tuple[float, float]]:
    """(wall-clock end in epoch s, length in ms) of every pause in JVM GC logs."""
    pauses = []
    for path in logs:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if match := _GC_PAUSE.match(line):
                ended = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
                pauses.append((ended, float(match.group(2))))
    return sorted(pauses)


def pauses_during(pauses: list[tuple[float, float]], run: LatencyRun) -> dict:
    """The pauses that ended while one of the run's turns offered its load."""
    length = run.seconds / max(1, len(run.turn_starts))
    during = [ms for ended, ms in pauses
              if any(start <= ended <= start + length for start in run.turn_starts)]
    return {"pauses": len(during), "total_ms": round(sum(during), 1),
            "max_ms": max(during, default=0.0)}


def metric_buckets(ports: list[int], topic: str) -> dict[float, float]:
    """The replicator's own latency histogram of `topic` (kafka_replicator_topic_latency_ms:
    target acknowledgement minus CreateTime, one observation per acknowledged write), its
    members' cumulative buckets summed."""
    buckets: dict[float, float] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "kafka_replicator_topic_latency_ms_bucket" and sample.labels.get("topic") == topic:
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def own_metric(before: dict[float, float], after: dict[float, float]) -> dict:
    """p50 and p99 of what the histogram counted between two readings, estimated as
    Prometheus's histogram_quantile does (linear within a bucket), and how many writes."""
    bounds = sorted(after)
    counted = {bound: after[bound] - before.get(bound, 0.0) for bound in bounds}
    if not bounds or not counted[bounds[-1]]:
        return {}
    return {"writes": int(counted[bounds[-1]]), "p50_ms": _bucket_quantile(bounds, counted, 0.5),
            "p99_ms": _bucket_quantile(bounds, counted, 0.99)}


def _bucket_quantile(bounds: list[float], cumulative: dict[float, float], q: float) -> float:
    rank, lower, below = q * cumulative[bounds[-1]], 0.0, 0.0
    for bound in bounds:
        if cumulative[bound] >= rank:
            if bound == float("inf"):
                return lower  # beyond the last finite bucket: its bound, as Prometheus says
            return lower + (bound - lower) * (rank - below) / max(cumulative[bound] - below, 1e-9)
        lower, below = bound, cumulative[bound]
    return lower


def _late_by_second(late: list[float], started_ms: float) -> dict[str, int]:
    return dict(Counter(str(max(0, int((created - started_ms) // 1000))) for created in late))
