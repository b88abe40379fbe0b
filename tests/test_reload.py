"""The driver's config file read again (cluster.reload): what a change applies, and what waits
for a restart. No Ray needed; tests/test_cluster.py runs it in the real driver."""

import logging

import yaml

from cluster.plan import plan
from cluster.reload import ConfigFile, compare
from replicator.config import parse_config

BOTH = {
    "sourceKafka": {"bootstrapServers": "kafka:9092"},
    "targetKafka": {"bootstrapServers": "kafka-warehouse:9092"},
    "replicaCount": 2,
    "replication": {
        "sourceToTarget": {"topics": [{"sourceTopicName": "damage"}]},
        "targetToSource": {"topics": [{"sourceTopicName": "warehouse-events"}]},
    },
}


def with_(settings: dict, path: str, value) -> dict:
    """A deep copy of `settings` with the dotted `path` set to `value`."""
    copy = yaml.safe_load(yaml.safe_dump(settings))
    *parents, last = path.split(".")
    node = copy
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return copy


def config_file(tmp_path, settings: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path, ConfigFile(path, parse_config(settings))


def test_a_new_replica_count_is_a_new_plan_and_needs_no_restart():
    change = compare(parse_config(BOTH), parse_config({**BOTH, "replicaCount": 4}))

    assert change.scaled == ["sourceToTarget 2 → 4 members", "targetToSource 2 → 4 members"]
    assert change.needs_restart == []
    assert len(plan(change.config)) == 8


def test_a_directions_own_replica_count_scales_that_direction_only():
    wanted = with_(BOTH, "replication.targetToSource.replicaCount", 1)

    change = compare(parse_config(BOTH), parse_config(wanted))

    assert change.scaled == ["targetToSource 2 → 1 members"]
    assert [m.name for m in plan(change.config)] == [
        "sourceToTarget-0", "sourceToTarget-1", "targetToSource-0"]


def test_any_other_changed_setting_is_named_and_left_as_it_runs():
    wanted = with_(with_(BOTH, "consumer.fetchMaxBytes", 10485760), "replicaCount", 3)

    change = compare(parse_config(BOTH), parse_config(wanted))

    assert change.needs_restart == ["consumer.fetchMaxBytes"]
    assert change.config.consumer.fetch_max_bytes == parse_config(BOTH).consumer.fetch_max_bytes
    assert change.config.replica_count == 3


def test_a_changed_password_is_named_without_its_value(tmp_path, caplog):
    running = with_(BOTH, "targetKafka", {"bootstrapServers": "kafka-warehouse:9092",
                                          "securityProtocol": "SASL_PLAINTEXT",
                                          "saslMechanism": "PLAIN", "saslUsername": "replicator",
                                          "saslPassword": "old-secret"})
    path, watched = config_file(tmp_path, running)
    path.write_text(yaml.safe_dump(with_(running, "targetKafka.saslPassword", "new-secret")))

    with caplog.at_level(logging.INFO, logger="cluster.reload"):
        change = watched.check()

    assert change.needs_restart == ["targetKafka.saslPassword"]
    assert "targetKafka.saslPassword changed" in caplog.text and "restart" in caplog.text
    assert "old-secret" not in caplog.text and "new-secret" not in caplog.text


def test_an_unchanged_file_is_not_read_again_unless_asked(tmp_path, caplog):
    _, watched = config_file(tmp_path, BOTH)

    assert watched.check() is None
    with caplog.at_level(logging.INFO, logger="cluster.reload"):
        asked = watched.check(asked=True)

    assert asked.scaled == [] and asked.needs_restart == []
    assert "holds the config that runs; nothing to do" in caplog.text


def test_an_invalid_file_is_logged_with_the_field_and_the_running_config_is_kept(tmp_path, caplog):
    path, watched = config_file(tmp_path, BOTH)
    path.write_text(yaml.safe_dump({**BOTH, "replicaCount": -1}))

    with caplog.at_level(logging.INFO, logger="cluster.reload"):
        assert watched.check() is None

    assert "replicaCount" in caplog.text and "keeps running on the config it has" in caplog.text
    assert watched.running.replica_count == 2
    path.write_text(yaml.safe_dump({**BOTH, "replicaCount": 3}))  # fixed: applied
    assert watched.check().scaled == ["sourceToTarget 2 → 3 members", "targetToSource 2 → 3 members"]


def test_a_half_written_file_is_ignored_until_it_is_whole(tmp_path, caplog):
    path, watched = config_file(tmp_path, BOTH)
    whole = yaml.safe_dump({**BOTH, "replicaCount": 1})
    path.write_text(whole[: len(whole) // 3])

    with caplog.at_level(logging.ERROR, logger="cluster.reload"):
        assert watched.check() is None
    path.write_text(whole)

    assert caplog.records and watched.check().scaled[0] == "sourceToTarget 2 → 1 members"
