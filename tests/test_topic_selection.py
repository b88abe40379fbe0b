"""Topics chosen by pattern and followed live, against two real Kafka clusters: new ones are
picked up, excluded ones never copied, deleted ones dropped, recreated ones refused; and
records the source deleted before they were copied, never passed over in silence; and
topic configs kept in step."""

from __future__ import annotations

import re
import time

import pytest
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import TopicAlreadyExistsError

from kafka_support import (
    committed,
    count,
    create_topic,
    essence,
    flow_for,
    produce,
    read_all,
    running,
    set_group_offsets,
    wait_until,
)
from replicator.config import parse_config
from replicator.config_sync import TOPIC_OVERRIDE, described
from replicator.flow import Flow
from replicator.topics import Identities

pytestmark = pytest.mark.kafka

REFRESH_SECONDS = 1.0
# A new topic's copy needs, after the listing that finds it, a rebalance of the group and
# the target topic's creation: about a second each here.
PICKUP_SLACK_SECONDS = 5.0


def by_pattern(sandbox, name, **direction):
    return flow_for(sandbox, consumerGroup={"sourceToTarget": name}, replication={"sourceToTarget": {
        "include": [f"{re.escape(name)}-.*"], "topicRefreshSeconds": REFRESH_SECONDS, **direction}})


def records(n, partitions=1):
    return [(i % partitions, f"k{i}".encode(), f"v{i}".encode(), [], None) for i in range(n)]


