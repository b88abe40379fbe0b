"""The Flow's loop, commit rule and failure policy, on fakes of its collaborators (no Kafka)."""

from __future__ import annotations

import threading
import time

import pytest
from kafka.errors import (
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OffsetOutOfRangeError,
    UnknownTopicOrPartitionError,
)
from kafka.structs import TopicPartition

from batch_support import make, rec
from replicator import flow as flow_module
from replicator.assembly import Parts
from replicator.config import parse_config
from replicator.errors import ClusterError
from replicator.fetcher import FetchAnswer, Fetched
from replicator.flow import Flow
from replicator.group_member import Refusal, Refused
from replicator.producer import Delivery, Shipment
from replicator.shipping import Step
from replicator.topics import Layout, Synced

T = TopicPartition("orders", 0)
BATCH = 10  # records per fetched batch


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(flow_module.time, "monotonic", clock)
    return clock


def a_config(group: dict | None = None, **direction):
    return parse_config({
        "sourceKafka": {"bootstrapServers": "127.0.0.1:1"},
        "targetKafka": {"bootstrapServers": "127.0.0.1:2"},
        "consumerGroup": {"sourceToTarget": {"groupId": "mirror", "enableAutoCommit": False,
                                             **(group or {})}},
        "replication": {"sourceToTarget": {"topics": [{"sourceTopicName": "orders"}], **direction}},
        "shutdownGracePeriodSeconds": 2,
    })


class FakeFetcher:
    """A source log of `end` records in batches of ten: each pump asks for the next one."""

    def __init__(self, end: int = 30):
        self.end = end
        self.positions: dict = {}
        self.paused: set = set()
        self.seeks: list = []
        self.pumps = 0
        self.high_watermarks: dict = {}
        self.waiting = False
        self.errors: dict = {}  # offset → the error its first fetch answers

    def assign(self, tp, offset):
        self.positions[tp] = offset

    def seek(self, tp, offset):
        self.positions[tp] = offset
        self.seeks.append((tp, offset))

    def advance(self, tp, offset):
        self.positions[tp] = max(self.positions[tp], offset)

    def position(self, tp):
        return self.positions.get(tp)

    def owned(self):
        return list(self.positions)

    def forget(self, tps):
        for tp in tps:
            self.positions.pop(tp, None)

    def pause(self, tp):
        self.paused.add(tp)

    def resume(self, tp):
        self.paused.discard(tp)

    def discard(self, node):
        pass

    def pump(self, put):
        self.pumps += 1
        for tp, offset in self.positions.items():
            if tp not in self.paused and offset < self.end:
                put(FetchAnswer(0, {tp: offset}, None))

    def answered(self, node, sent, answer):
        [(tp, offset)] = sent.items()
        if self.positions.get(tp) != offset or tp in self.paused:
            return []
        if offset in self.errors:
            return [Fetched(tp, offset, b"", [], self.errors.pop(offset))]
        self.high_watermarks[tp] = self.end
        batch = make([rec(i) for i in range(BATCH)], base_offset=offset)
        return [Fetched(tp, offset, bytes(batch.data), [], None)]


class FakeShipper:
    """One shipment per fetched batch, carrying its source offsets."""

    def plan(self, tp, target, position, fetched, aborted, singles):
        steps = []
        for batch in fetched:
            shipment = Shipment(tp, batch.record_count, Delivery(1, 0), data=b"", origin=tp,
                                runs=((batch.base_offset, batch.record_count),))
            steps.append(Step(batch.base_offset, batch.next_offset, [shipment], "copy", batch.record_count))
        return steps


