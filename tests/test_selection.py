"""Which source topics a direction copies, and their names on the target."""

from replicator import acl_ledger, map_topic, registry
from replicator.config import OWN_TOPICS, parse_config
from replicator.selection import Selection, internal

CLUSTERS = {"sourceKafka": {"bootstrapServers": "kafka:9092"},
            "targetKafka": {"bootstrapServers": "kafka-warehouse:9092"}}


def selection(**direction) -> Selection:
    config = parse_config({**CLUSTERS, "replication": {"sourceToTarget": direction}})
    return Selection.of(config.direction("sourceToTarget"))


def test_patterns_match_whole_names():
    chosen = selection(include=["orders"]).routes(["orders", "orders-eu", "old-orders"])
    assert chosen == {"orders": "orders"}


def test_an_excluded_topic_is_not_selected():
    chosen = selection(include=["orders-.*"], exclude=["orders-test.*"]).routes(["orders-eu", "orders-test-1"])
    assert chosen == {"orders-eu": "orders-eu"}


def test_internal_topics_are_never_selected_by_a_pattern():
    existing = ["__consumer_offsets", "__transaction_state", "kafka-replicator-offsets",
                "kafka-replicator-producers", "kafka-replicator-acls", "orders"]
    assert selection(include=[".*"]).routes(existing) == {"orders": "orders"}


def test_the_prefix_names_only_pattern_selected_topics_and_explicit_routes_win():
    chosen = selection(include=[".*"], exclude=["payments"], targetTopicPrefix="dc1.",
                       topics=[{"sourceTopicName": "payments", "targetTopicName": "payments-copy"}])
    assert chosen.routes(["orders", "payments"]) == {"orders": "dc1.orders", "payments": "payments-copy"}


def test_explicit_topics_are_routed_before_they_exist():
    assert selection(topics=[{"sourceTopicName": "later"}]).routes([]) == {"later": "later"}


def test_the_config_knows_the_replicators_own_topics_by_their_names():
    assert set(OWN_TOPICS) == {registry.TOPIC, map_topic.TOPIC, acl_ledger.TOPIC}
    assert all(internal(topic) for topic in OWN_TOPICS)
