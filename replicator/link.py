"""Links to the two clusters: kafka-python clients built from a ClusterConfig.

Connection and authentication failures become ClusterError naming the side.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.errors import (
    AuthorizationError,
    KafkaConnectionError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
)

from . import wire
from .config import ClusterConfig, GroupConfig, ReplicatorConfig
from .errors import ClusterError, ConfigError

log = logging.getLogger(__name__)

ADMIN_BOOTSTRAP_TIMEOUT_MS = 10_000

ASSIGNORS = {
    "cooperative-sticky": CooperativeStickyAssignor,
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
}


class _Masked(str):
    """A secret string that kafka-python can use but never prints (it logs its configs)."""

    def __repr__(self) -> str:
        return "'**********'"

    __str__ = __repr__


def client_settings(cluster: ClusterConfig) -> dict:
    """kafka-python connection settings shared by consumers, producers and admin clients."""
    settings: dict = {
        "bootstrap_servers": [s.strip() for s in cluster.bootstrap_servers.split(",") if s.strip()],
        "security_protocol": cluster.security_protocol,
        "client_id": cluster.client_id,
    }
    if cluster.security_protocol.startswith("SASL"):
        settings["sasl_mechanism"] = cluster.sasl_mechanism
        settings["sasl_plain_username"] = cluster.sasl_username
        settings["sasl_plain_password"] = _Masked(cluster.resolved_sasl_password())
    if cluster.security_protocol.endswith("SSL"):
        key_password = cluster.resolved_ssl_key_password()
        settings.update(
            ssl_cafile=_path(cluster.ssl_ca_file),
            ssl_certfile=_path(cluster.ssl_cert_file),
            ssl_keyfile=_path(cluster.ssl_key_file),
            ssl_password=_Masked(key_password) if key_password else None,
            ssl_check_hostname=cluster.ssl_check_hostname,
        )
    return settings


def _path(value) -> str | None:
    return str(value) if value else None


@contextmanager
def reaching(side: str, cluster: ClusterConfig) -> Iterator[None]:
    """Turn kafka-python's connection and auth errors into a ClusterError for `side`."""
    try:
        yield
    except SaslAuthenticationFailedError:
        raise cluster_refused(side, cluster) from None
    except AuthorizationError as exc:
        raise _error(side, cluster, f"not authorized: {type(exc).__name__}; grant the "
                     "replicator's principal access to its topics and groups") from None
    except (KafkaConnectionError, KafkaTimeoutError) as exc:
        # kafka-python 3 reports a refused SASL login as a bootstrap timeout.
        credentials = (
            f", and the SASL credentials (user {cluster.sasl_username!r}, {cluster.sasl_mechanism})"
            if cluster.security_protocol.startswith("SASL") else ""
        )
        raise _error(
            side, cluster,
            f"no broker accepted the connection ({type(exc).__name__}); check bootstrapServers, "
            f"the network, securityProtocol ({cluster.security_protocol}){credentials}",
        ) from None


def cluster_refused(side: str, cluster: ClusterConfig) -> ClusterError:
    return _error(
        side, cluster,
        f"authentication failed for user {cluster.sasl_username!r} with {cluster.sasl_mechanism}; "
        "check saslUsername and the password (saslPassword or saslPasswordEnv)",
    )


def _error(side: str, cluster: ClusterConfig, reason: str) -> ClusterError:
    return ClusterError(side, cluster.bootstrap_servers, reason)


def admin_client(side: str, cluster: ClusterConfig) -> KafkaAdminClient:
    """An admin client; it is the first client a flow opens, so it fails fast and clearly."""
    with reaching(side, cluster):
        return KafkaAdminClient(**client_settings(cluster), request_timeout_ms=15000,
                                bootstrap_timeout_ms=ADMIN_BOOTSTRAP_TIMEOUT_MS)


def cluster_id(side: str, cluster: ClusterConfig) -> str:
    """The Kafka cluster id, which provenance headers name."""
    admin = admin_client(side, cluster)
    try:
        with reaching(side, cluster):
            return admin.describe_cluster()["cluster_id"]
    finally:
        admin.close()


def source_consumer(
    config: ReplicatorConfig, direction: str, member: str | None, listener=None
) -> KafkaConsumer:
    """A group member reading the direction's source topics, committed data only."""
    (side, cluster), _ = config.clusters(direction)
    group: GroupConfig = config.group(direction)
    with reaching(side, cluster):
        consumer = KafkaConsumer(
            **client_settings(cluster),
            group_id=group.group_id,
            group_instance_id=member,
            enable_auto_commit=False,
            auto_offset_reset=config.offset_reset(direction),
            isolation_level="read_committed",
            session_timeout_ms=group.session_timeout_ms,
            heartbeat_interval_ms=group.heartbeat_interval_ms,
            max_poll_records=group.max_poll_records,
            max_poll_interval_ms=group.max_poll_interval_ms,
            partition_assignment_strategy=(ASSIGNORS[group.partition_assignment_strategy],),
            fetch_max_bytes=config.consumer.fetch_max_bytes,
            max_partition_fetch_bytes=config.consumer.max_partition_fetch_bytes,
        )
    wire.complete_joins(consumer)
    return consumer


def check_clusters(config: ReplicatorConfig) -> list[str]:
    """Reach both clusters and find every enabled direction's source topics.

    Returns one line per finding; raises ClusterError for an unreachable cluster
    and ConfigError naming the source topics that do not exist.
    """
    lines = []
    topics_by_side: dict[str, set[str]] = {}
    for side, cluster in (("source", config.source_kafka), ("target", config.target_kafka)):
        admin = admin_client(side, cluster)
        try:
            with reaching(side, cluster):
                cluster_id = admin.describe_cluster()["cluster_id"]
                topics_by_side[side] = set(admin.list_topics())
        finally:
            admin.close()
        lines.append(f"{side} cluster {cluster.bootstrap_servers}: reachable, cluster id {cluster_id}")
    missing = []
    for direction in config.enabled_directions():
        (side, _), _ = config.clusters(direction)
        for route in config.direction(direction).topics:
            if route.source_topic_name not in topics_by_side[side]:
                missing.append(f"{direction}: {route.source_topic_name!r} on the {side} cluster")
    if missing:
        raise ConfigError("source topics not found: " + "; ".join(missing)
                          + " (create them, or fix sourceTopicName)")
    lines.append("all source topics exist")
    return lines
