"""`kafka-replicator check --connect` against the real sandbox."""

from __future__ import annotations

import socket

import pytest
import yaml

from kafka_support import create_topic
from cluster.cli import main

pytestmark = pytest.mark.kafka


def write(tmp_path, config: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def one_way(sandbox, topic, **clusters):
    return sandbox.config(replication={"sourceToTarget": {"topics": [{"sourceTopicName": topic}]}},
                          **clusters)


def test_check_connect_reaches_both_clusters_and_finds_the_source_topics(sandbox, name, tmp_path, capsys):
    create_topic(sandbox.source, name, partitions=1)
    assert main(["check", "--connect", "--config", write(tmp_path, one_way(sandbox, name))]) == 0
    out = capsys.readouterr().out
    assert f"source cluster {sandbox.source}: reachable" in out
    assert f"target cluster {sandbox.target}: reachable" in out
    assert "all source topics exist" in out


def test_check_connect_names_the_topics_the_patterns_select_now(sandbox, name, tmp_path, capsys):
    for topic in (f"{name}-a", f"{name}-b", f"{name}-test"):
        create_topic(sandbox.source, topic, partitions=1)
    config = sandbox.config(replication={"sourceToTarget": {
        "include": [f"{name}-.*"], "exclude": [".*-test"]}})
    assert main(["check", "--connect", "--config", write(tmp_path, config)]) == 0
    assert (f"sourceToTarget: include/exclude select 2 topics on the source cluster now: "
            f"{name}-a, {name}-b") in capsys.readouterr().out


def test_check_connect_names_a_missing_source_topic(sandbox, name, tmp_path, capsys):
    assert main(["check", "--connect", "--config", write(tmp_path, one_way(sandbox, name))]) == 1
    assert f"sourceToTarget: '{name}' on the source cluster" in capsys.readouterr().err


def test_check_connect_names_the_unreachable_cluster(sandbox, name, tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    config = one_way(sandbox, name, targetKafka={"bootstrapServers": closed})
    assert main(["check", "--connect", "--config", write(tmp_path, config)]) == 4
    assert f"error: target cluster ({closed}): no broker accepted the connection" in capsys.readouterr().err
