"""ACL sync: the source's ACLs on replicated topics and synced groups, faithfully on the target.

The sandbox's brokers run KRaft's StandardAuthorizer (it comes with their SASL listener), with
User:ANONYMOUS, the PLAINTEXT listener's principal, a super user. Every ACL a test makes names
its own principals and resources, so that it leaves the other tests' topics as open as before.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import pytest
from kafka import KafkaAdminClient
from kafka.admin import (
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePatternFilter,
    ResourceType,
)

from replicator import link
from workbench.sandbox import Sandbox
from replicator.acl_sync import AclFigures, AclSync
from replicator.acls import Binding
from replicator.config import parse_config
from replicator.errors import AclSyncRefused

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def without_authorizer(tmp_path_factory):
    """Clusters of their own, started without SASL and so without an authorizer."""
    sandbox = Sandbox(tmp_path_factory.mktemp("no-authorizer"))
    try:
        yield sandbox.up()
    finally:
        sandbox.down()


def binding(principal, operation, name, resource="TOPIC", pattern="LITERAL", permission="ALLOW",
            host="*") -> Binding:
    return Binding(resource, name, pattern, principal, host, operation, permission)


@contextmanager
def admin_of(bootstrap: str):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        yield admin
    finally:
        admin.close()


def add(bootstrap: str, *bindings: Binding) -> None:
    with admin_of(bootstrap) as admin:
        answer = admin.create_acls([b.acl() for b in bindings])
    assert not answer["failed"], answer


def remove(bootstrap: str, *bindings: Binding) -> None:
    with admin_of(bootstrap) as admin:
        admin.delete_acls([b.exact_filter() for b in bindings])


def acls_of(bootstrap: str, principal_prefix: str) -> set[Binding]:
    """The cluster's ACLs whose principal starts with `principal_prefix`."""
    with admin_of(bootstrap) as admin:
        found, _ = admin.describe_acls(ACLFilter(
            None, None, ACLOperation.ANY, ACLPermissionType.ANY,
            ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)))
    return {b for b in map(Binding.of, found) if b.principal.startswith(principal_prefix)}


def config_of(sandbox, name, direction="sourceToTarget", target_kafka=None, **settings):
    overrides = {"targetKafka": target_kafka} if target_kafka else {}
    return parse_config(sandbox.config(
        consumerGroup={direction: f"{name}-{direction}"},
        replication={direction: {"topics": [{"sourceTopicName": name}], "syncAcls": {"enabled": True},
                                 **settings}},
        **overrides))


@contextmanager
def acl_sync(config, direction="sourceToTarget"):
    (source_side, source), (target_side, target) = config.clusters(direction)
    source_admin = link.admin_client(source_side, source)
    target_admin = link.admin_client(target_side, target)
    sync = AclSync(source_admin, target_admin, config, direction)
    try:
        yield sync
    finally:
        sync.close()
        source_admin.close()
        target_admin.close()


def test_a_literal_topic_acl_is_copied_onto_the_target_topic_under_its_routed_name(sandbox, name, caplog):
    alice = f"User:{name}-alice"
    add(sandbox.source, binding(alice, "READ", name))

    with caplog.at_level(logging.INFO, "replicator.acl_sync"), acl_sync(config_of(sandbox, name)) as sync:
        figures = sync.sync({name: f"{name}.copy"}, [])

    assert acls_of(sandbox.target, alice) == {binding(alice, "READ", f"{name}.copy")}
    assert figures == AclFigures(created=1, removed=0, kept=0)
    assert (f"created ALLOW {alice} READ on topic '{name}.copy' from host * on the target cluster, "
            f"for the source cluster's ALLOW {alice} READ on topic '{name}' from host *") in caplog.text


def test_every_operation_permission_and_host_is_copied_as_it_is(sandbox, name):
    """Unlike MirrorMaker 2, which turns ALLOW ALL into READ and drops WRITE."""
    alice, bob = f"User:{name}-alice", f"User:{name}-bob"
    source = {binding(alice, "ALL", name), binding(alice, "WRITE", name, host="10.0.0.7"),
              binding(bob, "DESCRIBE_CONFIGS", name), binding(bob, "WRITE", name, permission="DENY")}
    add(sandbox.source, *source)

    with acl_sync(config_of(sandbox, name)) as sync:
        sync.sync({name: f"{name}.copy"}, [])

    assert acls_of(sandbox.target, f"User:{name}-") == {b.on(f"{name}.copy") for b in source}