class FakeTarget:
    """The target producer: `answer(first_offset)` is None to hold a shipment, True to
    acknowledge it, or the exception that refuses it."""

    unacknowledged_bytes = 0

    def __init__(self, answer=lambda first: True):
        self.answer = answer
        self.waiting: list[Shipment] = []
        self.shipped: list[int] = []  # first offsets, in the order submitted
        self.acked: set[int] = set()

    def submit(self, shipment):
        self.waiting.append(shipment)
        self.shipped.append(shipment.runs[0][0])

    def pump(self, put):
        for shipment in list(self.waiting):
            first = shipment.runs[0][0]
            verdict = self.answer(first)
            if verdict is None:
                continue
            self.waiting.remove(shipment)
            if verdict is True:
                self.acked.add(first)
                shipment.delivery.part_written()
            else:
                shipment.delivery.fail(verdict)

    def acknowledged_prefix(self) -> int:
        """The end of the run of acknowledged batches from offset 0."""
        end = 0
        while end in self.acked:
            end += BATCH
        return end


class PassThrough:
    """A committer for which whatever the target acknowledged is safe at once."""

    def __init__(self, patience=None, flush_error=None):
        self.patience = patience
        self.flush_error = flush_error

    def take_over(self, partitions):
        return {}

    def due(self):
        return False

    def ready(self, loop):
        return loop.acknowledged()

    def flush(self, loop, seconds):
        if self.flush_error is not None:
            raise self.flush_error
        return loop.acknowledged()

    def committed(self, loop):
        pass

    def wait_for_write(self, loop):
        return False

    def forget(self, partitions):
        pass

    def close(self):
        pass


class FakeGroup:
    """Owns T from the start; `on_poll(group)` runs at every poll (the loop polls at every
    step, as while the group has work), where a test stops the flow or plays a rebalance."""

    def __init__(self, target: FakeTarget, on_poll=lambda group: None, refuse=lambda group: None):
        self.target = target
        self.on_poll = on_poll
        self.refuse = refuse
        self.commits: list[dict] = []
        self.unacknowledged_commits: list[dict] = []
        self.polls = 0
        self.evicted_until_poll = 0
        self.flow = None
        self.closed = False

    def join(self, listener):
        self.flow = listener
        listener.assigned([T], [T])

    def needs_time(self):
        return True

    def poll(self, timeout_ms):
        self.polls += 1
        self.on_poll(self)
        return {}

    def assignment(self):
        return {T}

    def position(self, tp):
        return 0

    def reset_offset(self, tp, how):
        return {"earliest": 0, "latest": self.target.acknowledged_prefix()}[how]

    def evicted(self):
        return self.polls < self.evicted_until_poll

    def rejoin(self):
        pass

    def commit(self, positions):
        refusal = self.refuse(self)
        if refusal is not None:
            return refusal
        if positions[T] > self.target.acknowledged_prefix():
            self.unacknowledged_commits.append(dict(positions))
        self.commits.append(dict(positions))
        return None

    def leave_on_close(self):
        pass

    def close(self, timeout_ms=None):
        self.closed = True


class World:
    def __init__(self, answer=lambda first: True, end=30, committer=None, **group):
        self.fetcher = FakeFetcher(end)
        self.target = FakeTarget(answer)
        self.group = FakeGroup(self.target, **group)
        self.committer = committer or PassThrough()
        self.topics = FakeTopics()

    def assemble(self, flow) -> Parts:
        flow.topics_from(self.topics)
        self.group.join(flow)
        return Parts(self.fetcher, FakeShipper(), self.target, self.committer, self.group, [])


class FakeTopics:
    """The direction's controller: it publishes one topic, and counts the early syncs asked for."""

    def __init__(self):
        self.synced = Synced({"orders": "orders"}, {"orders": Layout(1, 1)}, {"orders": None})
        self.asked = 0

    def current(self):
        return self.synced

    def refresh_soon(self):
        self.asked += 1

    def sync(self):
        """A sync that finds the topic as it was."""
        self.synced = Synced(self.synced.routes, self.synced.layouts, self.synced.ids, time.time())


def stop_once_committed(offset: int):
    def on_poll(group):
        if group.commits and group.commits[-1].get(T) == offset:
            group.flow.stop()
    return on_poll


