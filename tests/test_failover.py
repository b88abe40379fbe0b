"""A consumer group moves from the source cluster to the target: with the offset map it
reads exactly the records it had not processed, after replays, aborts and compaction."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from kafka_support import committed, count, create_topic, produce, read_all, set_group_offsets, wait_until
from cluster import cli
from replicator import map_topic
from workbench.bench.failover import values_after

pytestmark = pytest.mark.kafka


@pytest.fixture(params=["batch"])
def mode(request):
    """Batch mode here; record mode's failover, kill and replay included, is checked by
    tests/test_bench_smoke.py's failover row (lost 0, read twice 0), which runs anyway."""
    return request.param


class Member:
    """One replicator member in its own process, so that it can be killed for real."""

    def __init__(self, config_file):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "--log-level", "WARNING", "replicate",
             "--config", str(config_file), "--direction", "sourceToTarget"])

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) == 0

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def write_config(path, sandbox, name, topics, mode, commit_interval_ms):
    config = sandbox.config(
        consumerGroup={"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": commit_interval_ms}},
        replication={"sourceToTarget": {"mode": mode, "topics": [
            {"sourceTopicName": topic, "targetTopicName": f"{topic}.copy"} for topic in topics]}},
    )
    path.write_text(yaml.safe_dump(config))
    return path


def ends(bootstrap, topics) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t)]
        return consumer.end_offsets(partitions)
    finally:
        consumer.close()


def wait_committed_to_end(sandbox, group, topics):
    wait_until(lambda: committed(sandbox.source, group) == ends(sandbox.source, topics), 90,
               what=f"the replicator's group {group} committed to the end of {topics}")


def values(bootstrap, topic, since: dict[int, int] | None = None) -> dict[int, list]:
    """Per partition, the values of committed records from `since` (offset per partition) on."""
    since = since or {}
    return {partition: [r.value for r in records if r.offset >= since.get(partition, 0)]
            for partition, records in read_all(bootstrap, topic).items()}


def translate(config_file, group, capsys) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = cli.main(["offsets", "translate", "--config", str(config_file), "--group", group, "--json"])
    return code, json.loads(capsys.readouterr().out)


def send(bootstrap, topic, partition, values_, producer=None) -> list[int]:
    own = producer is None
    producer = producer or KafkaProducer(bootstrap_servers=bootstrap)
    futures = [producer.send(topic, key=value[:12], value=value, partition=partition) for value in values_]
    producer.flush()
    offsets = [future.get(timeout=30).offset for future in futures]
    if own:
        producer.close()
    return offsets


def test_a_group_that_moves_to_the_target_reads_each_record_it_had_not_processed_once(
        sandbox, name, mode, tmp_path, capsys):
    topic, compacted = name, f"{name}-compacted"
    create_topic(sandbox.source, topic, partitions=2)
    create_topic(sandbox.source, compacted, partitions=1, configs={"cleanup.policy": "compact"})
    topics = [topic, compacted]
    quick = write_config(tmp_path / "quick.yaml", sandbox, name, topics, mode, 200)
    never = write_config(tmp_path / "never.yaml", sandbox, name, topics, mode, 3_600_000)

    # 1. Copied and committed.
    for partition in (0, 1):
        send(sandbox.source, topic, partition, [f"{partition}-a{i}".encode() for i in range(150)])
    produce(sandbox.source, compacted, [(0, f"k{i % 10}".encode(), None if i % 7 == 3 else f"c{i}".encode(), [], None)
                                        for i in range(60)])
    member = Member(quick)
    wait_committed_to_end(sandbox, name, topics)
    member.stop()

    # 2. More records, an aborted and a committed transaction; copied but never committed.
    transactional = KafkaProducer(bootstrap_servers=sandbox.source, transactional_id=f"tx-{name}")
    transactional.init_transactions()
    transactional.begin_transaction()
    aborted = send(sandbox.source, topic, 0, [b"aborted-1", b"aborted-2"], transactional)
    transactional.abort_transaction()
    transactional.begin_transaction()
    send(sandbox.source, topic, 0, [f"0-tx{i}".encode() for i in range(5)], transactional)
    transactional.commit_transaction()
    transactional.close()
    for partition in (0, 1):
        send(sandbox.source, topic, partition, [f"{partition}-b{i}".encode() for i in range(150)])
    produce(sandbox.source, compacted, [(0, f"k{i % 10}".encode(), None if i % 5 == 0 else f"d{i}".encode(), [], None)
                                        for i in range(40)])
    copied = count(sandbox.source, topic) + count(sandbox.source, compacted)
    member = Member(never)
    wait_until(lambda: count(sandbox.target, f"{topic}.copy") + count(sandbox.target, f"{compacted}.copy") >= copied,
               what="every record copied once")
    member.kill()

    # 3. The application group processed part of it on the source: one position in the
    #    aborted transaction's gap, the others inside what step 2 copied.
    app = f"{name}-app"
    positions = {TopicPartition(topic, 0): aborted[0], TopicPartition(topic, 1): 200,
                 TopicPartition(compacted, 0): 80}
    set_group_offsets(sandbox.source, app, positions)

    # 4. The replicator restarts from its last commit: step 2's records are copied again.
    member = Member(quick)
    wait_committed_to_end(sandbox, name, topics)
    member.stop()
    on_target = count(sandbox.target, f"{topic}.copy") + count(sandbox.target, f"{compacted}.copy")
    assert on_target > copied, "the kill left no replayed duplicates on the target"

    code, rows = translate(quick, app, capsys)
    assert code == 0, rows
    assert {(row["topic"], row["partition"]) for row in rows} == {(tp.topic, tp.partition) for tp in positions}
    for source_topic in topics:
        translated = {row["partition"]: row["target_offset"] for row in rows if row["topic"] == source_topic}
        since = {tp.partition: offset for tp, offset in positions.items() if tp.topic == source_topic}
        assert values_after(sandbox.target, f"{source_topic}.copy", translated) == values(
            sandbox.source, source_topic, since), source_topic


