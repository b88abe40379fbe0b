"""`cutover`: the planned switch waits for the copy, moves the named groups, and reports the RPO."""

from __future__ import annotations

import datetime
import json
import threading
import time

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition

from kafka_support import committed, create_topic, flow_for, produce, running, set_group_offsets, wait_until
from cluster import cli
from replicator.config import parse_config
from replicator.cutover import Cutover


def cutover_config(sandbox, name, **direction):
    return sandbox.config(
        consumerGroup={"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": 200}},
        replication={"sourceToTarget": {
            "topics": [{"sourceTopicName": name, "targetTopicName": f"{name}.copy"}], **direction}},
    )


def config_file(sandbox, name, tmp_path, **direction):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cutover_config(sandbox, name, **direction)))
    return path


def replicate(sandbox, name, records: int, **direction):
    """Run the replicator until it committed `records` source records, then stop it."""
    with running(flow_for(sandbox, **cutover_config(sandbox, name, **direction))):
        wait_until(lambda: sum(committed(sandbox.source, name).values()) == records, what="the copy committed")


def cutover(capsys, path, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["cutover", "--config", str(path), "--direction", "sourceToTarget", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def copied(sandbox, name):
    """A topic of 2 × 50 records, copied to `<name>.copy`; the replicator stopped."""
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(i % 2, b"k", f"v{i}".encode(), [], None) for i in range(100)])
    replicate(sandbox, name, 100)


@pytest.mark.kafka
def test_after_a_drain_the_rpo_is_zero_and_the_named_group_finds_its_translated_offsets(
        sandbox, name, copied, tmp_path, capsys):
    app = f"{name}-app"
    set_group_offsets(sandbox.source, app, {TopicPartition(name, 0): 20, TopicPartition(name, 1): 50})

    code, out, err = cutover(capsys, config_file(sandbox, name, tmp_path), "--groups", app, "--json")

    assert code == 0, err
    report = json.loads(out)
    assert (report["ready"], report["rpo"], report["problems"]) == (True, {"records": 0, "seconds": 0.0}, [])
    assert [(p["partition"], p["source_end"], p["copied_to"], p["target_end"], p["target_position"],
             p["rpo_records"], p["rpo_seconds"]) for p in report["partitions"]] == [
        (0, 50, 50, 50, 50, 0, 0.0), (1, 50, 50, 50, 50, 0, 0.0)]
    assert [(g["partition"], g["source_offset"], g["target_offset"], g["on_target"]) for g in report["groups"]] == [
        (0, 20, 20, 20), (1, 50, 50, 50)]
    assert committed(sandbox.target, app) == {TopicPartition(f"{name}.copy", 0): 20,
                                              TopicPartition(f"{name}.copy", 1): 50}


@pytest.mark.kafka
def test_it_waits_for_a_running_replicator_and_reports_what_was_not_copied_when_it_started(
        sandbox, name, caplog):
    create_topic(sandbox.source, name, partitions=2)
    oldest = int(time.time() * 1000) - 45_000
    produce(sandbox.source, name, [(i % 2, b"k", b"v", [], oldest + i * 1000) for i in range(10)])
    config = parse_config(cutover_config(sandbox, name))
    reports = []
    waiting = threading.Thread(target=lambda: reports.append(Cutover(config, "sourceToTarget", []).run(120)))
    caplog.set_level("INFO", logger="replicator.cutover")

    waiting.start()
    wait_until(lambda: "waiting for the replicator to copy and commit 10 records in 2 partitions" in caplog.text,
               what="cutover waiting")
    with running(flow_for(sandbox, **cutover_config(sandbox, name))):
        waiting.join(timeout=120)

    report, = reports
    assert report.problems == []
    assert [(p.partition, p.rpo_records, p.behind, p.copied_to, p.target_end) for p in report.partitions] == [
        (0, 5, 0, 5, 5), (1, 5, 0, 5, 5)]
    # The oldest uncopied record of partition 1 is its first, written 1 s after partition 0's.
    started_age = report.started - oldest / 1000
    assert [p.rpo_seconds for p in report.partitions] == pytest.approx([started_age, started_age - 1], abs=0.01)


@pytest.mark.kafka
def test_with_the_replicator_stopped_a_timeout_names_the_backlog_and_moves_no_group(
        sandbox, name, copied, tmp_path, capsys):
    app = f"{name}-app"
    set_group_offsets(sandbox.source, app, {TopicPartition(name, 0): 50, TopicPartition(name, 1): 50})
    now = int(time.time() * 1000)
    produce(sandbox.source, name, [(0, b"k", b"late", [], now - 60_000), (0, b"k", b"late", [], now - 5_000),
                                   (0, b"k", b"late", [], now - 5_000), (1, b"k", b"late", [], now - 30_000),
                                   (1, b"k", b"late", [], now - 5_000)])

    code, out, err = cutover(capsys, config_file(sandbox, name, tmp_path), "--groups", app, "--timeout", "2",
                             "--json")

    assert code == 1
    report = json.loads(out)
    partitions = report["partitions"]
    assert [(p["partition"], p["rpo_records"], p["behind"], p["copied_to"], p["source_end"]) for p in partitions] == [
        (0, 3, 3, 50, 53), (1, 2, 2, 50, 52)]
    started_age = datetime.datetime.fromisoformat(report["started"]).timestamp() - now / 1000
    assert [p["rpo_seconds"] for p in partitions] == pytest.approx([60 + started_age, 30 + started_age], abs=0.002)
    assert report["rpo"]["records"] == 5 and report["rpo"]["seconds"] == partitions[0]["rpo_seconds"]
    assert report["groups"] == [] and committed(sandbox.target, app) == {}
    assert f"2 of 2 partitions not copied and committed after 2s: {name}[0] 3 records behind (copied to 50 of 53), " \
           "the oldest 6" in err
    assert f"{name}[1] 2 records behind (copied to 50 of 52), the oldest 3" in err


