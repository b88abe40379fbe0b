"""SASL clusters: replication through them, and a wrong password that fails clearly."""

from __future__ import annotations

import logging

import pytest

from kafka_support import count, create_topic, produce, running, wait_until
from replicator.config import parse_config
from replicator.errors import ClusterError
from replicator.flow import Flow

pytestmark = pytest.mark.kafka


def sasl_cluster(endpoint, mechanism: str) -> dict:
    return {
        "bootstrapServers": endpoint.sasl.bootstrap_servers,
        "securityProtocol": "SASL_PLAINTEXT",
        "saslMechanism": mechanism,
        "saslUsername": endpoint.sasl.username,
        "saslPasswordEnv": "TEST_SASL_PASSWORD",
    }


def sasl_flow(sandbox, name, source_mechanism, target_mechanism) -> Flow:
    return Flow(parse_config({
        "sourceKafka": sasl_cluster(sandbox.info.source, source_mechanism),
        "targetKafka": sasl_cluster(sandbox.info.target, target_mechanism),
        "consumerGroup": {"sourceToTarget": name},
        "replication": {"sourceToTarget": {"topics": [{"sourceTopicName": name}]}},
    }), "sourceToTarget", None)


def test_replicates_between_sasl_clusters(sandbox, name, monkeypatch):
    monkeypatch.setenv("TEST_SASL_PASSWORD", sandbox.info.source.sasl.password())
    assert sandbox.info.source.sasl.password() == sandbox.info.target.sasl.password()
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(i % 2, f"k{i}".encode(), b"v", [], None) for i in range(50)])

    with running(sasl_flow(sandbox, name, "SCRAM-SHA-512", "PLAIN")):
        wait_until(lambda: count(sandbox.target, name) >= 50, what="50 records on the target")


def test_a_wrong_password_names_the_cluster_and_never_shows_the_password(sandbox, name, monkeypatch,
                                                                         caplog):
    wrong = "not-the-password-4711"
    monkeypatch.setenv("TEST_SASL_PASSWORD", wrong)
    create_topic(sandbox.source, name, partitions=1)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ClusterError) as caught:
        with running(sasl_flow(sandbox, name, "SCRAM-SHA-256", "SCRAM-SHA-256")):
            pass

    message = str(caught.value)
    assert message.startswith(f"source cluster ({sandbox.info.source.sasl.bootstrap_servers})")
    assert "SASL credentials (user 'replicator', SCRAM-SHA-256)" in message
    assert wrong not in message
    assert wrong not in caplog.text