def test_translating_a_group_that_does_not_exist_names_it_and_fails(sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=1)
    config = write_config(tmp_path / "c.yaml", sandbox, name, [name], "batch", 200)
    capsys.readouterr()
    code = cli.main(["offsets", "translate", "--config", str(config), "--group", f"{name}-nobody"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"consumer group '{name}-nobody' has no committed offsets there" in err
    assert err.startswith(f"error: source cluster ({sandbox.source})")


def test_translating_a_group_of_topics_not_replicated_names_them_and_fails(sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=1)
    create_topic(sandbox.source, f"{name}-elsewhere", partitions=1)
    set_group_offsets(sandbox.source, f"{name}-app", {TopicPartition(f"{name}-elsewhere", 0): 5})
    config = write_config(tmp_path / "c.yaml", sandbox, name, [name], "batch", 200)
    capsys.readouterr()
    code = cli.main(["offsets", "translate", "--config", str(config), "--group", f"{name}-app"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"commits no topic that sourceToTarget replicates (it commits {name}-elsewhere)" in err


def test_a_partition_the_replicator_has_not_reached_is_not_translated(sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=1)
    send(sandbox.source, name, 0, [f"v{i}".encode() for i in range(20)])
    config = write_config(tmp_path / "c.yaml", sandbox, name, [name], "batch", 200)
    member = Member(config)
    wait_committed_to_end(sandbox, name, [name])
    member.stop()
    send(sandbox.source, name, 0, [f"w{i}".encode() for i in range(20)])
    set_group_offsets(sandbox.source, f"{name}-app", {TopicPartition(name, 0): 30})

    code, [row] = translate(config, f"{name}-app", capsys)
    assert code == 1
    assert row["target_offset"] is None
    assert row["reason"] == "not copied yet (the replicator has copied up to offset 20)"
    assert row["to_copy"] == 20


def test_translating_without_the_offset_map_topic_says_it_is_missing(sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=1)
    set_group_offsets(sandbox.source, f"{name}-app", {TopicPartition(name, 0): 0})
    config = write_config(tmp_path / "c.yaml", sandbox, name, [name], "batch", 200)
    target = KafkaAdminClient(bootstrap_servers=sandbox.target)
    map_topic.ensure_topic(target, -1)
    try:
        target.delete_topics([map_topic.TOPIC])
        wait_until(lambda: map_topic.TOPIC not in target.list_topics(), what="the map topic deleted")
        capsys.readouterr()
        code = cli.main(["offsets", "translate", "--config", str(config), "--group", f"{name}-app"])
        err = capsys.readouterr().err
        assert code == 1
        assert err.startswith(f"error: target cluster ({sandbox.target}): the offset map topic "
                              f"'{map_topic.TOPIC}' does not exist")
    finally:
        wait_until(lambda: _recreated(target), what="the map topic created again")
        target.close()


def _recreated(admin) -> bool:
    try:
        map_topic.ensure_topic(admin, -1)
    except (TopicAlreadyExistsError, UnknownTopicOrPartitionError):
        return False
    return map_topic.TOPIC in admin.list_topics()