def run(world: World, config=None, timeout: float = 20.0) -> Flow:
    """Run a flow on the world's fakes until one of them stops it; raise what it raised."""
    flow = Flow(config or a_config(), "sourceToTarget", assemble=world.assemble)
    failure: list[BaseException] = []

    def target():
        try:
            flow.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        flow.stop()
        thread.join(10)
        pytest.fail(f"the flow was not stopped within {timeout:.0f}s")
    if failure:
        raise failure[0]
    return flow


# The commit rule ---------------------------------------------------------------------

def test_only_offsets_the_target_acknowledged_are_committed_never_past_a_write_in_flight():
    # The batch at 10 is held for five steps after the one behind it was acknowledged.
    steps_since_20 = [0]

    def answer(first):
        return None if first == 10 and steps_since_20[0] < 5 else True

    def on_poll(group):
        if 20 in world.target.acked:
            steps_since_20[0] += 1
        stop_once_committed(30)(group)

    world = World(answer, on_poll=on_poll)
    run(world)
    assert world.target.shipped == [0, 10, 20]
    assert world.group.unacknowledged_commits == []
    assert world.group.commits[-1] == {T: 30}
    assert {T: 20} not in world.group.commits


def test_on_the_way_out_what_was_acknowledged_is_committed():
    world = World()

    def on_poll(group):
        if world.target.acked == {0, 10, 20}:
            group.flow.stop()

    world.group.on_poll = on_poll
    run(world, a_config({"enableAutoCommit": True, "autoCommitIntervalMs": 600_000}))
    assert world.group.commits[-1] == {T: 30}
    assert world.group.closed


# The loop ----------------------------------------------------------------------------

def test_nothing_is_fetched_while_the_group_has_most_likely_dropped_the_member():
    world = World()
    world.group.evicted_until_poll = 10
    pumps_while_evicted = []

    def on_poll(group):
        if group.polls == group.evicted_until_poll:
            pumps_while_evicted.append(world.fetcher.pumps)
        stop_once_committed(30)(group)

    world.group.on_poll = on_poll
    run(world)
    assert pumps_while_evicted == [0]
    assert world.group.commits[-1] == {T: 30}


def test_fetching_waits_while_commits_are_overdue_and_goes_on_once_one_goes_through():
    started = time.monotonic()
    pumps: dict[str, int] = {}

    def refuse(group):
        if time.monotonic() - started < 1.5:
            return Refusal(Refused.FAILED, "the coordinator is out of reach")
        return None

    def on_poll(group):
        elapsed = time.monotonic() - started
        for moment in ("0.8", "1.4"):
            if elapsed >= float(moment) and moment not in pumps:
                pumps[moment] = world.fetcher.pumps
        if group.commits and group.commits[-1][T] >= 100:
            group.flow.stop()

    world = World(end=1000, committer=PassThrough(patience=0.3), on_poll=on_poll, refuse=refuse)
    run(world, a_config({"autoCommitIntervalMs": 100}))
    assert pumps["0.8"] == pumps["1.4"]  # overdue: nothing fetched
    assert world.group.commits[-1][T] >= 100  # fetching went on after the commit
    assert world.group.unacknowledged_commits == []


# The failure policy --------------------------------------------------------------------

def test_a_write_the_target_did_not_acknowledge_is_fetched_again_from_its_first_offset():
    failed = []

    def answer(first):
        if first == 10 and not failed:
            failed.append(first)
            return NotLeaderForPartitionError()
        return True

    world = World(answer, on_poll=stop_once_committed(30))
    flow = run(world)
    assert (T, 10) in world.fetcher.seeks
    assert world.target.shipped.count(10) == 2
    assert world.group.unacknowledged_commits == []
    assert flow.metrics.snapshot().errors == 1