def test_a_prefixed_allow_becomes_literal_acls_on_the_copies_it_covers_only(sandbox, name):
    alice = f"User:{name}-alice"
    add(sandbox.source, binding(alice, "WRITE", f"{name}-orders", pattern="PREFIXED"))
    config = config_of(sandbox, name, include=[f"{name}-.*"], targetTopicPrefix="dc1.")
    routes = {f"{name}-orders-eu": f"dc1.{name}-orders-eu", f"{name}-orders-us": f"dc1.{name}-orders-us",
              f"{name}-payments": f"dc1.{name}-payments"}

    with acl_sync(config) as sync:
        sync.sync(routes, [])

    # Nothing PREFIXED: dc1.<name>-orders-local, made on the target, is no copy and gets nothing.
    assert acls_of(sandbox.target, alice) == {binding(alice, "WRITE", f"dc1.{name}-orders-eu"),
                                              binding(alice, "WRITE", f"dc1.{name}-orders-us")}


def test_a_new_topic_under_a_prefixed_allow_gets_its_acl_at_the_next_pass(sandbox, name):
    alice = f"User:{name}-alice"
    add(sandbox.source, binding(alice, "READ", f"{name}-orders", pattern="PREFIXED"))
    config = config_of(sandbox, name, include=[f"{name}-.*"], targetTopicPrefix="dc1.")

    with acl_sync(config) as sync:
        sync.sync({f"{name}-orders-eu": f"dc1.{name}-orders-eu"}, [])
        figures = sync.sync({f"{name}-orders-eu": f"dc1.{name}-orders-eu",
                             f"{name}-orders-us": f"dc1.{name}-orders-us"}, [])

    assert figures == AclFigures(created=1, removed=0, kept=1)
    assert binding(alice, "READ", f"dc1.{name}-orders-us") in acls_of(sandbox.target, alice)


def test_a_prefixed_deny_is_copied_as_a_prefixed_deny_under_the_target_prefix(sandbox, name):
    mallory = f"User:{name}-mallory"
    add(sandbox.source, binding(mallory, "READ", f"{name}-orders", pattern="PREFIXED", permission="DENY"))
    config = config_of(sandbox, name, include=[f"{name}-.*"], targetTopicPrefix="dc1.")

    with acl_sync(config) as sync:
        sync.sync({f"{name}-orders-eu": f"dc1.{name}-orders-eu"}, [])

    assert acls_of(sandbox.target, mallory) == {
        binding(mallory, "READ", f"dc1.{name}-orders", pattern="PREFIXED", permission="DENY")}


def test_an_acl_removed_at_the_source_is_removed_from_the_target(sandbox, name, caplog):
    alice = f"User:{name}-alice"
    read, write = binding(alice, "READ", name), binding(alice, "WRITE", name)
    add(sandbox.source, read, write)

    with caplog.at_level(logging.INFO, "replicator.acl_sync"), acl_sync(config_of(sandbox, name)) as sync:
        sync.sync({name: f"{name}.copy"}, [])
        remove(sandbox.source, write)
        figures = sync.sync({name: f"{name}.copy"}, [])

    assert acls_of(sandbox.target, alice) == {read.on(f"{name}.copy")}
    assert figures == AclFigures(created=0, removed=1, kept=1)
    assert f"removed ALLOW {alice} WRITE on topic '{name}.copy' from host * from the target cluster" in caplog.text


def test_an_acl_made_by_hand_on_the_target_is_never_removed(sandbox, name):
    """Neither one like a copy, made before the sync would have made it, nor another one."""
    alice = f"User:{name}-alice"
    read = binding(alice, "READ", name)
    add(sandbox.source, read)
    by_hand = {read.on(f"{name}.copy"), binding(alice, "DESCRIBE", f"{name}.copy")}
    add(sandbox.target, *by_hand)

    with acl_sync(config_of(sandbox, name)) as sync:
        first = sync.sync({name: f"{name}.copy"}, [])
        remove(sandbox.source, read)
        second = sync.sync({name: f"{name}.copy"}, [])

    assert (first, second) == (AclFigures(kept=1), AclFigures())
    assert acls_of(sandbox.target, alice) == by_hand


def test_the_acls_of_synced_groups_are_copied_and_of_no_other_group(sandbox, name):
    alice = f"User:{name}-alice"
    add(sandbox.source, binding(alice, "READ", f"{name}-app", resource="GROUP"),
        binding(alice, "READ", f"{name}-other", resource="GROUP"),
        binding(alice, "DELETE", f"{name}-app-", resource="GROUP", pattern="PREFIXED"))

    with acl_sync(config_of(sandbox, name)) as sync:
        sync.sync({name: name}, [f"{name}-app", f"{name}-app-eu"])

    assert acls_of(sandbox.target, alice) == {binding(alice, "READ", f"{name}-app", resource="GROUP"),
                                              binding(alice, "DELETE", f"{name}-app-eu", resource="GROUP")}


