"""The replicator's own topics (replicator/own_topics.py) on the real sandbox: created when
missing, with a leader before they are used; a slow one named as slow, not as unreachable."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaTimeoutError

from replicator import link, own_topics
from replicator.config import parse_config
from replicator.errors import ClusterError

pytestmark = pytest.mark.kafka


@pytest.fixture
def admin(sandbox):
    client = KafkaAdminClient(bootstrap_servers=sandbox.target)
    yield client
    client.close()


def test_a_missing_own_topic_is_created_and_has_a_leader_when_ensure_returns(admin, name):
    own_topics.ensure(admin, name, {"cleanup.policy": "compact"}, "the test's topic")
    (described,) = admin.describe_topics([name])
    assert [p["leader_id"] >= 0 for p in described["partitions"]] == [True], described


class ControllerNeverReady:
    """The real admin client, but its topics never get a leader (kafka-python's own timeout)."""

    def __init__(self, admin: KafkaAdminClient):
        self._admin = admin

    def __getattr__(self, attribute):
        return getattr(self._admin, attribute)

    def wait_for_topics(self, topic_names, timeout_ms=10000):
        raise KafkaTimeoutError(f"Topics not ready after {timeout_ms}ms: {dict.fromkeys(topic_names, 'no leader')}")


def test_an_own_topic_without_a_leader_is_reported_as_slow_not_as_unreachable(sandbox, admin, name):
    config = sandbox.config(replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})
    target = parse_config(config).target_kafka
    with pytest.raises(ClusterError) as raised, link.reaching("target", target):
        own_topics.ensure(ControllerNeverReady(admin), name, {}, "the offset map topic")
    message = str(raised.value)
    assert message.startswith(f"target cluster ({sandbox.target}): the offset map topic {name!r} has no leader")
    assert "controller is slow" in message
    assert "no broker accepted the connection" not in message
