"""Where the controllers run on a Ray cluster laid out like the chart's: a head with no CPUs,
and workers that advertise kafka-replicator-<direction>. Two real Ray nodes on 127.0.0.1
(workbench.chaos.RayNodes) and the real sandbox brokers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml

from kafka_support import create_topic, produce, read_all, wait_until
from workbench.chaos import LOCAL_RAY_ENV, RayNodes

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_controller_started_before_any_worker_moves_onto_the_first_worker_with_its_pin(
        sandbox, name, tmp_path):
    """A driver that joins before the workers (a chart install, where the head is up first)
    starts its controller where it fits: on the head. Once a worker with the direction's pin
    joins, the controller moves there, and the members copy with it."""
    create_topic(sandbox.source, name, partitions=2)
    config = sandbox.config(
        consumerGroup={"sourceToTarget": {"groupId": f"{name}-s2t"}},
        replication={"sourceToTarget": {"topics": [{"sourceTopicName": name}]}},
        replicaCount=1, shutdownGracePeriodSeconds=10)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    nodes = RayNodes(tmp_path, {**os.environ, **LOCAL_RAY_ENV}, head_cpus=0)
    driver = None
    try:
        nodes.start(worker=False)
        with open(tmp_path / "driver.log", "w") as out:
            driver = subprocess.Popen(
                [sys.executable, "-m", "cluster.driver", "--config", str(config_file), "--address", nodes.address],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **LOCAL_RAY_ENV, "PYTHONPATH": REPO},
                cwd=REPO)
        placed = lambda: {node for _, node in nodes.actor_pids("Controller")}  # noqa: E731
        wait_until(lambda: placed() == {"head"}, 90, interval=1, what="the controller on the head")

        nodes.start_worker(resources={"kafka-replicator-sourceToTarget": 1})
        wait_until(lambda: placed() == {"worker"}, 90, interval=1, what="the controller on the worker")
        log = (tmp_path / "driver.log").read_text()
        assert "a node with kafka-replicator-sourceToTarget has joined: moving controller-sourceToTarget" in log, log

        produce(sandbox.source, name, [(i % 2, None, f"r{i}".encode(), None, None) for i in range(100)])
        wait_until(lambda: sum(len(r) for r in read_all(sandbox.target, name).values()) >= 100, 90,
                   interval=1, what="the member, on the worker, to copy")
    finally:
        if driver is not None:
            driver.send_signal(signal.SIGTERM)
            try:
                driver.wait(timeout=60)
            except subprocess.TimeoutExpired:
                driver.kill()
        nodes.stop()
    assert driver.returncode == 0, (tmp_path / "driver.log").read_text()
