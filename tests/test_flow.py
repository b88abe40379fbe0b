"""What a Flow tells the operator, decided without Kafka."""

from __future__ import annotations

import pytest

from replicator import flow as flow_module
from replicator.config import parse_config
from replicator.flow import Flow


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


def a_flow() -> Flow:
    return Flow(parse_config({
        "sourceKafka": {"bootstrapServers": "127.0.0.1:1"},
        "targetKafka": {"bootstrapServers": "127.0.0.1:2"},
        "consumerGroup": {"sourceToTarget": {"groupId": "mirror"}},
        "replication": {"sourceToTarget": {"topics": [{"sourceTopicName": "orders"}]}},
    }), "sourceToTarget")


def test_commits_refused_during_a_rebalance_are_said_once_and_warned_about_only_if_it_lasts(
        clock, caplog):
    caplog.set_level("INFO", logger="replicator")
    flow = a_flow()

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
