"""Crashes and broker restarts lose nothing; the duplicates they cause are bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.heartbeat import Heartbeat
from kafka.errors import KafkaConnectionError

from kafka_support import committed, count, create_topic, flow_for, produce, read_all, running, wait_until

pytestmark = pytest.mark.kafka

PARTITIONS = 3


class Traffic:
    """Produces `total` keyed records to the source at a bounded rate, in a thread."""

    def __init__(self, bootstrap: str, topic: str, total: int, per_second: int):
        self.total = total
        self._thread = threading.Thread(
            target=self._run, args=(bootstrap, topic, per_second), daemon=True)

    def _run(self, bootstrap, topic, per_second):
        chunk = max(1, per_second // 10)
        for start in range(0, self.total, chunk):
            produce(bootstrap, topic, [
                (i % PARTITIONS, f"k{i:07d}".encode(), f"v{i}".encode(), [], None)
                for i in range(start, min(start + chunk, self.total))
            ])
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._thread.join(timeout=120)


def keys_by_partition(bootstrap: str, topic: str) -> dict[int, list[bytes]]:
    return {p: [r.key for r in records] for p, records in read_all(bootstrap, topic).items()}


def replay_window(source: list[bytes], target: list[bytes]) -> int:
    """The number of replayed records, given the target must be source[:x] + source[x-d:].

    Anything else means a record was lost or reordered.
    """
    extra = len(target) - len(source)
    assert extra >= 0, f"{-extra} records are missing on the target"
    prefix = next((i for i, (s, t) in enumerate(zip(source, target)) if s != t), len(source))
    suffix = next((i for i, (s, t) in enumerate(zip(reversed(source), reversed(target))) if s != t),
                  len(source))
    # The first run ends at some x with extra <= x <= prefix; the rest of the target,
    # len(target) - x records, must be the source's tail.
    assert max(extra, len(target) - suffix) <= prefix, \
        "the target is not the source plus one replayed window: records lost or reordered"
    return extra


def write_config(path, sandbox, topic, group, mode) -> str:
    path.write_text(yaml.safe_dump(sandbox.config(
        consumerGroup={"sourceToTarget": {"groupId": group, "autoCommitIntervalMs": 1000}},
        replication={"sourceToTarget": {"topics": [{"sourceTopicName": topic}], "mode": mode}},
    )))
    return str(path)


def start_replicator(config_path: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "replicate", "--config", config_path,
         "--direction", "sourceToTarget", "--member", "sourceToTarget-0"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("mode", ["batch", "record"])
def test_a_replicator_killed_mid_stream_and_restarted_loses_nothing(sandbox, name, tmp_path, mode):
    """SIGKILL leaves records on the target that the group has not committed yet.

    The restarted member replays from the last commit, so the duplicates are exactly
    those records, per partition one contiguous window: at most (target count at the
    kill) - (committed offsets at the kill).
    """
    create_topic(sandbox.source, name, partitions=PARTITIONS)
    config = write_config(tmp_path / "config.yaml", sandbox, name, name, mode)
    total = 15_000
    with Traffic(sandbox.source, name, total, per_second=3000):
        replicator = start_replicator(config)
        wait_until(lambda: count(sandbox.target, name) >= 4000, what="replication to be under way")
        replicator.send_signal(signal.SIGKILL)
        replicator.wait(timeout=30)
        time.sleep(1)  # requests already on the wire still land
        on_target_at_kill = count(sandbox.target, name)
        committed_at_kill = sum(committed(sandbox.source, name).values())
        replicator = start_replicator(config)
        try:
            wait_until(lambda: count(sandbox.target, name) >= total, timeout=120,
                       what="every record on the target")
            wait_until(lambda: sum(committed(sandbox.source, name).values()) == total,
                       what="the group to commit everything")
        finally:
            replicator.send_signal(signal.SIGTERM)
            assert replicator.wait(timeout=60) == 0

    source, target = keys_by_partition(sandbox.source, name), keys_by_partition(sandbox.target, name)
    duplicates = sum(replay_window(source[p], target.get(p, [])) for p in source)
    bound = on_target_at_kill - committed_at_kill
    print(f"\nkilled at {on_target_at_kill} records on the target, {committed_at_kill} committed; "
          f"duplicates after restart: {duplicates} (bound {bound})")
    assert 0 <= duplicates <= bound


# Batch mode only: record mode differs in how shipments are built, not in how they are
# fetched and written, which is what a broker restart tests (its kill test is above).
@pytest.mark.parametrize("mode", ["batch"])
@pytest.mark.parametrize("cluster", ["target", "source"])
def test_a_broker_restart_during_replication_loses_nothing_and_duplicates_nothing(sandbox, name,
                                                                                   cluster, mode):
    create_topic(sandbox.source, name, partitions=PARTITIONS)
    flow = flow_for(sandbox, consumerGroup={"sourceToTarget": name},
                    replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}],
                                                    "mode": mode}})
    total = 6000
    with running(flow):
        produce(sandbox.source, name, [(i % PARTITIONS, f"k{i:07d}".encode(), b"v", [], None)
                                       for i in range(total // 2)])
        wait_until(lambda: count(sandbox.target, name) >= 1000, what="replication to be under way")
        sandbox.sandbox.stop_broker(cluster)
        time.sleep(3)
        sandbox.sandbox.start_broker(cluster)
        produce(sandbox.source, name, [(i % PARTITIONS, f"k{i:07d}".encode(), b"v", [], None)
                                       for i in range(total // 2, total)])
        wait_until(lambda: count(sandbox.target, name) >= total, timeout=180,
                   what="every record on the target after the restart")
        wait_until(lambda: sum(committed(sandbox.source, name).values()) == total, timeout=60,
                   what="the group to commit everything")

    source, target = keys_by_partition(sandbox.source, name), keys_by_partition(sandbox.target, name)
    duplicates = 0
    for partition, keys in source.items():
        arrived = target[partition]
        first_seen = list(dict.fromkeys(arrived))
        assert first_seen == keys, f"partition {partition}: records lost or out of order"
        duplicates += len(arrived) - len(keys)
    print(f"\n{cluster} broker restarted: {total} records, {duplicates} duplicates")
    # Batches lost with a connection are sent again with their sequence numbers: the target
    # broker writes each once, and the member's own positions never move back.
    assert duplicates == 0
    assert TopicPartition(name, 0) in committed(sandbox.source, name)


def test_a_topic_sync_while_the_target_is_down_is_tried_again_and_the_copy_goes_on(
        sandbox, name, monkeypatch):
    create_topic(sandbox.source, name, partitions=PARTITIONS)
    flow = flow_for(sandbox, consumerGroup={"sourceToTarget": name}, replication={"sourceToTarget": {
        "topics": [{"sourceTopicName": name}], "topicRefreshSeconds": 0.5}})  # a sync falls in the outage
    with running(flow):
        wait_until(lambda: flow.health().assigned, what="the partition assignment")
        sandbox.sandbox.stop_broker("target")
        time.sleep(3)
        sandbox.sandbox.start_broker("target")
        produce(sandbox.source, name, [(i % PARTITIONS, b"k", b"v", [], None) for i in range(300)])
        wait_until(lambda: count(sandbox.target, name) >= 300, timeout=120,
                   what="the records on the target after the outage")
        assert flow.health().state == "running"


def test_a_member_whose_session_expired_fetches_and_writes_nothing_until_a_heartbeat_is_answered(
        sandbox, name, monkeypatch):
    # What a member paused past its session (SIGSTOP) sees when it runs again: its partitions
    # are most likely someone else's, and whatever it copied now would be copied twice.
    # kafka-python then finds the coordinator again, which restarts its session clock, and
    # only its next heartbeat learns that the group dropped it: a paused member that fetched
    # in that second wrote everything produced during its pause a second time.
    create_topic(sandbox.source, name, partitions=PARTITIONS)
    flow = flow_for(sandbox, consumerGroup={"sourceToTarget": name},
                    replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})
    with running(flow):
        wait_until(lambda: flow.health().assigned, what="the partition assignment")
        # The flow's group consumer is the only one in this process with a heartbeat.
        monkeypatch.setattr(Heartbeat, "received_heartbeat", lambda self: None)  # no answer arrives
        monkeypatch.setattr(Heartbeat, "session_timeout_expired", lambda self: True)
        time.sleep(0.5)  # a fetch already on the wire is dropped when it comes back
        monkeypatch.setattr(Heartbeat, "session_timeout_expired", lambda self: False)  # coordinator found
        produce(sandbox.source, name, [(i % PARTITIONS, b"k", b"v", [], None) for i in range(300)])
        time.sleep(3)
        assert count(sandbox.target, name) == 0

        monkeypatch.undo()
        wait_until(lambda: count(sandbox.target, name) >= 300, what="the records once a heartbeat is answered")


def test_a_member_stopped_for_good_hands_its_partitions_over_at_once(sandbox, name):
    """Members are static (group.instance.id): one stopped by a scale-down must still leave
    the group, or its partitions wait out its session (or longer) for a new owner."""
    create_topic(sandbox.source, name, partitions=4)
    group = {"sourceToTarget": {"groupId": name, "sessionTimeoutMs": 45000, "heartbeatIntervalMs": 1000}}
    route = {"sourceToTarget": {"topics": [{"sourceTopicName": name}]}}
    staying = flow_for(sandbox, member="sourceToTarget-0", consumerGroup=group, replication=route)
    leaving = flow_for(sandbox, member="sourceToTarget-1", consumerGroup=group, replication=route)
    with running(staying):
        with running(leaving):
            wait_until(lambda: staying.health().assigned and leaving.health().assigned, 60,
                       what="both members to own partitions")
            leaving.stop(leave_group=True)
        stopped = time.monotonic()
        wait_until(lambda: len(staying.health().assigned) == 4, 20,
                   what="the staying member to own every partition well within the 45 s session")
    print(f"\npartitions handed over {time.monotonic() - stopped:.1f}s after the stop")


def test_a_group_that_left_a_partition_without_an_owner_gives_it_out_when_its_members_rejoin(
        sandbox, name, monkeypatch):
    """The soak's stuck rebalance: a cooperative rebalance whose second half never comes (the
    member that owed it was killed and restarted under its group.instance.id) leaves partitions
    without an owner in a Stable group. The driver then has the members join again."""
    create_topic(sandbox.source, name, partitions=4)
    produce(sandbox.source, name, [(p, b"k", b"v", [], None) for p in range(4) for _ in range(10)])
    assign = CooperativeStickyAssignor.assign

    def without_partition_3(self, cluster, members):
        assignment = assign(self, cluster, members)
        for member in assignment.values():
            member.assigned_partitions = [(topic, [p for p in parts if p != 3])
                                          for topic, parts in member.assigned_partitions]
        return assignment

    monkeypatch.setattr(CooperativeStickyAssignor, "assign", without_partition_3)
    flow = flow_for(sandbox, consumerGroup={"sourceToTarget": name},
                    replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})
    with running(flow):
        wait_until(lambda: count(sandbox.target, name) == 30, what="the three owned partitions copied")
        time.sleep(2)
        assert len(flow.health().assigned) == 3 and count(sandbox.target, name) == 30

        monkeypatch.undo()
        flow.rejoin()
        wait_until(lambda: count(sandbox.target, name) == 40, 30, what="partition 3 given out and copied")
        assert len(flow.health().assigned) == 4


def test_a_member_whose_commits_fail_stops_fetching_until_one_goes_through(sandbox, name, monkeypatch):
    """The 30-minute soak: commits refused for a minute while copying went on, then the member
    lost its membership, and the next owner copied that whole minute again."""
    create_topic(sandbox.source, name, partitions=1)
    flow = flow_for(sandbox, consumerGroup={"sourceToTarget": {
                        "groupId": name, "autoCommitIntervalMs": 200, "sessionTimeoutMs": 6000}},
                    replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})
    patience = 6.0  # max(5 commit intervals, the session)
    batch = [(0, b"k", b"v", [], None)] * 100
    with running(flow):
        produce(sandbox.source, name, batch)
        wait_until(lambda: count(sandbox.target, name) == 100, what="the first records")

        def unreachable(consumer, offsets=None, timeout_ms=None):
            raise KafkaConnectionError("the group coordinator is out of reach")

        # The flow's group consumer is the only one in this process that commits.
        monkeypatch.setattr(KafkaConsumer, "commit", unreachable)
        produce(sandbox.source, name, batch)
        wait_until(lambda: count(sandbox.target, name) == 200, what="records copied while commits fail")
        time.sleep(patience + 1)
        produce(sandbox.source, name, batch)
        time.sleep(3)
        assert count(sandbox.target, name) == 200

        monkeypatch.undo()
        wait_until(lambda: count(sandbox.target, name) == 300, what="the copy once a commit goes through")
