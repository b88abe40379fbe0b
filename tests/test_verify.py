"""`verify` against real brokers: a clean copy passes; a record written to the target by hand,
one the replicator skipped and one altered are named with their offsets; what compaction
removed at the source is no mismatch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from cluster import cli
from kafka_support import count, create_topic, produce, running, set_group_offsets, wait_until
from replicator.config import parse_config
from replicator.flow import Flow

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["batch", "record"])
def mode(request):
    return request.param


def write_config(path: Path, sandbox, name: str, mode: str = "batch", **direction) -> Path:
    path.write_text(yaml.safe_dump(sandbox.config(
        consumerGroup={"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": 200}},
        replication={"sourceToTarget": {"mode": mode, "topics": [{"sourceTopicName": name}], **direction}})))
    return path


def source_ends(sandbox, topic: str, bootstrap: str | None = None) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap or sandbox.source, isolation_level="read_committed")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return consumer.end_offsets(partitions)
    finally:
        consumer.close()


def replicate(sandbox, config_file: Path, group: str, topic: str) -> None:
    """Run the direction until its group committed the source's end, then stop it."""
    config = parse_config(yaml.safe_load(config_file.read_text()))
    with running(Flow(config, "sourceToTarget", None)):
        wait_until(lambda: committed(sandbox, group) == source_ends(sandbox, topic), 60,
                   what=f"the replicator's commit at the end of {topic}")


def committed(sandbox, group: str) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(bootstrap_servers=sandbox.source)
    try:
        return {tp: meta.offset for tp, meta in admin.list_group_offsets({group: None}).get(group, {}).items()}
    except Exception:  # the group's coordinator is still being set up
        return {}
    finally:
        admin.close()


def verify(capsys, config_file: Path, *options: str) -> tuple[int, dict, str]:
    """Exit code, the --json answer, and stderr."""
    capsys.readouterr()
    code = cli.main(["verify", "--config", str(config_file), "--json", *options])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def partition(answer: dict, number: int = 0) -> dict:
    [found] = [p for p in answer["partitions"] if p["partition"] == number]
    return found


def test_a_clean_copy_verifies_record_by_record_and_exits_0(sandbox, name, mode, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=2)
    records = []
    for i in range(200):
        key = None if i % 7 == 0 else f"k{i}".encode()
        value = None if i % 11 == 0 and key is not None else f"v{i}".encode() * (i % 4 + 1)
        headers = [("trace", f"t{i}".encode()), ("dup", b"a"), ("dup", b"b")] if i % 2 else []
        records.append((i % 2, key, value, headers, 946684800000 + i if i % 3 == 0 else None))
    produce(sandbox.source, name, records)
    aborting = KafkaProducer(bootstrap_servers=sandbox.source, transactional_id=f"{name}-aborting")
    aborting.init_transactions()
    aborting.begin_transaction()
    aborting.send(name, key=b"a", value=b"aborted", partition=0)
    aborting.flush()
    aborting.abort_transaction()
    aborting.close()
    produce(sandbox.source, name, [(0, b"after", b"the abort", [], None)])
    config = write_config(tmp_path / "c.yaml", sandbox, name, mode)
    replicate(sandbox, config, name, name)

    code, answer, _ = verify(capsys, config)
    assert code == 0
    assert [(p["partition"], p["compared"], p["mismatches"], p["discrepancies"]) for p in answer["partitions"]] == \
        [(0, 101, 0, []), (1, 100, 0, [])]
    assert answer["compared"] == 201


def test_an_exactly_once_copy_verifies_through_its_transactions_markers(sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=2)
    config = write_config(tmp_path / "c.yaml", sandbox, name, exactlyOnce=True)
    with running(Flow(parse_config(yaml.safe_load(config.read_text())), "sourceToTarget", None)):
        for round_ in range(3):  # a transaction each at least, so that markers sit between the copies
            produce(sandbox.source, name, [(i % 2, f"k{i}".encode(), f"r{round_}".encode(), [], None)
                                           for i in range(50)])
            time.sleep(0.6)
        wait_until(lambda: committed(sandbox, name) == source_ends(sandbox, name), 60,
                   what="the replicator's commit at the end of the topic")

    assert sum(source_ends(sandbox, name, sandbox.target).values()) > 150, "markers between the copies"

    code, answer, _ = verify(capsys, config)
    assert code == 0
    assert [(p["compared"], p["mismatches"]) for p in answer["partitions"]] == [(75, 0), (75, 0)]


