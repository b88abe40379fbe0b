"""The two-cluster sandbox against real brokers: SASL, restarts, stale state, teardown.

One SASL sandbox in a private state dir serves the whole module; the tests run
in file order and the last one tears it down.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
import uuid
from typing import Any, Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from replicator.sandbox import ClusterEndpoint, Sandbox, SandboxInfo

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path_factory.mktemp("sandbox"))
    try:
        box.up(sasl=True)
        yield box
    finally:
        box.down()


@pytest.fixture()
def info(sandbox: Sandbox) -> SandboxInfo:
    current = sandbox.info()
    assert current is not None
    return current


def _sasl_config(cluster: ClusterEndpoint, mechanism: str, password: str) -> dict[str, Any]:
    assert cluster.sasl is not None
    return {
        "bootstrap_servers": cluster.sasl.bootstrap_servers,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": cluster.sasl.username,
        "sasl_plain_password": password,
    }


def _create_topic(bootstrap: str) -> str:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
    return topic


def _produce(topic: str, values: list[bytes], **config: Any) -> None:
    producer = KafkaProducer(acks="all", **config)
    try:
        for value in values:
            producer.send(topic, value).get(timeout=30)
    finally:
        producer.close()


def _consume(topic: str, count: int, **config: Any) -> list[bytes]:
    consumer = KafkaConsumer(enable_auto_commit=False, **config)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(record.value for record in records)
        return values
    finally:
        consumer.close()


def test_both_clusters_answer_on_plaintext(sandbox: Sandbox, info: SandboxInfo) -> None:
    for cluster in (info.source, info.target):
        with KafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers) as admin:
            assert admin.describe_cluster()["cluster_id"] == sandbox.cluster_id(cluster.name)
    assert sandbox.cluster_id("source") != sandbox.cluster_id("target")
    assert sandbox.status() == {
        name: {"running": True, "answering": True, "bootstrapServers": getattr(info, name).bootstrap_servers}
        for name in ("source", "target")
    }


def test_up_again_returns_the_running_sandbox(sandbox: Sandbox, info: SandboxInfo) -> None:
    started = time.monotonic()
    assert sandbox.up(sasl=True) == info
    assert time.monotonic() - started < 10


def test_endpoints_json_and_private_password_file(info: SandboxInfo) -> None:
    assert info.source.sasl is not None
    password_file = info.source.sasl.password_file
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert len(info.source.sasl.password()) >= 16
    assert info.as_json()["target"] == {
        "bootstrapServers": info.target.bootstrap_servers,
        "sasl": {
            "bootstrapServers": info.target.sasl.bootstrap_servers,
            "username": "replicator",
            "passwordFile": str(password_file),
        },
    }


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_sasl_client_produces_and_consumes(info: SandboxInfo, mechanism: str) -> None:
    assert info.source.sasl is not None
    topic = _create_topic(info.source.bootstrap_servers)
    config = _sasl_config(info.source, mechanism, info.source.sasl.password())
    _produce(topic, [b"one", b"two"], **config)
    assert _consume(topic, 2, **config) == [b"one", b"two"]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_wrong_password_is_rejected(sandbox: Sandbox, info: SandboxInfo, mechanism: str) -> None:
    broker_log = sandbox.state_dir / "target" / "broker.log"
    seen = broker_log.stat().st_size

    # kafka-python retries a rejected handshake until its bootstrap times out, and
    # often reads the broker's hang-up before the error reply: the broker's own
    # log is where the authentication verdict reliably shows.
    with pytest.raises(KafkaError):
        KafkaAdminClient(bootstrap_timeout_ms=3000, **_sasl_config(info.target, mechanism, "wrong-password"))

    with broker_log.open() as handle:
        handle.seek(seen)
        assert "Failed authentication with /127.0.0.1" in handle.read()


def test_broker_restart_keeps_topic_data(sandbox: Sandbox, info: SandboxInfo) -> None:
    bootstrap = info.target.bootstrap_servers
    topic = _create_topic(bootstrap)
    _produce(topic, [b"before-restart"], bootstrap_servers=bootstrap)

    sandbox.stop_broker("target")
    status = sandbox.status()
    assert status["target"]["running"] is False
    assert status["target"]["answering"] is False
    assert status["source"]["running"] is True

    sandbox.start_broker("target")
    assert sandbox.status()["target"] == {"running": True, "answering": True, "bootstrapServers": bootstrap}
    assert _consume(topic, 1, bootstrap_servers=bootstrap) == [b"before-restart"]


def test_up_replaces_a_sandbox_with_a_dead_broker(sandbox: Sandbox) -> None:
    state = json.loads((sandbox.state_dir / "sandbox.json").read_text())
    os.killpg(state["clusters"]["source"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while sandbox.status()["source"]["running"]:  # SIGKILL takes effect asynchronously
        assert time.monotonic() < deadline
        time.sleep(0.1)

    fresh = sandbox.up(sasl=True)

    assert all(entry["answering"] for entry in sandbox.status().values())
    with KafkaAdminClient(bootstrap_servers=fresh.source.bootstrap_servers) as admin:
        assert admin.describe_cluster()["cluster_id"] == sandbox.cluster_id("source")


def test_down_stops_brokers_and_removes_data(sandbox: Sandbox) -> None:
    state = json.loads((sandbox.state_dir / "sandbox.json").read_text())
    pids = [cluster["pid"] for cluster in state["clusters"].values()]

    sandbox.down()

    assert sandbox.info() is None
    assert not any(entry["running"] for entry in sandbox.status().values())
    assert not (sandbox.state_dir / "sandbox.json").exists()
    for name in ("source", "target"):
        assert not (sandbox.state_dir / name).exists()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")
