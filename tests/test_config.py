"""The config file: the chart's values shape, clear errors, secrets kept secret."""

import re
import textwrap
from pathlib import Path

import pytest

from cluster.cli import main
from replicator.config import load_config, parse_config
from replicator.errors import ConfigError

MINIMAL = {
    "sourceKafka": {"bootstrapServers": "kafka:9092"},
    "targetKafka": {"bootstrapServers": "kafka-warehouse:9092"},
    "replication": {"sourceToTarget": {"topics": [{"sourceTopicName": "damage"}]}},
}


def with_(**changes):
    return {**MINIMAL, **changes}


def error_of(data) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return str(caught.value)


def test_the_existing_charts_values_load_as_they_are(tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(textwrap.dedent("""
        sourceKafka: {bootstrapServers: "kafka:9092"}
        targetKafka: {bootstrapServers: "kafka-warehouse:9092"}
        consumerGroup:
          sourceToTarget: "kafka-replicator-s2t-v4"
          targetToSource:
            groupId: "kafka-replicator-t2s-prod"
            sessionTimeoutMs: 45000
            heartbeatIntervalMs: 3000
            maxPollRecords: 100
            maxPollIntervalMs: 600000
            autoOffsetReset: "latest"
            enableAutoCommit: false
            autoCommitIntervalMs: 5000
        replicaCount: 3
        consumer: {autoOffsetReset: "earliest"}
        resources: {limits: {cpu: 1000m, memory: 1Gi}, requests: {cpu: 200m, memory: 256Mi}}
        replication:
          sourceToTarget:
            enabled: true
            topics:
              - {sourceTopicName: "damage", targetTopicName: "damage"}
              - {sourceTopicName: "events-sensor", targetTopicName: "events-sensor"}
          targetToSource:
            enabled: true
            topics:
              - {sourceTopicName: "warehouse-events", targetTopicName: "warehouse-events"}
    """))
    config = load_config(path)
    assert config.group("sourceToTarget").group_id == "kafka-replicator-s2t-v4"
    assert config.group("targetToSource").max_poll_records == 100
    assert config.group("targetToSource").enable_auto_commit is False
    assert config.offset_reset("targetToSource") == "latest"
    assert config.offset_reset("sourceToTarget") == "earliest"
    assert config.members("sourceToTarget") == 3
    assert [r.target for r in config.direction("sourceToTarget").topics] == ["damage", "events-sensor"]
    assert config.resources.requests.memory == "256Mi"


def test_the_example_configs_are_valid():
    examples = sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"))
    assert examples
    for example in examples:
        load_config(example)


def test_target_topic_defaults_to_the_source_topic():
    config = parse_config(MINIMAL)
    assert config.direction("sourceToTarget").topics[0].target == "damage"


def test_a_direction_override_of_replica_count_wins():
    data = with_(replicaCount=3, replication={"sourceToTarget": {
        "replicaCount": 1, "topics": [{"sourceTopicName": "a"}]}})
    assert parse_config(data).members("sourceToTarget") == 1


def test_an_unknown_key_is_named_with_the_nearest_valid_one():
    data = with_(replication={"sourceToTarget": {"topics": [{"sourceTopicNme": "a"}]}})
    message = error_of(data)
    assert "replication.sourceToTarget.topics.0.sourceTopicNme: unknown key" in message
    assert "did you mean 'sourceTopicName'" in message


def test_an_unknown_top_level_key_is_named():
    assert "replicaCont: unknown key; did you mean 'replicaCount'" in error_of(with_(replicaCont=2))


def test_a_topic_without_source_topic_name_is_rejected():
    data = with_(replication={"sourceToTarget": {"topics": [{"targetTopicName": "a"}]}})
    assert "replication.sourceToTarget.topics.0.sourceTopicName: required field is missing" in error_of(data)


def test_an_unknown_offset_reset_names_the_choices():
    message = error_of(with_(consumer={"autoOffsetReset": "newest"}))
    assert "consumer.autoOffsetReset" in message and "'earliest' or 'latest'" in message


def test_a_negative_replica_count_is_rejected():
    assert "replicaCount" in error_of(with_(replicaCount=-1))


def test_an_enabled_direction_needs_topics():
    message = error_of(with_(replication={"targetToSource": {"enabled": True}}))
    assert "replication.targetToSource is enabled but lists no topics" in message


def with_sync(**sync):
    return with_(replication={"sourceToTarget": {"topics": [{"sourceTopicName": "damage"}],
                                                 "syncGroupOffsets": sync}})


def test_a_group_offset_sync_without_groups_names_the_key_and_the_fix():
    message = error_of(with_sync(enabled=True))
    assert ("replication.sourceToTarget.syncGroupOffsets: enabled is true but no groups are named; "
            "add groups: [a group name or a regular expression") in message


def test_a_group_pattern_that_is_not_a_regular_expression_is_named():
    message = error_of(with_sync(enabled=True, groups=["orders-(eu"]))
    assert "groups: 'orders-(eu' is not a valid regular expression" in message


def test_acl_sync_is_off_by_default_and_runs_every_minute_when_on():
    config = with_(replication={"sourceToTarget": {"topics": [{"sourceTopicName": "damage"}],
                                                   "syncAcls": {"enabled": True}}})
    assert not parse_config(with_()).direction("sourceToTarget").sync_acls.enabled
    assert parse_config(config).direction("sourceToTarget").sync_acls.interval_seconds == 60


def test_an_acl_sync_interval_below_a_second_is_named():
    message = error_of(with_(replication={"sourceToTarget": {"topics": [{"sourceTopicName": "damage"}],
                                                             "syncAcls": {"intervalSeconds": 0.5}}}))
    assert "replication.sourceToTarget.syncAcls.intervalSeconds: Input should be greater than or equal to 1" in message


def test_sasl_needs_a_mechanism_and_credentials():
    data = with_(sourceKafka={"bootstrapServers": "k:9092", "securityProtocol": "SASL_SSL"})
    assert "needs saslMechanism" in error_of(data)


def test_the_password_never_appears_in_errors_or_repr():
    cluster = {"bootstrapServers": "k:9092", "securityProtocol": "SASL_PLAINTEXT",
               "saslMechanism": "PLAIN", "saslUsername": "u", "saslPassword": "s3cr3t-pw"}
    config = parse_config(with_(sourceKafka=cluster))
    assert "s3cr3t-pw" not in repr(config) and "s3cr3t-pw" not in str(config)
    broken = with_(sourceKafka={**cluster, "saslMechanism": "NOPE"})
    assert "s3cr3t-pw" not in error_of(broken)


def test_a_password_can_come_from_the_environment(monkeypatch):
    cluster = {"bootstrapServers": "k:9092", "securityProtocol": "SASL_PLAINTEXT",
               "saslMechanism": "SCRAM-SHA-512", "saslUsername": "u", "saslPasswordEnv": "PW"}
    config = parse_config(with_(sourceKafka=cluster))
    monkeypatch.setenv("PW", "from-env")
    assert config.source_kafka.resolved_sasl_password() == "from-env"
    monkeypatch.delenv("PW")
    with pytest.raises(ConfigError, match="environment variable PW is not set"):
        config.source_kafka.resolved_sasl_password()


def test_chart_only_keys_are_ignored():
    config = parse_config(with_(image={"repository": "x"}, head={"resources": {}}))
    assert config.members("sourceToTarget") == 1


def test_the_charts_secret_references_in_a_cluster_block_are_ignored():
    cluster = {"bootstrapServers": "k:9092", "tlsSecret": {"name": "tls"},
               "saslPasswordSecret": {"name": "s", "key": "password"}}
    assert parse_config(with_(sourceKafka=cluster)).source_kafka.bootstrap_servers == "k:9092"


def test_check_exits_3_with_the_error_on_an_invalid_file(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("sourceKafka: {bootstrapServers: k:9092}\n")
    assert main(["check", "--config", str(path)]) == 3
    err = capsys.readouterr().err
    assert "targetKafka: required field is missing" in err


def test_check_exits_0_on_a_valid_file(tmp_path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text("sourceKafka: {bootstrapServers: k:9092}\ntargetKafka: {bootstrapServers: t:9092}\n"
                    "replication: {sourceToTarget: {topics: [{sourceTopicName: a}]}}\n")
    assert main(["check", "--config", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_the_readme_documents_every_config_key():
    from replicator.config import ReplicatorConfig, _model_of

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    reference = readme[readme.index("## Configuration"):readme.index("## Commands")]

    def keys(model):
        for name, field in model.model_fields.items():
            yield field.alias or name
            nested = _model_of(field.annotation)
            if nested is not None:
                yield from keys(nested)

    missing = sorted({key for key in keys(ReplicatorConfig)
                      if not re.search(rf"[`.]{key}[`.,\[]", reference)})
    assert missing == []


@pytest.mark.parametrize("servers", ["not a host list!!", "kafka", "kafka:99999", "kafka:9092,,k2:9092", "kafka:port"])
def test_bootstrap_servers_must_be_a_host_port_list(servers):
    error = error_of(with_(sourceKafka={"bootstrapServers": servers}))
    assert f"sourceKafka.bootstrapServers: {servers!r} is not a comma-separated list of host:port" in error


@pytest.mark.parametrize("servers", ["kafka-0.kafka:9092,kafka-1.kafka:9092", "10.0.0.1:9092", "[::1]:9092",
                                     "kafka_1:9092, kafka_2:9093"])
def test_bootstrap_servers_take_names_addresses_and_lists(servers):
    assert parse_config(with_(sourceKafka={"bootstrapServers": servers})).source_kafka.bootstrap_servers == servers


@pytest.mark.parametrize("topic", ["has space", "a/b", ".", "..", "x" * 250, "ünïcode"])
def test_a_topic_name_kafka_refuses_is_refused_naming_its_key(topic):
    error = error_of(with_(replication={"sourceToTarget": {"topics": [{"sourceTopicName": "ok",
                                                                         "targetTopicName": topic}]}}))
    assert f"replication.sourceToTarget.topics.0.targetTopicName: {topic!r} is not a topic name Kafka accepts" in error


def test_a_topic_copied_onto_itself_on_the_same_cluster_is_refused():
    same = {"bootstrapServers": "kafka:9092"}
    error = error_of(with_(targetKafka={"bootstrapServers": "KAFKA:9092"}, sourceKafka=same))
    assert "topic 'damage' would be copied onto itself" in error and "targetTopicName" in error
    renamed = {"sourceToTarget": {"topics": [{"sourceTopicName": "damage", "targetTopicName": "damage-copy"}]}}
    assert parse_config(with_(targetKafka=same, replication=renamed))


def test_two_sources_copied_into_one_target_is_a_warning_not_an_error():
    config = parse_config(with_(replication={"sourceToTarget": {"topics": [
        {"sourceTopicName": "a", "targetTopicName": "all"}, {"sourceTopicName": "b", "targetTopicName": "all"}]}}))
    assert config.warnings() == ["replication.sourceToTarget: 'a' and 'b' are copied into the same target "
                                 "topic 'all', where their records mix (fine if meant)"]
    assert parse_config(MINIMAL).warnings() == []


def test_check_prints_the_warnings(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent("""
        sourceKafka: {bootstrapServers: "kafka:9092"}
        targetKafka: {bootstrapServers: "kafka-warehouse:9092"}
        replication:
          sourceToTarget:
            topics: [{sourceTopicName: a, targetTopicName: all}, {sourceTopicName: b, targetTopicName: all}]
        """))
    assert main(["check", "--config", str(path)]) == 0
    assert "warning: replication.sourceToTarget: 'a' and 'b' are copied into the same" in capsys.readouterr().out


def test_keys_without_effect_are_accepted_and_warned_about_when_set():
    config = parse_config(with_(consumerGroup={"sourceToTarget": {"groupId": "g", "maxPollRecords": 100}},
                                producer={"lingerMs": 0, "deliveryTimeoutMs": 30000}))
    assert [w.split(":")[0] for w in config.warnings()] == [
        "consumerGroup.sourceToTarget.maxPollRecords has no effect", "producer.lingerMs has no effect",
        "producer.deliveryTimeoutMs has no effect"]


def test_poll_timeout_ms_is_gone():
    assert "consumer.pollTimeoutMs: unknown key" in error_of(with_(consumer={"pollTimeoutMs": 500}))


def test_the_example_configs_warn_about_nothing():
    for example in sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml")):
        assert load_config(example).warnings() == [], example


def with_patterns(**direction):
    return with_(replication={"sourceToTarget": direction})


def test_a_direction_may_choose_its_topics_by_pattern_alone():
    direction = parse_config(with_patterns(include=["orders-.*"])).direction("sourceToTarget")
    assert direction.include == ["orders-.*"] and direction.topic_refresh_seconds == 10.0
    assert direction.target_topic_prefix == ""


def test_an_include_pattern_that_is_not_a_regular_expression_is_named():
    message = error_of(with_patterns(include=["orders-(eu"]))
    assert "replication.sourceToTarget.include: 'orders-(eu' is not a valid regular expression" in message


def test_an_exclude_pattern_that_is_not_a_regular_expression_is_named():
    message = error_of(with_patterns(include=[".*"], exclude=["*-test"]))
    assert "replication.sourceToTarget.exclude: '*-test' is not a valid regular expression" in message


def test_a_target_topic_prefix_must_begin_a_topic_name():
    message = error_of(with_patterns(include=[".*"], targetTopicPrefix="dc 1/"))
    assert "replication.sourceToTarget.targetTopicPrefix: 'dc 1/' cannot begin a topic name" in message


def test_patterns_on_one_cluster_need_a_target_topic_prefix():
    data = with_(targetKafka=MINIMAL["sourceKafka"], replication={"sourceToTarget": {"include": ["orders-.*"]}})
    assert "would be copied onto themselves" in error_of(data) and "set targetTopicPrefix" in error_of(data)
    parse_config({**data, "replication": {"sourceToTarget": {"include": ["orders-.*"], "targetTopicPrefix": "copy."}}})


def test_a_pattern_that_matches_the_replicators_own_topics_is_warned_about():
    warnings = parse_config(with_patterns(include=["kafka-.*"])).warnings()
    assert ("replication.sourceToTarget.include: 'kafka-.*' matches the replicator's own topics "
            "(kafka-replicator-producers, kafka-replicator-offsets, kafka-replicator-acls); they are never "
            "replicated") in warnings[0]


def test_an_explicit_topic_also_excluded_is_warned_about():
    data = with_patterns(topics=[{"sourceTopicName": "orders-test"}], include=["orders-.*"], exclude=[".*-test"])
    assert parse_config(data).warnings() == [
        "replication.sourceToTarget.exclude: '.*-test' matches 'orders-test', which topics[] lists: it is "
        "replicated anyway (an explicit topic wins over patterns); remove one of the two"]


def test_the_topic_refresh_must_be_positive():
    assert "replication.sourceToTarget.topicRefreshSeconds" in error_of(with_patterns(include=["a"], topicRefreshSeconds=0))


def test_a_topic_config_exclusion_that_is_not_a_regular_expression_is_named():
    message = error_of(with_patterns(include=["a"], syncTopicConfigs={"enabled": True, "exclude": ["segment.("]}))
    assert "replication.sourceToTarget.syncTopicConfigs.exclude: 'segment.(' is not a valid regular expression" in message


def test_topic_configs_are_synced_only_where_the_replicator_may_change_target_topics():
    message = error_of(with_patterns(include=["a"], createTopics=False, syncTopicConfigs={"enabled": True}))
    assert "syncTopicConfigs.enabled needs createTopics: true" in message
