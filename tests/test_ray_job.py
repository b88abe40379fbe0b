"""`ray job submit` as the README shows it, word for word, on a Ray cluster whose nodes have
Ray and nothing of ours: the job brings what it needs, replicates, logs what the runbook
greps, stops gracefully, resumes without a gap, and fails plainly on a bad config."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from kafka_support import committed, count, create_topic, essence, produce, read_all, wait_until
from ray_job_support import node_python, ray_cli, start_head

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
GRACE = 10


def readme_line(prefix: str) -> str:
    lines = [line for line in README.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"the README should show one `{prefix}...` line: {lines}"
    return lines[0].split("  #")[0].strip()


SUBMIT = readme_line("ray job submit ")
LOGS = readme_line("ray job logs ")
STOP = readme_line("ray job stop ")


def command(line: str, submission: str | None = None) -> list[str]:
    if submission:
        line = line.replace("<submission id>", submission)
    argv = shlex.split(line)
    assert argv[0] == "ray"
    return [ray_cli(), *argv[1:]]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    python = node_python()
    lacking = subprocess.run([str(python), "-c", "import kafka"], capture_output=True, text=True)
    assert "No module named 'kafka'" in lacking.stderr, "the node's Python must not have kafka-python"
    head = start_head(python, tmp_path_factory.mktemp("ray-head") / "head.log")
    yield head
    head.stop()


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A user's clone: the repository's files, and what a working copy gathers besides (a
    virtual environment, bytecode, caches, benchmark output)."""
    root = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes((REPO / name).read_bytes())
    for junk, content in {".venv/lib/python3.11/site-packages/big.bin": os.urandom(5_000_000),
                          "replicator/__pycache__/flow.cpython-311.pyc": b"bytecode",
                          ".pytest_cache/v/cache/lastfailed": b"{}",
                          "bench-results/run.json": b"{}"}.items():
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_bytes(content)
    return root


@pytest.fixture(scope="module")
def route(sandbox, clone):
    """A topic with records, and configs/my.yaml replicating it."""
    prefix = f"job-{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}-orders"
    create_topic(sandbox.source, topic, partitions=3)
    produce(sandbox.source, topic, records(0, 3000))
    config = sandbox.config(
        consumerGroup={"sourceToTarget": f"{prefix}-s2t"}, replicaCount=1,
        shutdownGracePeriodSeconds=GRACE,
        replication={"sourceToTarget": {"topics": [{"sourceTopicName": topic}]},
                     "targetToSource": {"enabled": False}})
    (clone / "configs" / "my.yaml").write_text(yaml.safe_dump(config))
    return topic, f"{prefix}-s2t"


def records(start: int, end: int):
    return [(i % 3, f"key-{i}".encode(), f"value-{i}".encode(), [("n", str(i).encode())], None)
            for i in range(start, end)]


def ray(head, argv: list[str], cwd: Path, token: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=head.client_env(token), capture_output=True, text=True,
                          timeout=timeout)


def submit(head, clone, config: str = "configs/my.yaml") -> str:
    result = ray(head, command(SUBMIT.replace("configs/my.yaml", config)), clone)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return re.search(r"Job '(raysubmit_\w+)' submitted successfully", out).group(1)


def status(head, clone, job: str) -> str:
    """The job's status as `ray job status` words it."""
    out = ray(head, [ray_cli(), "job", "status", job], clone)
    text = out.stdout + out.stderr
    for ended, words in (("SUCCEEDED", "' succeeded"), ("STOPPED", "' was stopped"), ("FAILED", "' failed")):
        if words in text:
            return ended
    found = re.search(r"Status for job '[^']+': (\w+)", text)
    return found.group(1) if found else f"unknown ({text[-300:]})"