@pytest.mark.parametrize("backward_mode", ["batch", "record"])
def test_an_active_active_topic_verifies_both_ways_with_each_sides_own_writes_apart(
        sandbox, name, backward_mode, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=1)
    create_topic(sandbox.target, name, partitions=1)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(sandbox.config(
        consumerGroup={"sourceToTarget": {"groupId": f"{name}-s2t", "autoCommitIntervalMs": 200},
                       "targetToSource": {"groupId": f"{name}-t2s", "autoCommitIntervalMs": 200}},
        replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]},
                     "targetToSource": {"mode": backward_mode, "topics": [{"sourceTopicName": name}]}})))
    parsed = parse_config(yaml.safe_load(config.read_text()))
    with running(Flow(parsed, "sourceToTarget", None)), running(Flow(parsed, "targetToSource", None)):
        for round_ in range(3):  # each side's writes between the copies of the other's
            produce(sandbox.source, name, [(0, f"s{round_}-{i}".encode(), b"from-source", [], None)
                                           for i in range(10)])
            produce(sandbox.target, name, [(0, f"t{round_}-{i}".encode(), b"from-target", [], None)
                                           for i in range(10)])
            wait_until(lambda: count(sandbox.source, name) == count(sandbox.target, name) == 20 * (round_ + 1),
                       60, what="each side's records on the other")
        wait_until(lambda: committed(sandbox, f"{name}-s2t") == source_ends(sandbox, name)
                   and sum(target_committed(sandbox, f"{name}-t2s").values()) == 60, 60,
                   what="both groups committed at their ends")

    code, answer, _ = verify(capsys, config)
    assert code == 0
    found = {p["direction"]: p for p in answer["partitions"]}
    for direction in ("sourceToTarget", "targetToSource"):
        assert (found[direction]["compared"], found[direction]["mismatches"]) == (30, 0)
        # The rounds after the first come after the direction's first copy: in its range.
        assert found[direction]["sent_back"] >= 10 and found[direction]["written_on_target"] >= 10


def target_committed(sandbox, group: str) -> dict[TopicPartition, int]:
    admin = KafkaAdminClient(bootstrap_servers=sandbox.target)
    try:
        return {tp: meta.offset for tp, meta in admin.list_group_offsets({group: None}).get(group, {}).items()}
    except Exception:  # the group's coordinator is still being set up
        return {}
    finally:
        admin.close()


def test_a_record_written_to_the_target_by_hand_is_extra_with_its_offset(sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=1)
    produce(sandbox.source, name, [(0, b"k", f"v{i}".encode(), [], None) for i in range(20)])
    config = write_config(tmp_path / "c.yaml", sandbox, name)
    replicate(sandbox, config, name, name)
    produce(sandbox.target, name, [(0, b"k", b"by hand", [], None)])

    code, answer, err = verify(capsys, config)
    assert code == 1
    assert f"1 mismatches in {name}[0]" in err
    found = partition(answer)
    assert (found["compared"], found["extra"], found["missing"], found["altered"]) == (20, 1, 0, 0)
    assert found["discrepancies"] == [{"kind": "extra", "source_offset": None, "target_offset": 20, "count": 1,
                                       "what": "no source record maps there"}]