@pytest.mark.kafka
def test_a_group_with_members_on_the_target_is_refused(sandbox, name, copied, tmp_path, capsys):
    app = f"{name}-app"
    set_group_offsets(sandbox.source, app, {TopicPartition(name, 0): 20})
    reader = KafkaConsumer(bootstrap_servers=sandbox.target, group_id=app, enable_auto_commit=False)
    try:
        # Its metadata first: a member that joins before it has the topic's is assigned nothing.
        wait_until(lambda: reader.partitions_for_topic(f"{name}.copy"), what="the copy's metadata")
        reader.subscribe([f"{name}.copy"])
        wait_until(lambda: reader.poll(timeout_ms=200) is not None and reader.assignment(),
                   what="the reader's assignment on the target")

        code, out, err = cutover(capsys, config_file(sandbox, name, tmp_path), "--groups", app)

        assert code == 1 and out == ""
        assert f"consumer groups with active members on the target cluster ({sandbox.target}): {app} (1 members); " \
               "syncing their offsets would overwrite the offsets those members commit there" in err
        assert committed(sandbox.target, app) == {}
    finally:
        reader.close()


@pytest.mark.kafka
def test_a_group_ahead_on_the_target_is_not_moved_back_and_stops_the_switch(sandbox, name, copied, tmp_path,
                                                                           capsys):
    app = f"{name}-app"
    set_group_offsets(sandbox.source, app, {TopicPartition(name, 0): 20})
    set_group_offsets(sandbox.target, app, {TopicPartition(f"{name}.copy", 0): 45})

    code, _, err = cutover(capsys, config_file(sandbox, name, tmp_path), "--groups", app)

    assert code == 1
    assert f"{app}: {name}.copy[0] is at 45 on the target, ahead of 20, the translation of source offset 20 " \
           "(the sync never moves an offset backwards): its consumers would skip 25 records" in err
    assert committed(sandbox.target, app) == {TopicPartition(f"{name}.copy", 0): 45}


@pytest.mark.kafka
def test_records_written_while_it_waits_stop_the_switch(sandbox, name, copied, caplog):
    produce(sandbox.source, name, [(0, b"k", b"late", [], None)])
    config = parse_config(cutover_config(sandbox, name))
    reports = []
    waiting = threading.Thread(target=lambda: reports.append(Cutover(config, "sourceToTarget", []).run(120)))
    caplog.set_level("INFO", logger="replicator.cutover")

    waiting.start()
    wait_until(lambda: "waiting for the replicator to copy and commit 1 records" in caplog.text, what="cutover waiting")
    produce(sandbox.source, name, [(1, b"k", b"still written", [], None)] * 2)
    with running(flow_for(sandbox, **cutover_config(sandbox, name))):
        waiting.join(timeout=120)

    report, = reports
    assert report.problems == [f"the source's end moved while cutover ran ({name}[1] +2): producers still "
                               "write to it; stop them and run cutover again"]
    assert [(p.partition, p.rpo_records, p.behind) for p in report.partitions] == [(0, 1, 0), (1, 0, 0)]


@pytest.mark.kafka
def test_without_groups_it_moves_those_sync_group_offsets_names(sandbox, name, copied, tmp_path, capsys):
    set_group_offsets(sandbox.source, f"{name}-app-eu", {TopicPartition(name, 1): 30})
    set_group_offsets(sandbox.source, f"{name}-other", {TopicPartition(name, 1): 10})
    path = config_file(sandbox, name, tmp_path, syncGroupOffsets={"enabled": True, "groups": [f"{name}-app.*"]})

    code, out, err = cutover(capsys, path, "--json")

    assert code == 0, err
    assert {g["group"] for g in json.loads(out)["groups"]} == {f"{name}-app-eu"}
    assert committed(sandbox.target, f"{name}-app-eu") == {TopicPartition(f"{name}.copy", 1): 30}
    assert committed(sandbox.target, f"{name}-other") == {}


@pytest.mark.kafka
def test_the_replicators_own_group_is_refused(sandbox, name, tmp_path, capsys):
    code, out, err = cutover(capsys, config_file(sandbox, name, tmp_path), "--groups", name)

    assert (code, out) == (1, "")
    assert f"error: {name}: the replicator's own consumer group; --groups names the groups of the applications" in err
