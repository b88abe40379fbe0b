"""The words the existing chart's runbook greps a replicator's output for, in every mode:
`assignment`, `rebalance` (grep -i), `Auto commit`, `AUTO_OFFSET_RESET`.

`kafka-replicator replicate` runs as operators run it, its output captured; a second member
(in this process) joins its group and leaves it, so the first lives through two rebalances.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass

import pytest
import yaml

from kafka_support import count, create_topic, flow_for, produce, running, wait_until

pytestmark = pytest.mark.kafka

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = {"at-least-once": False, "exactlyOnce": True}


@dataclass
class Output:
    """What the first member printed: before the second member joined, and in all."""

    before_join: str
    whole: str


@pytest.fixture(scope="module", params=sorted(MODES))
def output(request, sandbox, tmp_path_factory) -> Output:
    tmp = tmp_path_factory.mktemp("runbook")
    name = f"runbook-{request.param.lower()}-{os.getpid()}"
    create_topic(sandbox.source, name, partitions=2)
    produce(sandbox.source, name, [(i % 2, b"k", b"v%d" % i, [], None) for i in range(100)])
    group = {"sourceToTarget": {"groupId": name, "autoCommitIntervalMs": 200,
                                "sessionTimeoutMs": 6000, "heartbeatIntervalMs": 500}}
    route = {"sourceToTarget": {"topics": [{"sourceTopicName": name}],
                                "exactlyOnce": MODES[request.param]}}
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(sandbox.config(consumerGroup=group, replication=route)))
    log = tmp / "replicate.log"
    with open(log, "w") as out:
        first = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "replicate", "--config", str(config),
             "--direction", "sourceToTarget"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: count(sandbox.target, name) == 100, 60, what="the records copied")
        wait_until(lambda: "Auto commit of offsets" in log.read_text(), 30, what="a commit")
        before_join = log.read_text()
        with running(flow_for(sandbox, consumerGroup=group, replication=route)) as second:
            wait_until(lambda: second.health().assigned, 60, what="the second member's partition")
        wait_until(lambda: rebalances(log.read_text()) >= rebalances(before_join) + 2, 30,
                   what="the first member's rebalances: the second joining, then leaving")
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    return Output(before_join, log.read_text())


def rebalances(text: str) -> int:
    return len(re.findall(r"(?i)rebalance", text))


def grep(text: str, word: str, ignore_case: bool = False) -> list[str]:
    return [line for line in text.splitlines()
            if re.search(re.escape(word), line, re.IGNORECASE if ignore_case else 0)]


def test_the_assignment_is_logged(output):
    assert grep(output.whole, "partition assignment"), output.whole


def test_every_rebalance_a_member_lives_through_is_logged_at_info(output):
    after_join = output.whole[len(output.before_join):]
    lines = grep(after_join, "rebalance", ignore_case=True)
    assert len(lines) >= 2 and all(" INFO " in line for line in lines), after_join


def test_commits_are_logged_as_auto_commit(output):
    """Once when it starts (what it will do) and once it commits (that it does)."""
    assert grep(output.whole, "Auto commit enabled"), output.whole
    assert grep(output.whole, "Auto commit of offsets"), output.whole


def test_the_offset_reset_is_logged(output):
    assert grep(output.whole, "AUTO_OFFSET_RESET=earliest"), output.whole
