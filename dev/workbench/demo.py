"""`kafka-replicator demo`: the whole replicator on one machine, proven at the end.

Starts the sandbox (two real Kafka clusters), creates the example topics, runs the
replicator on a local Ray cluster with two members per direction, produces sample
traffic and shows a live view. Then it checks that every produced record arrived in
the same partition of the other cluster, in order and intact. Ctrl-C stops it all:
the replicator, Ray, and the brokers it started.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import ray
import yaml
from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from cluster.loopback import on_loopback
from cluster.plan import NAMESPACE, plan
from cluster.supervisor import DirectionStatus, Supervisor
from replicator.config import ReplicatorConfig, parse_config
from replicator.errors import ReplicatorError
from replicator.offsets import describe_groups

from .sandbox import Sandbox, SandboxInfo
from .traffic import PartitionCheck, Stream, Traffic, check_stream

MEMBERS = 2
VIEW_SECONDS = 5.0
START_SECONDS = 90.0
CATCH_UP_SECONDS = 120.0
GRACE_SECONDS = 15.0
# The members mostly wait on the network: the demo gives Ray enough logical CPUs
# for four of them (0.5 each) even on a two-core laptop.
RAY_CPUS = max(4, os.cpu_count() or 1)
OBJECT_STORE_BYTES = 200 * 1024**2  # the replicator hardly uses Ray's object store


class DemoFailed(ReplicatorError):
    """The demo could not get to its check."""


def say(*parts: object) -> None:
    print(*parts, flush=True)


def run(duration: float = 60.0, rate: float = 250.0, state_dir: Path | None = None) -> int:
    """0 when every record arrived exactly where it should, 1 if not, 130 on Ctrl-C."""
    # The demo reports what its own Kafka clients achieved; their retries are noise here.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # Ctrl-C is how the demo ends early, even when started from a shell that made its
    # background jobs ignore SIGINT (a non-interactive shell's `demo &`, some CI runners).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    cleanup = ExitStack()
    try:
        return _demo(cleanup, duration, rate, state_dir)
    except KeyboardInterrupt:
        say("\nInterrupted: stopping everything the demo started ...")
        return 130
    finally:
        # A second Ctrl-C must not cut the clean-up short: the brokers would outlive us.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            cleanup.close()
        finally:
            signal.signal(signal.SIGINT, previous)


def _demo(cleanup: ExitStack, duration: float, rate: float, state_dir: Path | None) -> int:
    info, directory = _sandbox(cleanup, state_dir)
    streams = _streams(info)
    for stream in streams:
        _create_topic(stream.origin, stream.topic, stream.partitions)
    say("Topics: " + "; ".join(
        f"{s.topic} ({s.partitions} partitions) {_side(info, s.origin)} → {_side(info, s.destination)}"
        for s in streams))
    settings = _settings(info)
    config = parse_config(settings, origin="the demo's config")
    config_file = directory / "demo-config.yaml"
    config_file.write_text(yaml.safe_dump(settings, sort_keys=False))

    _wait_for_group_coordinators(config)

    say("Starting a local Ray cluster ...")
    # Ray starts its processes with SIGINT blocked: Ctrl-C interrupts only this process,
    # which then stops the members before it stops Ray.
    # The node address too stays on loopback: Ray would take the machine's first interface
    # even when given 127.0.0.1 (cluster.loopback).
    with on_loopback():
        context = ray.init(address="local", namespace=NAMESPACE, num_cpus=RAY_CPUS,
                           object_store_memory=OBJECT_STORE_BYTES, include_dashboard=True,
                           dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
                           log_to_driver=True)
    cleanup.callback(ray.shutdown)
    dashboard = f"http://{context.dashboard_url}" if context.dashboard_url else None
    say(f"Ray dashboard: {dashboard or 'not running'}"
        + (" (sign in with the token that `ray get-auth-token` prints)"
           if dashboard and os.environ.get("RAY_AUTH_MODE") == "token" else ""))
    say(f"Prometheus metrics (ray_kafka_replicator_*): "
        f"http://127.0.0.1:{context.address_info['metrics_export_port']}/metrics")

    supervisor = Supervisor(config, NAMESPACE, log_level="WARNING")
    cleanup.callback(supervisor.stop, GRACE_SECONDS)
    supervisor.apply(plan(config))
    _wait_for_members(supervisor)
    say(f"Replicator running: {MEMBERS} members per direction. In another terminal: "
        f"kafka-replicator status --config {config_file}")

    traffic = Traffic(streams, rate, run_id=uuid.uuid4().hex[:12])
    say(f"Producing sample traffic for {duration:.0f}s at {rate:.0f} records/s (Ctrl-C stops the demo)")
    started = time.monotonic()
    traffic.start()
    try:
        while time.monotonic() - started < duration:
            time.sleep(min(VIEW_SECONDS, max(0.0, duration - (time.monotonic() - started))))
            _view(time.monotonic() - started, supervisor.poll())
    finally:
        traffic.stop()
    produced = sum(traffic.produced(stream.topic) for stream in streams)
    say(f"Traffic stopped: {produced} records produced ({traffic.failed} failed). "
        "Waiting for the replicator to commit everything ...")
    _wait_for_catch_up(config, supervisor, started)
    supervisor.stop(GRACE_SECONDS)

    say("Checking every produced record against the other cluster "
        "(per partition: key, value, timestamp, order):")
    checks = {stream.topic: check_stream(stream, traffic) for stream in streams}
    for stream in streams:
        _report(info, stream, checks[stream.topic])
    every = [check for partitions in checks.values() for check in partitions]
    if traffic.failed == 0 and all(check.exact for check in every):
        duplicates = sum(check.duplicates for check in every)
        say(f"All {produced} records arrived exactly where they should: same topic and "
            f"partition on the other cluster, same order, intact"
            + (f" ({duplicates} duplicates from at-least-once replays)." if duplicates else
               ", no duplicates."))
        code = 0
    else:
        say("FAILED: some records did not arrive where they should (see above).")
        code = 1
    if dashboard:
        say(f"Ray dashboard was at {dashboard} while the demo ran.")
    return code


def _sandbox(cleanup: ExitStack, state_dir: Path | None) -> tuple[SandboxInfo, Path]:
    if state_dir is None:
        directory = Path(tempfile.mkdtemp(prefix="kafka-replicator-demo-"))
        cleanup.callback(shutil.rmtree, directory, ignore_errors=True)
    else:
        directory = Path(state_dir).expanduser().resolve()
    sandbox = Sandbox(directory)
    # The clean-up runs last in, first out: this line is printed when all else has stopped.
    if all(cluster["running"] for cluster in sandbox.status().values()):
        say(f"Using the running Kafka sandbox in {directory}")
        cleanup.callback(say, f"Stopped: replicator, Ray. The sandbox in {directory} keeps running.")
    else:
        say(f"Starting two Kafka clusters (the sandbox) in {directory} ...")
        cleanup.callback(say, "Stopped: replicator, Ray, sandbox.")
        cleanup.callback(sandbox.down)
    info = sandbox.up()
    say(f"  source cluster {info.source.bootstrap_servers}, target cluster {info.target.bootstrap_servers}")
    return info, directory


def _streams(info: SandboxInfo) -> list[Stream]:
    source, target = info.source.bootstrap_servers, info.target.bootstrap_servers
    return [
        Stream("damage", source, target, 4, 0.25, _damage),
        Stream("events-sensor", source, target, 6, 0.5, _sensor_event),
        Stream("warehouse-events", target, source, 4, 0.25, _warehouse_event),
    ]


def _damage(chance: random.Random) -> tuple[str, dict]:
    claim = f"claim-{chance.randrange(1000):04d}"
    return claim, {"claim": claim, "kind": chance.choice(["hail", "collision", "glass", "flood"]),
                   "amountEur": round(chance.uniform(50, 5000), 2)}


def _sensor_event(chance: random.Random) -> tuple[str, dict]:
    sensor = f"sensor-{chance.randrange(64):02d}"
    return sensor, {"sensor": sensor, "temperatureC": round(chance.gauss(21, 3), 1),
                    "humidityPct": chance.randrange(30, 70)}


def _warehouse_event(chance: random.Random) -> tuple[str, dict]:
    order = f"order-{chance.randrange(5000)}"
    return order, {"order": order, "warehouse": chance.choice(["north", "south"]),
                   "event": chance.choice(["received", "picked", "packed", "shipped"])}


def _settings(info: SandboxInfo) -> dict:
    """The demo's config file, as a dict."""
    def routes(*topics: str) -> dict:
        return {"topics": [{"sourceTopicName": topic} for topic in topics]}

    return {
        "sourceKafka": {"bootstrapServers": info.source.bootstrap_servers},
        "targetKafka": {"bootstrapServers": info.target.bootstrap_servers},
        "consumerGroup": {"sourceToTarget": "kafka-replicator-demo-s2t",
                          "targetToSource": "kafka-replicator-demo-t2s"},
        "replicaCount": MEMBERS,
        "replication": {"sourceToTarget": routes("damage", "events-sensor"),
                        "targetToSource": routes("warehouse-events")},
        "shutdownGracePeriodSeconds": GRACE_SECONDS,
    }


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": partitions}}, wait_for_metadata=True)
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def _side(info: SandboxInfo, bootstrap: str) -> str:
    return "source" if bootstrap == info.source.bootstrap_servers else "target"