def wait_status(head, clone, job: str, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (seen := status(head, clone, job)) != wanted:
        assert time.monotonic() < deadline, f"job {job} is {seen} after {timeout:.0f}s, not {wanted}"
        time.sleep(2)


def logs(head, clone, job: str) -> str:
    """`ray job logs` of a running job (the README's --follow would wait for its end)."""
    out = ray(head, [ray_cli(), "job", "logs", job], clone)
    return out.stdout + out.stderr


def same_records(sandbox, topic: str) -> bool:
    def essences(bootstrap):
        return {p: [essence(r) for r in rs] for p, rs in read_all(bootstrap, topic).items()}
    return essences(sandbox.target) == essences(sandbox.source)


def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return consumer.end_offsets([TopicPartition(topic, p) for p in range(3)])
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def job(head, clone, route, sandbox):
    """The README's submission, running."""
    submission = submit(head, clone)
    wait_status(head, clone, submission, "RUNNING", 300)
    yield submission
    if status(head, clone, submission) == "RUNNING":
        ray(head, command(STOP, submission), clone)


def test_the_readmes_job_replicates_on_ray_nodes_that_lack_the_package(job, route, sandbox):
    topic, _ = route
    wait_until(lambda: count(sandbox.target, topic) >= 3000, 240, interval=2, what="3000 records on the target")
    assert same_records(sandbox, topic), "lost, duplicated or altered records"


def test_the_upload_holds_the_replicator_and_leaves_out_venvs_tests_caches_and_results(job, head):
    (upload,) = head.uploads()
    files = [p.relative_to(upload) for p in upload.rglob("*") if p.is_file()]
    tops = {f.parts[0] for f in files}
    assert {"replicator", "cluster", "configs", "requirements.txt"} <= tops, tops
    for left_out in (".venv", "tests", "charts", "dev", ".pytest_cache", "bench-results", ".git", "README.md"):
        assert left_out not in tops, f"{left_out} was uploaded"
    assert not [f for f in files if "__pycache__" in f.parts or "results" in f.parts], files
    size = sum((upload / f).stat().st_size for f in files)
    print(f"the working directory uploaded: {len(files)} files, {size / 1024:.0f} KiB")
    assert size < 2 * 1024**2


def test_ray_job_logs_show_the_lines_the_runbook_greps(job, head, clone, route, sandbox):
    topic, _ = route
    wait_until(lambda: count(sandbox.target, topic) >= 3000, 240, interval=2, what="the copy")
    text = logs(head, clone, job)
    for words in ("starting 1 members", "partition assignment", "Auto commit", "AUTO_OFFSET_RESET"):
        assert words in text, f"{words!r} is not in the job's logs:\n{text[-3000:]}"


def test_ray_job_stop_commits_what_was_acknowledged_and_a_new_job_resumes_without_a_gap(
        job, head, clone, route, sandbox):
    topic, group = route
    wait_until(lambda: count(sandbox.target, topic) >= 3000, 240, interval=2, what="the copy")
    started = time.monotonic()
    stopped = ray(head, command(STOP, job), clone)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    wait_status(head, clone, job, "STOPPED", 2 * GRACE)
    print(f"ray job stop took {time.monotonic() - started:.1f} s")
    ended = ray(head, command(LOGS, job), clone, timeout=60)
    assert "SIGTERM received" in ended.stdout and "all members stopped" in ended.stdout, ended.stdout[-3000:]
    ends = end_offsets(sandbox.source, topic)
    assert committed(sandbox.source, group) == ends, "every acknowledged offset committed at the stop"

    produce(sandbox.source, topic, records(3000, 4000))
    again = submit(head, clone)
    try:
        wait_until(lambda: count(sandbox.target, topic) >= 4000, 240, interval=2, what="4000 records")
        time.sleep(3)  # a duplicate would arrive within this
        assert same_records(sandbox, topic), "the resubmitted job left a gap or copied twice"
    finally:
        ray(head, command(STOP, again), clone)


def test_a_job_with_a_bad_config_fails_and_its_logs_name_the_key(head, clone, sandbox):
    (clone / "configs" / "bad.yaml").write_text(yaml.safe_dump(sandbox.config(
        consumer={"autoOffsetReset": "sometimes"},
        replication={"sourceToTarget": {"topics": [{"sourceTopicName": "orders"}]}})))
    submission = submit(head, clone, "configs/bad.yaml")
    wait_status(head, clone, submission, "FAILED", 120)
    text = ray(head, command(LOGS, submission), clone, timeout=60).stdout
    ours = text[text.index("Running entrypoint for job"):].splitlines()[1:]
    assert ours[0] == "error: configs/bad.yaml is invalid:", text
    assert ours[1] == "  - consumer.autoOffsetReset: Input should be 'earliest' or 'latest'", text
    assert "Traceback" not in text, text


def test_a_submission_without_the_clusters_token_is_refused(head, clone):
    refused = ray(head, command(SUBMIT), clone, token=False)
    assert refused.returncode != 0
    assert "RAY_AUTH_TOKEN" in refused.stdout + refused.stderr, "Ray says which token is missing"
