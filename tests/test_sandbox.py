"""The two-cluster sandbox against real brokers: SASL, TLS, restarts, stale state, teardown.

One sandbox in a private state dir serves the whole module: started with SASL, then
recreated with TLS too; the tests run in file order and the last one tears it down.
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

from cluster.cli import main
from workbench import certificates
from workbench.sandbox import ClusterEndpoint, Sandbox, SandboxInfo

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


def _tls_config(cluster: ClusterEndpoint, listener: str) -> dict[str, Any]:
    """kafka-python's own settings (not the replicator's) for one of the TLS listeners."""
    assert cluster.tls is not None and cluster.sasl is not None
    tls = cluster.tls
    config: dict[str, Any] = {"security_protocol": "SSL", "ssl_cafile": str(tls.ca_file)}
    if listener == "SSL":
        config["bootstrap_servers"] = tls.ssl_bootstrap_servers
    elif listener == "SASL_SSL":
        config.update(_sasl_config(cluster, "SCRAM-SHA-256", cluster.sasl.password()),
                      bootstrap_servers=tls.sasl_ssl_bootstrap_servers, security_protocol="SASL_SSL")
    else:
        config.update(bootstrap_servers=tls.mtls_bootstrap_servers, ssl_certfile=str(tls.cert_file),
                      ssl_keyfile=str(tls.key_file))
    return config


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
        name: {"running": True, "answering": True, **info.as_json()[name]} for name in ("source", "target")
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


def test_up_with_tls_recreates_a_sandbox_started_without_it(sandbox: Sandbox, info: SandboxInfo) -> None:
    assert info.source.tls is None
    without_tls = sandbox.cluster_id("source")

    with_tls = sandbox.up(tls=True)

    assert with_tls.source.tls is not None and with_tls.target.tls is not None
    assert sandbox.cluster_id("source") != without_tls
    assert sandbox.up(sasl=True) == with_tls  # and it serves callers that do not ask for TLS


def test_tls_files_are_listed_in_status_and_keys_are_private(sandbox: Sandbox, info: SandboxInfo) -> None:
    assert info.source.tls is not None
    tls = info.source.tls
    assert sandbox.status()["source"]["tls"] == {
        "sslBootstrapServers": tls.ssl_bootstrap_servers,
        "saslSslBootstrapServers": tls.sasl_ssl_bootstrap_servers,
        "mtlsBootstrapServers": tls.mtls_bootstrap_servers,
        "sslCaFile": str(tls.ca_file),
        "sslCertFile": str(tls.cert_file),
        "sslKeyFile": str(tls.key_file),
    }
    assert tls.ca_file.parent == sandbox.state_dir / "tls"
    assert stat.S_IMODE(tls.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((sandbox.state_dir / "tls" / "ca.key").stat().st_mode) == 0o600
    client = certificates.load(tls.cert_file, tls.key_file).certificate
    assert client.issuer == sandbox.authority().certificate.subject


def test_sandbox_command_prints_the_tls_listeners_and_files(sandbox: Sandbox, info: SandboxInfo,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    state_dir = str(sandbox.state_dir)

    assert main(["sandbox", "up", "--tls", "--json", "--state-dir", state_dir]) == 0
    assert json.loads(capsys.readouterr().out) == info.as_json()
    assert main(["sandbox", "status", "--json", "--state-dir", state_dir]) == 0
    assert json.loads(capsys.readouterr().out)["target"]["tls"] == info.as_json()["target"]["tls"]


@pytest.mark.parametrize("listener", ["SSL", "SASL_SSL", "MTLS"])
def test_tls_client_produces_and_consumes(info: SandboxInfo, listener: str) -> None:
    topic = _create_topic(info.source.bootstrap_servers)
    config = _tls_config(info.source, listener)
    _produce(topic, [b"one", b"two"], **config)
    assert _consume(topic, 2, **config) == [b"one", b"two"]


def test_mtls_listener_refuses_a_client_without_a_certificate(sandbox: Sandbox, info: SandboxInfo) -> None:
    broker_log = sandbox.state_dir / "target" / "broker.log"
    seen = broker_log.stat().st_size
    config = _tls_config(info.target, "MTLS")
    del config["ssl_certfile"], config["ssl_keyfile"]

    with pytest.raises(KafkaError):
        KafkaAdminClient(bootstrap_timeout_ms=3000, **config)

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
    assert sandbox.status()["target"] == {"running": True, "answering": True, **info.as_json()["target"]}
    assert _consume(topic, 1, bootstrap_servers=bootstrap) == [b"before-restart"]


def test_restarted_broker_serves_tls_with_the_same_certificates(sandbox: Sandbox, info: SandboxInfo) -> None:
    ca_before = (sandbox.state_dir / "tls" / "ca.crt").read_bytes()
    topic = _create_topic(info.source.bootstrap_servers)

    sandbox.stop_broker("source")
    sandbox.start_broker("source")

    assert sandbox.info() == info
    assert (sandbox.state_dir / "tls" / "ca.crt").read_bytes() == ca_before
    config = _tls_config(info.source, "MTLS")
    _produce(topic, [b"after-restart"], **config)
    assert _consume(topic, 1, **config) == [b"after-restart"]


def test_up_replaces_a_sandbox_with_a_dead_broker(sandbox: Sandbox) -> None:
    state = json.loads((sandbox.state_dir / "sandbox.json").read_text())
    os.killpg(state["clusters"]["source"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while sandbox.status()["source"]["running"]:  # SIGKILL takes effect asynchronously
        assert time.monotonic() < deadline
        time.sleep(0.1)

    fresh = sandbox.up(tls=True)

    assert all(entry["answering"] for entry in sandbox.status().values())
    with KafkaAdminClient(bootstrap_servers=fresh.source.bootstrap_servers) as admin:
        assert admin.describe_cluster()["cluster_id"] == sandbox.cluster_id("source")
    assert fresh.source.tls is not None
    with KafkaAdminClient(**_tls_config(fresh.source, "SSL")) as admin:
        assert admin.describe_cluster()["cluster_id"] == sandbox.cluster_id("source")


def test_down_stops_brokers_and_removes_data(sandbox: Sandbox) -> None:
    state = json.loads((sandbox.state_dir / "sandbox.json").read_text())
    pids = [cluster["pid"] for cluster in state["clusters"].values()]

    sandbox.down()

    assert sandbox.info() is None
    assert not any(entry["running"] for entry in sandbox.status().values())
    assert not (sandbox.state_dir / "sandbox.json").exists()
    for name in ("source", "target", "tls"):
        assert not (sandbox.state_dir / name).exists()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")