def test_a_record_the_target_refuses_for_good_stops_its_partition_at_that_offset():
    def on_poll(group):
        if group.flow.health().stopped:
            group.flow.stop()

    world = World(lambda first: MessageSizeTooLargeError() if first == 10 else True, on_poll=on_poll)
    flow = run(world)
    assert world.target.shipped.count(10) == 2  # sent again to find the record, then stopped
    assert "orders[0]@10 rejected by the target" in flow.health().stopped["orders[0]"]
    assert T in world.fetcher.paused
    assert world.group.commits[-1] == {T: 10}
    assert world.group.unacknowledged_commits == []


def test_with_onError_skip_a_refused_record_is_skipped_and_the_commit_moves_past_it():
    refused = MessageSizeTooLargeError()
    world = World(lambda first: refused if first == 10 else True, on_poll=stop_once_committed(30))
    flow = run(world, a_config(onError="skip"))
    assert flow.health().stopped == {}
    assert flow.metrics.snapshot().error_skipped == {"orders": 1}
    assert world.group.commits[-1] == {T: 30}


def test_a_failure_met_while_partitions_are_revoked_stops_the_flow():
    refused = ClusterError("target", "127.0.0.1:2", "could not write the offset map topic")

    def on_poll(group):
        if group.polls == 3:  # a rebalance callback runs inside poll()
            assert group.flow.revoked([T]) == {}

    world = World(committer=PassThrough(flush_error=refused), on_poll=on_poll)
    with pytest.raises(ClusterError, match="could not write the offset map topic"):
        run(world)


# Topics come from the controller ------------------------------------------------------

def test_a_topic_the_source_says_is_unknown_waits_for_the_controllers_next_sync_then_goes_on():
    paused_polls = []

    def on_poll(group):
        if T in world.fetcher.paused:
            paused_polls.append(group.polls)
            if len(paused_polls) == 5:
                world.topics.sync()
        stop_once_committed(30)(group)

    world = World(on_poll=on_poll)
    world.fetcher.errors[10] = UnknownTopicOrPartitionError
    run(world)
    assert world.topics.asked == 1
    assert len(paused_polls) >= 5  # nothing fetched until the sync came
    assert world.target.shipped == [0, 10, 20]


def test_a_partition_out_of_the_source_logs_range_is_reset_only_once_a_sync_since_finds_its_topic():
    paused_polls = []
    seeks_after_a_stale_answer = []

    def on_poll(group):
        if T in world.fetcher.paused:
            paused_polls.append(group.polls)
            if len(paused_polls) == 3:  # an answer listed before the flow asked
                world.topics.synced = Synced(world.topics.synced.routes, world.topics.synced.layouts,
                                             world.topics.synced.ids, time.time() - 60)
            if len(paused_polls) == 10:
                seeks_after_a_stale_answer.extend(world.fetcher.seeks)
                world.topics.sync()
        stop_once_committed(30)(group)

    world = World(on_poll=on_poll)
    world.fetcher.errors[10] = OffsetOutOfRangeError
    run(world, a_config(group={"autoOffsetReset": "latest"}))
    assert world.topics.asked == 1
    assert seeks_after_a_stale_answer == []
    assert world.fetcher.seeks == [(T, 10)]  # latest: after what the target acknowledged
    assert world.target.shipped == [0, 10, 20]


# What the operator is told -----------------------------------------------------------

def test_commits_refused_during_a_rebalance_are_said_once_and_warned_about_only_if_it_lasts(
        clock, caplog):
    caplog.set_level("INFO", logger="replicator")
    flow = Flow(a_config(), "sourceToTarget")

    for _ in range(59):  # a refused commit a second, for just under a minute
        flow._commit_waits()
        clock.now += 1.0
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "group mirror is rebalancing" in caplog.text

    for _ in range(62):  # up to two minutes after the first refusal
        flow._commit_waits()
        clock.now += 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2  # after one minute, then after two
    assert "group mirror has been rebalancing for 60s" in warnings[0]
    assert "kafka-consumer-groups.sh --describe --members --group mirror" in warnings[0]