def topics_on(bootstrap: str) -> set[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def delete_topic(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()
    wait_until(lambda: topic not in topics_on(bootstrap), 30, what=f"{topic} to be deleted")


def recreated(sandbox, topic) -> bool:
    try:
        create_topic(sandbox.source, topic, partitions=1)
    except TopicAlreadyExistsError:  # still being deleted
        return False
    return True


def same_records(sandbox, topic) -> bool:
    source, target = read_all(sandbox.source, topic), read_all(sandbox.target, topic)
    return {p: [essence(r) for r in rs] for p, rs in target.items()} == \
        {p: [essence(r) for r in rs] for p, rs in source.items()}


def test_a_topic_created_after_start_is_copied_within_the_refresh_time(sandbox, name):
    create_topic(sandbox.source, f"{name}-a", partitions=1)
    produce(sandbox.source, f"{name}-a", records(5))

    with running(by_pattern(sandbox, name)):
        wait_until(lambda: count(sandbox.target, f"{name}-a") == 5, 60, what="the first topic's copy")
        created = time.monotonic()
        create_topic(sandbox.source, f"{name}-b", partitions=2)
        produce(sandbox.source, f"{name}-b", records(20, partitions=2))
        wait_until(lambda: count(sandbox.target, f"{name}-b") == 20, REFRESH_SECONDS + PICKUP_SLACK_SECONDS,
                   interval=0.1, what="the new topic's copy")
        print(f"new topic copied {time.monotonic() - created:.1f}s after it was created")

    assert same_records(sandbox, f"{name}-a") and same_records(sandbox, f"{name}-b")
    assert sorted(read_all(sandbox.target, f"{name}-b")) == [0, 1]


def test_an_excluded_topic_is_never_copied(sandbox, name):
    for topic in (f"{name}-kept", f"{name}-private-1"):
        create_topic(sandbox.source, topic, partitions=1)
        produce(sandbox.source, topic, records(5))

    with running(by_pattern(sandbox, name, exclude=[f"{re.escape(name)}-private-.*"])):
        wait_until(lambda: count(sandbox.target, f"{name}-kept") == 5, 60, what="the kept topic's copy")
        create_topic(sandbox.source, f"{name}-private-2", partitions=1)
        produce(sandbox.source, f"{name}-private-2", records(5))
        time.sleep(3 * REFRESH_SECONDS)

    assert not {f"{name}-private-1", f"{name}-private-2"} & topics_on(sandbox.target)


def test_an_explicit_topic_wins_over_the_patterns_that_exclude_it(sandbox, name):
    create_topic(sandbox.source, f"{name}-listed", partitions=1)
    produce(sandbox.source, f"{name}-listed", records(5))
    flow = by_pattern(sandbox, name, exclude=[".*-listed"],
                      topics=[{"sourceTopicName": f"{name}-listed", "targetTopicName": f"{name}-renamed"}])

    with running(flow):
        wait_until(lambda: count(sandbox.target, f"{name}-renamed") == 5, 60, what="the listed topic's copy")

    assert f"{name}-listed" not in topics_on(sandbox.target)


def test_a_target_topic_prefix_names_the_copies_of_pattern_selected_topics(sandbox, name):
    create_topic(sandbox.source, f"{name}-a", partitions=1)
    produce(sandbox.source, f"{name}-a", records(5))

    with running(by_pattern(sandbox, name, targetTopicPrefix="dc1.")):
        wait_until(lambda: count(sandbox.target, f"dc1.{name}-a") == 5, 60, what="the prefixed copy")

    assert f"{name}-a" not in topics_on(sandbox.target)


def test_a_source_topic_deleted_while_copied_stops_with_one_log_line(sandbox, name, caplog):
    caplog.set_level("INFO", logger="replicator")
    for topic in (f"{name}-a", f"{name}-b"):
        create_topic(sandbox.source, topic, partitions=2)
        produce(sandbox.source, topic, records(10, partitions=2))

    with running(by_pattern(sandbox, name)) as flow:
        wait_until(lambda: count(sandbox.target, f"{name}-a") == 10 and count(sandbox.target, f"{name}-b") == 10,
                   60, what="both topics' copies")
        delete_topic(sandbox.source, f"{name}-b")
        wait_until(lambda: "no longer exists" in caplog.text, 10 * REFRESH_SECONDS, what="the log line")
        produce(sandbox.source, f"{name}-a", records(30, partitions=2)[10:])
        wait_until(lambda: count(sandbox.target, f"{name}-a") == 30, 30, what="the other topic's copy to go on")
        time.sleep(3 * REFRESH_SECONDS)
        assert flow.health().error is None and flow.health().stopped == {}

    lines = [r.getMessage() for r in caplog.records if "no longer exists" in r.getMessage()]
    assert lines == [f"sourceToTarget: source topic '{name}-b' no longer exists on the source cluster: "
                     f"it is no longer copied; its target topic '{name}-b' is kept"]
    assert count(sandbox.target, f"{name}-b") == 10
    assert same_records(sandbox, f"{name}-a")
    assert not [r for r in caplog.records if r.name.startswith("replicator") and r.levelname != "INFO"]
    # kafka-python says "not found" until the next listing; then nothing asks for the topic.
    said = next(i for i, r in enumerate(caplog.records) if "no longer exists" in r.getMessage())
    assert not [r for r in caplog.records[said:] if r.name == "kafka.cluster" and r.levelname == "ERROR"]


def test_a_source_topic_deleted_and_created_again_is_refused(sandbox, name, caplog):
    caplog.set_level("INFO", logger="replicator")
    topic = f"{name}-a"
    create_topic(sandbox.source, topic, partitions=1)
    produce(sandbox.source, topic, records(5))

    with running(by_pattern(sandbox, name)) as flow:
        wait_until(lambda: count(sandbox.target, topic) == 5, 60, what="the copy")
        delete_topic(sandbox.source, topic)

        wait_until(lambda: recreated(sandbox, topic), 30, what=f"{topic} to be created again")
        produce(sandbox.source, topic, [(0, b"new", b"new", [], None)] * 3)
        stopped = wait_until(lambda: flow.health().stopped, 10 * REFRESH_SECONDS, what="the refusal")
        time.sleep(3 * REFRESH_SECONDS)

    assert list(stopped) == [topic]
    assert f"source topic '{topic}' was deleted and created again while replicated" in stopped[topic]
    assert f"delete target topic '{topic}'" in stopped[topic]
    assert "deleted and created again" in caplog.text
    assert [r.value for r in read_all(sandbox.target, topic)[0]] == [b"v0", b"v1", b"v2", b"v3", b"v4"]


def test_a_topic_recreated_between_two_flows_of_one_member_is_refused_by_the_second(sandbox, name):
    topic = f"{name}-a"
    create_topic(sandbox.source, topic, partitions=1)
    produce(sandbox.source, topic, records(5))
    identities = Identities()  # what the Ray member and `replicate` keep across the flows they run

    def flow() -> Flow:
        return Flow(parse_config(sandbox.config(consumerGroup={"sourceToTarget": name}, replication={
            "sourceToTarget": {"include": [f"{re.escape(name)}-.*"], "topicRefreshSeconds": REFRESH_SECONDS}})),
            "sourceToTarget", identities=identities)

    with running(flow()):
        wait_until(lambda: count(sandbox.target, topic) == 5, 60, what="the copy")
    delete_topic(sandbox.source, topic)
    wait_until(lambda: recreated(sandbox, topic), 30, what=f"{topic} to be created again")
    produce(sandbox.source, topic, [(0, b"new", b"new", [], None)] * 3)

    with running(flow()) as second:
        time.sleep(3 * REFRESH_SECONDS)
        assert "deleted and created again" in second.health().stopped[topic]

    assert [r.value for r in read_all(sandbox.target, topic)[0]] == [b"v0", b"v1", b"v2", b"v3", b"v4"]


def test_records_deleted_at_the_source_before_they_were_copied_are_logged_counted_and_passed(sandbox, name,
                                                                                               caplog):
    caplog.set_level("INFO", logger="replicator")
    create_topic(sandbox.source, name, partitions=1)
    produce(sandbox.source, name, records(10))
    tp = TopicPartition(name, 0)
    set_group_offsets(sandbox.source, name, {tp: 3})  # the replicator had copied 0-2
    admin = KafkaAdminClient(bootstrap_servers=sandbox.source)
    try:
        admin.delete_records({tp: 7})  # kafka-delete-records.sh, or retention
    finally:
        admin.close()
    flow = flow_for(sandbox, consumerGroup={"sourceToTarget": name},
                    replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}})

    with running(flow):
        wait_until(lambda: committed(sandbox.source, name).get(tp) == 10, 60, what="the commit past the gap")

    assert (f"records lost upstream: {name}[0] offsets 3-6 (4 records) were deleted at the source "
            "before they were copied") in caplog.text
    assert flow.metrics.snapshot().lost_upstream == {name: 4}
    assert [r.value for r in read_all(sandbox.target, name)[0]] == [b"v7", b"v8", b"v9"]


