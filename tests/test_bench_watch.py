"""The bench's copy watcher times a copy from the last poll that saw nothing copied: a poll the
target did not answer (a new topic's partitions without leaders, a broker busy making 3,000
partition logs) says nothing, and neither starts nor shortens the copy; a partition its leader
answers it does not hold yet holds nothing copied.

The timing tests script a stand-in for the watcher's consumer: what is under test there is the
bench's timing logic, and a real broker cannot be made to time out on cue without pausing the
sandbox every other test shares. The end offsets themselves are asked of the real target."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError

from kafka_support import create_topic, produce
from workbench.bench import measure

TOPIC = "copied"
PARTITIONS = 4
EXPECTED = {TOPIC: {p: 10 for p in range(PARTITIONS)}}


class ScriptedTarget:
    """Answers the watcher's polls from a script: per poll, leaders known or not, then the
    records copied so far, or None for a poll that times out."""

    def __init__(self, script: list[tuple[bool, int | None]]):
        self.script = list(script)
        self.polls: list[float] = []  # when each poll's end offsets were asked
        self.led = False
        self._cluster = SimpleNamespace(leader_for_partition=lambda tp: 1 if self.led else None)

    def topics(self):
        self.led = self.script[0][0]
        if not self.led:  # a poll without leaders asks no end offsets: its step ends here
            self.script.pop(0)
        return {TOPIC} if self.led else set()

    def end_offsets(self, partitions, timeout_ms=None):
        self.polls.append(time.monotonic())
        _, copied = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if copied is None:
            time.sleep((timeout_ms or 300) / 1000)
            raise KafkaTimeoutError("no answer")
        per_partition = copied // PARTITIONS
        return {TopicPartition(TOPIC, p): per_partition for p in range(PARTITIONS)}

    def close(self):
        pass


def watch(script, monkeypatch):
    target = ScriptedTarget(script)
    monkeypatch.setattr(measure, "KafkaConsumer", lambda **_: target)
    monkeypatch.setattr(measure, "end_offsets",
                        lambda consumer, partitions: consumer.end_offsets(partitions, measure.POLL_TIMEOUT_MS))
    monkeypatch.setattr(measure, "POLL_TIMEOUT_MS", 300)
    started = time.monotonic()
    copy = measure.watch_topics("unused:9092", EXPECTED, [os.getpid()], started, 30.0, 4000)
    return copy, target, started


def test_a_poll_that_times_out_neither_starts_nor_shortens_the_copy(monkeypatch):
    copy, target, started = watch([(False, 0), (True, None), (True, None), (True, 0), (True, 20), (True, 40)],
                                  monkeypatch)
    assert copy.finished
    last_empty = target.polls[2]  # the answered "nothing yet", after the two that timed out
    assert copy.startup_seconds >= last_empty - started
    assert copy.copy_seconds <= target.polls[-1] - target.polls[2] + 0.5


def test_polls_that_time_out_during_the_copy_leave_its_start_where_it_was(monkeypatch):
    copy, target, started = watch([(True, 0), (True, None), (True, None), (True, 40)], monkeypatch)
    assert copy.finished
    # Only the first poll answered "nothing yet": the copy is timed from it, over the two
    # polls that timed out, and not from the last of them.
    assert copy.copy_seconds >= 2 * 0.3
    assert copy.startup_seconds < target.polls[1] - started


def test_end_offsets_are_read_per_partition_from_the_target(sandbox, name):
    create_topic(sandbox.target, name, partitions=2)
    produce(sandbox.target, name, [(0, None, b"r", None, None)] * 3 + [(1, None, b"r", None, None)] * 5)
    consumer = KafkaConsumer(bootstrap_servers=sandbox.target)
    try:
        consumer.topics()  # the watcher's metadata refresh, which finds the leaders
        assert measure.end_offsets(consumer, [TopicPartition(name, 0), TopicPartition(name, 1)]) == {
            TopicPartition(name, 0): 3, TopicPartition(name, 1): 5}
    finally:
        consumer.close()


def test_a_partition_its_leader_does_not_hold_yet_counts_as_nothing_copied(sandbox, name):
    # A partition the target's metadata gives a leader that has not made its log yet, as while
    # a broker makes 3,000 of them: here a partition past the topic's last, led by its broker.
    create_topic(sandbox.target, name, partitions=1)
    produce(sandbox.target, name, [(0, None, b"r", None, None)] * 3)
    made, not_made = TopicPartition(name, 0), TopicPartition(name, 1)
    consumer = KafkaConsumer(bootstrap_servers=sandbox.target)
    try:
        consumer.topics()
        leader = consumer._cluster.leader_for_partition(made)
        consumer._cluster.leader_for_partition = lambda tp: leader
        started = time.monotonic()
        assert measure.end_offsets(consumer, [made, not_made]) == {made: 3, not_made: 0}
        assert time.monotonic() - started < measure.POLL_TIMEOUT_MS / 1000  # answered, not timed out
    finally:
        consumer.close()