def test_records_compacted_away_at_the_source_are_gone_there_not_mismatches(sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=1)
    for round_ in range(4):
        produce(sandbox.source, name, [(0, f"k{i}".encode(), f"r{round_}".encode(), [], None) for i in range(10)],
                linger_ms=50)
    config = write_config(tmp_path / "c.yaml", sandbox, name)
    replicate(sandbox, config, name, name)
    admin = KafkaAdminClient(bootstrap_servers=sandbox.source)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs={
            "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
            "min.compaction.lag.ms": "0"})])
    finally:
        admin.close()
    time.sleep(0.3)
    produce(sandbox.source, name, [(0, b"roll", b"x", [], None)])  # rolls the segment for the cleaner
    wait_until(lambda: count(sandbox.source, name) == 11, 90, what="the log cleaner")

    code, answer, _ = verify(capsys, config)
    assert code == 0
    found = partition(answer)
    assert (found["compared"], found["gone_at_source"], found["mismatches"], found["copied_to"]) == (10, 30, 0, 40)


def test_a_target_refilled_by_hand_shows_the_altered_and_missing_records_with_their_offsets(
        sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=1)
    originals = [(0, f"k{i}".encode(), f"v{i}".encode(), [("h", b"x")], 1_700_000_000_000 + i) for i in range(20)]
    produce(sandbox.source, name, originals)
    config = write_config(tmp_path / "c.yaml", sandbox, name)
    replicate(sandbox, config, name, name)
    # The target topic deleted and written again by someone else: the map still places the copies.
    admin = KafkaAdminClient(bootstrap_servers=sandbox.target)
    try:
        admin.delete_topics([name])
        wait_until(lambda: name not in admin.list_topics(), 30, what="the target topic deleted")
    finally:
        admin.close()
    wait_until(lambda: _created(sandbox.target, name), 30, what="the target topic created again")
    refill = list(originals[:15])
    refill[5] = (0, b"k5", b"changed", [("h", b"x")], 1_700_000_000_005)
    refill[9] = (0, b"k9", b"v9", [("h", b"y")], 1_700_000_000_999)
    produce(sandbox.target, name, refill)

    code, answer, _ = verify(capsys, config)
    assert code == 1
    found = partition(answer)
    assert (found["compared"], found["altered"], found["missing"], found["extra"]) == (15, 2, 5, 0)
    assert [(d["kind"], d["source_offset"], d["target_offset"], d["count"], d["what"])
            for d in found["discrepancies"]] == [
        ("altered", 5, 5, 1, "value differs"),
        ("altered", 9, 9, 1, "headers, timestamp differ"),
        ("missing", 15, 15, 5, "not on the target"),
    ]


def _created(bootstrap: str, topic: str) -> bool:
    try:
        create_topic(bootstrap, topic, partitions=1)
        return True
    except Exception:  # still being deleted
        return False