def test_an_acl_a_replicator_made_on_one_side_is_not_copied_back(sandbox, name):
    """Replicating both ways, an ACL removed at the source must not come back from the target."""
    alice = f"User:{name}-alice"
    read = binding(alice, "READ", name)
    add(sandbox.source, read)
    forward, backward = config_of(sandbox, name), config_of(sandbox, name, "targetToSource")

    with acl_sync(forward) as there, acl_sync(backward, "targetToSource") as back:
        there.sync({name: name}, [])
        assert back.sync({name: name}, []) == AclFigures()
        remove(sandbox.source, read)
        assert back.sync({name: name}, []) == AclFigures()
        there.sync({name: name}, [])

    assert acls_of(sandbox.source, alice) == acls_of(sandbox.target, alice) == set()


def test_a_target_that_refuses_alter_on_the_cluster_raises_one_error_that_says_what_to_grant(
        sandbox, name, monkeypatch):
    """The SASL user may do all else on the target's cluster: ACLs on it end allow-everyone there."""
    sasl = sandbox.info.target.sasl
    monkeypatch.setenv("TEST_SASL_PASSWORD", sasl.password())
    target = {"bootstrapServers": sasl.bootstrap_servers, "securityProtocol": "SASL_PLAINTEXT",
              "saslMechanism": "SCRAM-SHA-512", "saslUsername": sasl.username,
              "saslPasswordEnv": "TEST_SASL_PASSWORD"}
    alice = f"User:{name}-alice"
    add(sandbox.source, binding(alice, "READ", name))
    granted = [binding(f"User:{sasl.username}", operation, "kafka-cluster", resource="CLUSTER")
               for operation in ("DESCRIBE", "CREATE", "IDEMPOTENT_WRITE")]
    add(sandbox.target, *granted)
    try:
        with acl_sync(config_of(sandbox, name, target_kafka=target)) as sync:
            with pytest.raises(AclSyncRefused) as refused:
                sync.sync({name: name}, [])
            again = sync.sync({name: name}, [])
            remove(sandbox.target, *granted)
            accepted = sync.sync({name: name}, [])
    finally:
        remove(sandbox.target, *granted)

    message = str(refused.value)
    assert message.startswith(f"target cluster ({sasl.bootstrap_servers}): ACL sync was refused "
                              f"(ClusterAuthorizationFailedError): User:{sasl.username} may not Alter "
                              "the cluster"), message
    assert (f"kafka-acls.sh --bootstrap-server {sasl.bootstrap_servers} --add --allow-principal "
            f"User:{sasl.username} --operation Alter --operation Describe --cluster, or set "
            "replication.sourceToTarget.syncAcls.enabled: false") in message
    assert sasl.password() not in message
    assert again == AclFigures(refused=True)
    assert accepted == AclFigures(created=1)


def test_a_target_without_an_authorizer_raises_one_error_that_says_so(sandbox, name, without_authorizer):
    target = without_authorizer.target.bootstrap_servers
    add(sandbox.source, binding(f"User:{name}-alice", "READ", name))

    with acl_sync(config_of(sandbox, name, target_kafka={"bootstrapServers": target})) as sync:
        with pytest.raises(AclSyncRefused) as refused:
            sync.sync({name: name}, [])
        again = sync.sync({name: name}, [])

    assert str(refused.value) == (
        f"target cluster ({target}): ACL sync needs an authorizer and this cluster has none "
        "(SecurityDisabledError); set authorizer.class.name on its brokers, or set "
        "replication.sourceToTarget.syncAcls.enabled: false")
    assert again == AclFigures(refused=True)


def test_a_pass_over_200_acls(sandbox, name):
    """Figures: 200 source ACLs, 100 topics; the first pass creates them all, the next keeps them."""
    principals = [f"User:{name}-{i}" for i in range(2)]
    routes = {f"{name}-{i}": f"dc1.{name}-{i}" for i in range(100)}
    add(sandbox.source, *(binding(p, "READ", topic) for p in principals for topic in routes))
    config = config_of(sandbox, name, include=[f"{name}-.*"], targetTopicPrefix="dc1.")

    with acl_sync(config) as sync:
        started = time.monotonic()
        first = sync.sync(routes, [])
        first_seconds = time.monotonic() - started
        started = time.monotonic()
        second = sync.sync(routes, [])
        second_seconds = time.monotonic() - started

    print(f"\n200 ACLs: first pass {first_seconds:.2f}s ({first}), next pass {second_seconds:.2f}s ({second})")
    assert (first, second) == (AclFigures(created=200), AclFigures(kept=200))
    assert len(acls_of(sandbox.target, f"User:{name}-")) == 200
