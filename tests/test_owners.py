"""The driver's check that every replicated partition has an owner (cluster.owners). No Kafka
needed: the rows are what replicator.offsets.describe_groups returns."""

import logging

from cluster.owners import OwnerWatch
from replicator.config import parse_config
from replicator.offsets import PartitionStatus

CONFIG = parse_config({
    "sourceKafka": {"bootstrapServers": "kafka:9092"},
    "targetKafka": {"bootstrapServers": "kafka-warehouse:9092"},
    "consumerGroup": {"sourceToTarget": {"groupId": "mirror", "sessionTimeoutMs": 10000}},
    "replication": {"sourceToTarget": {"topics": [{"sourceTopicName": "orders"}]}},
})


def rows(*owners):
    return [PartitionStatus("sourceToTarget", "mirror", "orders", p, 0, 10, 10, owner)
            for p, owner in enumerate(owners)]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_partitions_unowned_for_longer_than_two_sessions_are_named_once(caplog):
    clock = Clock()
    watch = OwnerWatch(CONFIG, clock)
    with caplog.at_level(logging.INFO, logger="cluster.owners"):
        watch.check(rows("sourceToTarget-0", None, None), {"sourceToTarget": 2})
        clock.now = 20.0  # two sessions: a rebalance may still be under way
        watch.check(rows("sourceToTarget-0", None, None), {"sourceToTarget": 2})
        assert caplog.text == ""
        clock.now = 31.0
        watch.check(rows("sourceToTarget-0", None, None), {"sourceToTarget": 2})
        clock.now = 61.0
        watch.check(rows("sourceToTarget-0", None, None), {"sourceToTarget": 2})

    assert caplog.text.count("WARNING") == 1
    assert ("sourceToTarget: partitions without an owner in group mirror for 31s although 2 "
            "members run: orders[1], orders[2]") in caplog.text


def test_owners_again_are_logged_and_a_new_episode_starts_afresh(caplog):
    clock = Clock()
    watch = OwnerWatch(CONFIG, clock)
    watch.check(rows(None), {"sourceToTarget": 1})
    clock.now = 31.0
    watch.check(rows(None), {"sourceToTarget": 1})
    caplog.clear()  # the warning of the first episode
    with caplog.at_level(logging.INFO, logger="cluster.owners"):
        watch.check(rows("sourceToTarget-0"), {"sourceToTarget": 1})
        clock.now = 40.0
        watch.check(rows(None), {"sourceToTarget": 1})

    assert "sourceToTarget: every partition has an owner again" in caplog.text
    assert "WARNING" not in caplog.text


def test_a_direction_without_running_members_is_not_reported(caplog):
    clock = Clock()
    watch = OwnerWatch(CONFIG, clock)
    with caplog.at_level(logging.INFO, logger="cluster.owners"):
        watch.check(rows(None), {"sourceToTarget": 0})
        clock.now = 100.0
        watch.check(rows(None), {})

    assert caplog.text == ""


def test_a_direction_unowned_for_longer_than_two_sessions_is_to_rebalance_at_every_check():
    clock = Clock()
    watch = OwnerWatch(CONFIG, clock)
    unowned = rows("sourceToTarget-0", None)
    assert watch.check(unowned, {"sourceToTarget": 2}) == []
    clock.now = 20.0  # a rebalance may still be under way
    assert watch.check(unowned, {"sourceToTarget": 2}) == []
    clock.now = 31.0
    assert watch.check(unowned, {"sourceToTarget": 2}) == ["sourceToTarget"]
    clock.now = 61.0  # the rejoin did not help (yet): again
    assert watch.check(unowned, {"sourceToTarget": 2}) == ["sourceToTarget"]
    assert watch.check(rows("sourceToTarget-0", "sourceToTarget-1"), {"sourceToTarget": 2}) == []