def _wait_for_group_coordinators(config: ReplicatorConfig) -> None:
    """New brokers create their offsets topic when a group first asks for its coordinator;
    until it is ready, members would only log NotCoordinator warnings."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            describe_groups(config)
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _wait_for_members(supervisor: Supervisor) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        statuses = supervisor.poll()
        if supervisor.fatal:
            raise DemoFailed(f"the replicator stopped on a config error: {supervisor.fatal}")
        if all(status.running == status.planned for status in statuses):
            return
        if time.monotonic() > deadline:
            raise DemoFailed(f"the members did not start within {START_SECONDS:.0f}s: "
                               + "; ".join(status.line() for status in statuses))
        time.sleep(1)


def _wait_for_catch_up(config: ReplicatorConfig, supervisor: Supervisor, started: float) -> None:
    """Until each group has committed every partition up to its log end."""
    deadline = time.monotonic() + CATCH_UP_SECONDS
    next_view = time.monotonic() + VIEW_SECONDS
    while True:
        rows = describe_groups(config)
        if all(row.log_end == 0 or row.committed == row.log_end for row in rows):
            return
        if time.monotonic() > deadline:
            behind = [f"{r.topic}[{r.partition}] {r.committed}/{r.log_end}" for r in rows
                      if r.committed != r.log_end]
            raise DemoFailed(f"not caught up after {CATCH_UP_SECONDS:.0f}s: {', '.join(behind)}")
        if time.monotonic() >= next_view:
            next_view += VIEW_SECONDS
            _view(time.monotonic() - started, supervisor.poll())
        time.sleep(1)


def _view(elapsed: float, statuses: list[DirectionStatus]) -> None:
    for status in statuses:
        say(f"{elapsed:5.0f}s  {status.line()}")


def _report(info: SandboxInfo, stream: Stream, checks: list[PartitionCheck]) -> None:
    sent = sum(check.sent for check in checks)
    arrived = sum(check.arrived for check in checks)
    duplicates = sum(check.duplicates for check in checks)
    verdict = "OK" if all(check.exact for check in checks) else "MISMATCH"
    say(f"  {stream.topic:<17} {_side(info, stream.origin)} → {_side(info, stream.destination)}: "
        f"{sent} produced, {arrived} arrived, {duplicates} duplicates, {verdict}; per partition "
        + " ".join(f"{check.partition}:{check.arrived}" for check in checks))
    for check in checks:
        if not check.exact:
            say(f"    {stream.topic}[{check.partition}]: {check.missing} missing, "
                f"{check.out_of_order} out of order, {check.foreign} that belong elsewhere")
