"""Timing a copy: when the first record lands on the target, when the last one does,
and the CPU seconds the copying processes used in between."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from kafka import KafkaConsumer, OffsetSpec, TopicPartition

from .procstat import CpuMeter

POLL_SECONDS = 0.2
# A poll of end offsets gives up after this long, and one that did not answer says nothing:
# not that nothing was copied yet (a 1×3,000 copy was once timed from 0.5 s after its processes
# started, 20 s too early, and copies were timed over 0.23 and 0.56 s, polls that timed out
# during them taken for empty).
POLL_TIMEOUT_MS = 5000


@dataclass
class Copy:
    records: int
    bytes: int
    startup_seconds: float | None = None  # process start to the first record on the target
    copy_seconds: float | None = None  # first record to the last one on the target
    cpu_seconds: float | None = None  # CPU of the copying processes over copy_seconds
    cpu_total_seconds: float | None = None  # ... from their start to the last record
    finished: bool = False
    copied: int = 0
    peak_rss_bytes: int = 0  # of the copying processes together, sampled at each poll

    @property
    def records_per_second(self) -> float | None:
        return self.records / self.copy_seconds if self.finished and self.copy_seconds else None

    @property
    def mb_per_second(self) -> float | None:
        return self.bytes / 1e6 / self.copy_seconds if self.finished and self.copy_seconds else None

    @property
    def records_per_cpu_second(self) -> float | None:
        return self.records / self.cpu_seconds if self.finished and self.cpu_seconds else None

    def as_json(self) -> dict:
        data = asdict(self)
        data.update(records_per_second=self.records_per_second, mb_per_second=self.mb_per_second,
                    records_per_cpu_second=self.records_per_cpu_second)
        return data


def end_offsets(consumer: KafkaConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The target's end offset of each partition; 0 for those its leader answered with an error
    (not the leader, unknown partition: it has not made their log yet).

    kafka-python's `end_offsets` retries such partitions until it times out, and then drops the
    answers it had: while the target broker made a new topic's 3,000 partition logs (about 20 s)
    polls failed, and the copy into the partitions already made went unseen. A leader without a
    partition's log holds no record of it (the bench's target is one broker: no leader moves).
    Raises KafkaTimeoutError when no answer came within POLL_TIMEOUT_MS.
    """
    fetcher = consumer._fetcher  # its per-partition answers are not public

    async def ask():
        asked = fetcher._manager.call_soon(fetcher._send_list_offsets_requests,
                                           dict.fromkeys(partitions, OffsetSpec.LATEST))
        return await fetcher._manager.wait_for(asked, POLL_TIMEOUT_MS)

    answered, not_held = fetcher._manager.run(ask)
    return {**dict.fromkeys(not_held, 0), **{tp: found.offset for tp, found in answered.items()}}


def watch_copy(bootstrap: str, topic: str, expected: dict[int, int], pids, started: float,
               timeout: float, nbytes: int, alive=None, done=None) -> Copy:
    """Poll the target's end offsets until they reach `expected` (or `timeout` passes).

    `pids`: the copying processes, or a callable that lists them anew at each sample.
    `started` is the monotonic time the copying processes were launched; `alive()`, if
    given, returns False once they died (the watch then stops early). `done()`, if given,
    says when the copy is complete instead of the end offsets (which count transaction
    markers too).
    """
    return watch_topics(bootstrap, {topic: expected}, pids, started, timeout, nbytes, alive, done)


def watch_topics(bootstrap: str, expected: dict[str, dict[int, int]], pids, started: float,
                 timeout: float, nbytes: int, alive=None, done=None) -> Copy:
    """watch_copy over several target topics: `expected` holds each one's records per partition."""
    total = sum(sum(counts.values()) for counts in expected.values())
    result = Copy(records=total, bytes=nbytes)
    meter = CpuMeter(pids)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    tps = [TopicPartition(topic, p) for topic, counts in expected.items() for p in sorted(counts)]
    led: list[TopicPartition] = []  # the partitions whose leader is known
    first = None
    empty_at = started  # the last poll that saw nothing copied yet
    meter.mark()
    deadline = started + timeout
    try:
        while time.monotonic() < deadline:
            if len(led) < len(tps):
                # The replicator creates the target topics, and their partitions get leaders one by
                # one (20 s for 3,000): end offsets of the others would wait, and the copy into the
                # first ones would go unseen.
                consumer.topics()  # refreshes the metadata (kafka-python has no public leader lookup)
                led = [tp for tp in tps if consumer._cluster.leader_for_partition(tp) not in (None, -1)]
            copied, answered = result.copied, not led  # without leaders, nothing is copied yet
            if led:
                try:
                    copied = sum(end_offsets(consumer, led).values())
                    answered = True
                except Exception:  # a leader moved or is slow to answer: the next poll asks again
                    pass
            now = time.monotonic()
            result.copied = copied
            result.peak_rss_bytes = max(result.peak_rss_bytes, meter.rss())
            if answered and not copied:
                # The copy starts somewhere after this poll: time and CPU count from here
                # (at most one poll interval early, the same for every replicator).
                empty_at = now
                meter.mark()
            elif copied and first is None:
                first = empty_at
                result.startup_seconds = first - started
            if (done() if done is not None and copied else copied >= total):
                result.cpu_seconds = meter.since_mark()
                result.cpu_total_seconds = meter.sample()
                result.copy_seconds = now - first
                result.finished = True
                return result
            if alive is not None and not alive():
                break
            time.sleep(POLL_SECONDS)
    finally:
        consumer.close()
    if first is not None:
        result.copy_seconds = time.monotonic() - first
        result.cpu_seconds = meter.since_mark()
    return result
