"""The rules of ACL sync: which target ACLs stand for the source's, never granting more."""

from __future__ import annotations

from replicator.acls import Binding, wanted


def binding(operation, name, pattern="LITERAL", permission="ALLOW", resource="TOPIC",
            principal="User:alice") -> Binding:
    return Binding(resource, name, pattern, principal, "*", operation, permission)


def test_a_wildcard_acl_becomes_literal_acls_on_the_replicated_topics_only():
    routes = {"orders": "dc1.orders", "payments": "dc1.payments"}

    found = wanted([binding("READ", "*"), binding("WRITE", "*", permission="DENY")], routes, [], "dc1.")

    assert set(found) == {binding("READ", "dc1.orders"), binding("READ", "dc1.payments"),
                          binding("WRITE", "dc1.orders", permission="DENY"),
                          binding("WRITE", "dc1.payments", permission="DENY")}


def test_a_prefixed_deny_becomes_literal_acls_when_a_covered_topic_is_not_renamed_by_the_prefix():
    routes = {"orders-eu": "dc1.orders-eu", "orders-us": "us-orders"}

    found = wanted([binding("READ", "orders-", "PREFIXED", "DENY")], routes, [], "dc1.")

    assert set(found) == {binding("READ", "dc1.orders-eu", permission="DENY"),
                          binding("READ", "us-orders", permission="DENY")}


def test_an_acl_on_no_replicated_topic_or_synced_group_stands_for_nothing():
    source = [binding("READ", "secret-", "PREFIXED", "DENY"), binding("READ", "other"),
              binding("READ", "other-app", resource="GROUP"), binding("ALTER", "kafka-cluster", resource="CLUSTER"),
              binding("WRITE", "kafka-replicator.", "PREFIXED", resource="TRANSACTIONAL_ID")]

    assert wanted(source, {"orders": "orders"}, ["app"], "") == {}


def test_a_target_topic_fed_by_several_source_topics_gets_an_allow_only_if_each_has_it():
    routes = {"orders-eu": "orders", "orders-us": "orders", "payments": "payments"}
    source = [binding("READ", "orders-eu"), binding("WRITE", "orders-eu"), binding("WRITE", "orders-us"),
              binding("DESCRIBE", "orders-eu", permission="DENY")]

    assert set(wanted(source, routes, [], "")) == {binding("WRITE", "orders"),
                                                   binding("DESCRIBE", "orders", permission="DENY")}


def test_each_target_acl_names_the_source_acl_it_stands_for():
    prefixed = binding("READ", "orders-", "PREFIXED")

    assert wanted([prefixed], {"orders-eu": "dc1.orders-eu"}, [], "dc1.") == {
        binding("READ", "dc1.orders-eu"): prefixed}