def test_a_pattern_selected_topic_that_grows_is_copied_into_its_grown_target(sandbox, name):
    topic = f"{name}-a"
    create_topic(sandbox.source, topic, partitions=1)
    produce(sandbox.source, topic, records(5))

    with running(by_pattern(sandbox, name)):
        wait_until(lambda: count(sandbox.target, topic) == 5, 60, what="the copy")
        admin = KafkaAdminClient(bootstrap_servers=sandbox.source)
        try:
            admin.create_partitions({topic: 3})
        finally:
            admin.close()
        produce(sandbox.source, topic, [(p, f"g{p}".encode(), b"grown", [], None) for p in (1, 2)])
        wait_until(lambda: count(sandbox.target, topic) == 7, 30, what="the new partitions' copies")

    assert same_records(sandbox, topic) and sorted(read_all(sandbox.target, topic)) == [0, 1, 2]


def test_a_source_topic_config_change_reaches_its_target_within_the_refresh_time(sandbox, name, caplog):
    caplog.set_level("INFO", logger="replicator")
    topic = f"{name}-a"
    create_topic(sandbox.source, topic, partitions=1, configs={"retention.ms": "3600000"})
    produce(sandbox.source, topic, records(1))
    flow = by_pattern(sandbox, name, syncTopicConfigs={"enabled": True, "exclude": ["segment\\..*"]})

    with running(flow):
        wait_until(lambda: count(sandbox.target, topic) == 1, 60, what="the copy")
        alter(sandbox.target, topic, {"segment.ms": "600000", "cleanup.policy": "compact"})  # by hand
        alter(sandbox.source, topic, {"retention.ms": "7200000", "min.insync.replicas": "1"})
        changed = time.monotonic()
        wait_until(lambda: configs_of(sandbox.target, topic).get("retention.ms") == "7200000",
                   REFRESH_SECONDS + 2, interval=0.1, what="the new retention on the target")
        print(f"config change followed {time.monotonic() - changed:.1f}s after it was made")
        wait_until(lambda: "cleanup.policy" not in configs_of(sandbox.target, topic), REFRESH_SECONDS + 2,
                   interval=0.1, what="the hand-set cleanup.policy reset like the source's")

    target = configs_of(sandbox.target, topic)
    assert target["segment.ms"] == "600000"  # excluded: left as set by hand
    assert "min.insync.replicas" not in target  # never copied
    assert (f"target topic '{topic}' config retention.ms: 3600000 → 7200000, as on source topic '{topic}'"
            in caplog.text)


def alter(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        admin.close()


def configs_of(bootstrap: str, topic: str) -> dict[str, str]:
    """The configs set on the topic itself."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {name: value for name, (value, where) in described(admin, [topic])[topic].items()
                if where == TOPIC_OVERRIDE}
    finally:
        admin.close()
