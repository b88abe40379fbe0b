"""Group offset sync: chosen groups find their translated positions on the target."""

from __future__ import annotations

import json

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition

from kafka_support import committed, create_topic, flow_for, produce, running, set_group_offsets, wait_until
from cluster import cli
from replicator.config import parse_config
from replicator.group_sync import GroupSync


def sync_config(sandbox, name, groups=None):
    return sandbox.config(
        consumerGroup={"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": 200}},
        replication={"sourceToTarget": {
            "topics": [{"sourceTopicName": name, "targetTopicName": f"{name}.copy"}],
            "syncGroupOffsets": {"enabled": True, "groups": groups or [f"{name}-app.*"]}}},
    )


def test_groups_are_chosen_by_name_or_whole_name_pattern_never_the_replicators_own():
    config = parse_config({
        "sourceKafka": {"bootstrapServers": "a:9092"}, "targetKafka": {"bootstrapServers": "b:9092"},
        "consumerGroup": {"sourceToTarget": "orders-replicator"},
        "replication": {"sourceToTarget": {"topics": [{"sourceTopicName": "t"}], "syncGroupOffsets": {
            "enabled": True, "groups": ["billing", "orders-.*"]}}},
    })
    chosen = GroupSync(config, "sourceToTarget").chosen(
        ["billing", "billing-2", "orders-eu", "orders-replicator", "my-orders-eu"])
    assert chosen == ["billing", "orders-eu"]


@pytest.fixture
def replicated(sandbox, name):
    """A topic of 2 × 100 records, copied to `<name>.copy` with its offset map."""
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(i % 2, b"k", f"v{i}".encode(), [], None) for i in range(200)])
    flow = flow_for(sandbox, **sync_config(sandbox, name))
    with running(flow):
        wait_until(lambda: sum(committed(sandbox.source, name).values()) == 200, what="the copy committed")
    return flow.config


@pytest.mark.kafka
def test_a_chosen_group_gets_its_translated_offsets_on_the_target(sandbox, name, replicated):
    set_group_offsets(sandbox.source, f"{name}-app", {TopicPartition(name, 0): 40, TopicPartition(name, 1): 100})

    written = GroupSync(replicated, "sourceToTarget").sync_once()

    expected = {TopicPartition(f"{name}.copy", 0): 40, TopicPartition(f"{name}.copy", 1): 100}
    assert written == {f"{name}-app": expected}
    assert committed(sandbox.target, f"{name}-app") == expected


@pytest.mark.kafka
def test_an_offset_on_the_target_never_moves_backwards(sandbox, name, replicated):
    set_group_offsets(sandbox.target, f"{name}-app", {TopicPartition(f"{name}.copy", 0): 70})
    set_group_offsets(sandbox.source, f"{name}-app", {TopicPartition(name, 0): 40, TopicPartition(name, 1): 60})

    GroupSync(replicated, "sourceToTarget").sync_once()

    assert committed(sandbox.target, f"{name}-app") == {
        TopicPartition(f"{name}.copy", 0): 70, TopicPartition(f"{name}.copy", 1): 60}


@pytest.mark.kafka
def test_a_group_with_members_on_the_target_is_left_alone(sandbox, name, replicated):
    set_group_offsets(sandbox.source, f"{name}-app", {TopicPartition(name, 0): 40})
    reader = KafkaConsumer(bootstrap_servers=sandbox.target, group_id=f"{name}-app", enable_auto_commit=False)
    try:
        # Joined before its metadata holds the topic, kafka-python's reader is assigned nothing
        # and may not ask again for a minute: it subscribes once it sees the topic's partitions.
        wait_until(lambda: reader.partitions_for_topic(f"{name}.copy"), what="the copy's partitions")
        reader.subscribe([f"{name}.copy"])
        wait_until(lambda: reader.poll(timeout_ms=200) is not None and reader.assignment(),
                   what="the reader's assignment on the target")
        sync = GroupSync(replicated, "sourceToTarget")
        assert sync.sync_once() == {}
        assert sync.figures.active == {f"{name}-app"}
        assert committed(sandbox.target, f"{name}-app") == {}
    finally:
        reader.close()


@pytest.mark.kafka
def test_status_shows_each_synced_group_and_how_far_behind_it_is(sandbox, name, replicated, tmp_path, capsys):
    set_group_offsets(sandbox.source, f"{name}-app", {TopicPartition(name, 0): 40})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(sync_config(sandbox, name)))

    def synced():
        capsys.readouterr()
        assert cli.main(["status", "--config", str(config_file), "--json"]) == 0
        return [row for row in json.loads(capsys.readouterr().out) if "synced_group" in row]

    before = synced()
    GroupSync(replicated, "sourceToTarget").sync_once()
    after = synced()

    row = {"direction": "sourceToTarget", "synced_group": f"{name}-app", "state": "synced"}
    assert before == [{**row, "behind": 40}]
    assert after == [{**row, "behind": 0}]