def test_source_records_the_replicator_skipped_are_missing_with_their_offsets(sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=1)
    produce(sandbox.source, name, [(0, b"k", f"v{i}".encode(), [], None) for i in range(10)])
    config = write_config(tmp_path / "c.yaml", sandbox, name)
    replicate(sandbox, config, name, name)
    produce(sandbox.source, name, [(0, b"k", f"w{i}".encode(), [], None) for i in range(20)])
    set_group_offsets(sandbox.source, name, {TopicPartition(name, 0): 20})  # offsets 10-19 never copied
    replicate(sandbox, config, name, name)

    capsys.readouterr()
    code = cli.main(["verify", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"sourceToTarget {name}[0]: missing: source offsets 10-19 (10 records): not copied" in out
    assert "20 records compared" in out and "10 mismatches (10 missing, 0 extra, 0 altered)" in out


@pytest.mark.parametrize("direction", [{}, {"exactlyOnce": True}], ids=["at-least-once", "exactly-once"])
def test_passes_while_records_flow_and_the_replicator_copies_them_find_no_mismatch(
        sandbox, name, direction, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=2)
    config = write_config(tmp_path / "c.yaml", sandbox, name, **direction)
    stop = threading.Event()

    def traffic():
        producer = KafkaProducer(bootstrap_servers=sandbox.source, linger_ms=5)
        sent = 0
        while not stop.is_set():
            producer.send(name, key=b"k%d" % sent, value=b"v" * 50, partition=sent % 2)
            sent += 1
            if sent % 50 == 0:
                time.sleep(0.02)
        producer.close()

    writer = threading.Thread(target=traffic, daemon=True)
    with running(Flow(parse_config(yaml.safe_load(config.read_text())), "sourceToTarget", None)):
        writer.start()
        try:
            wait_until(lambda: sum(committed(sandbox, name).values()) > 200, 60, what="copies committed")
            passes = []
            for _ in range(3):
                time.sleep(1.0)
                code, answer, _ = verify(capsys, config)
                passes.append((code, answer["mismatches"], answer["compared"] > 0))
        finally:
            stop.set()
            writer.join(timeout=30)
    assert passes == [(0, 0, True)] * 3


def test_topics_narrow_a_pass_to_the_topics_named_and_an_unknown_one_is_refused(sandbox, name, tmp_path, capsys):
    other = f"{name}-other"
    for topic in (name, other):
        create_topic(sandbox.source, topic, partitions=1)
        produce(sandbox.source, topic, [(0, b"k", b"v", [], None)] * 5)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(sandbox.config(
        consumerGroup={"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": 200}},
        replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}, {"sourceTopicName": other}]}})))
    parsed = parse_config(yaml.safe_load(config.read_text()))
    with running(Flow(parsed, "sourceToTarget", None)):
        wait_until(lambda: sum(committed(sandbox, name).values()) == 10, 60, what="both topics copied")

    code, answer, _ = verify(capsys, config, "--topics", other)
    assert code == 0
    assert [(p["topic"], p["compared"]) for p in answer["partitions"]] == [(other, 5)]
    capsys.readouterr()
    assert cli.main(["verify", "--config", str(config), "--topics", f"{name}-nowhere"]) == 1
    assert f"sourceToTarget copies no topic named {name}-nowhere" in capsys.readouterr().err


def test_partitions_spread_by_key_hash_are_not_verified_and_say_why(sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(i % 2, f"k{i}".encode(), b"v", [], None) for i in range(20)])
    config = write_config(tmp_path / "c.yaml", sandbox, name, partitioning="hash")
    replicate(sandbox, config, name, name)

    code, answer, err = verify(capsys, config)
    assert code == 1
    assert f"2 partitions not verified ({name}[0], {name}[1])" in err
    assert {p["unverified"] for p in answer["partitions"]} == {
        "records are spread over the target's partitions by key hash (partitioning: hash or a narrower "
        "target): no offset map to pair them"}


def test_verify_every_exports_the_mismatches_of_each_partition_until_stopped(sandbox, name, tmp_path):
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(i % 2, b"k", f"v{i}".encode(), [], None) for i in range(20)])
    config = write_config(tmp_path / "c.yaml", sandbox, name)
    replicate(sandbox, config, name, name)
    produce(sandbox.target, name, [(1, b"k", b"by hand", [], None), (1, b"k", b"again", [], None)])
    log = tmp_path / "verify.log"
    with open(log, "w") as out:
        watch = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "verify", "--config", str(config), "--every", "1",
             "--metrics-port", "0"], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        served = wait_until(lambda: re.search(r"serving .* on (http://127\.0\.0\.1:\d+)", log.read_text()),
                            30, what="the metrics port in the log")
        base = served.group(1)

        def gauges() -> dict[str, float]:
            with urllib.request.urlopen(base + "/metrics", timeout=10) as answer:
                text = answer.read().decode()
            return {match.group(1): float(match.group(2)) for match in re.finditer(
                r'kafka_replicator_verify_mismatches\{[^}]*partition="(\d)"[^}]*\} (\S+)', text)}

        assert wait_until(lambda: gauges().get("1") and gauges(), 60, what="a pass's gauges") == {"0": 0.0, "1": 2.0}
        with urllib.request.urlopen(base + "/readyz", timeout=10) as answer:
            assert answer.status == 200
        wait_until(lambda: log.read_text().count("records compared") >= 2, 30, what="a second pass")
    finally:
        watch.send_signal(signal.SIGTERM)
        code = watch.wait(timeout=30)
    assert code == 0, log.read_text()
