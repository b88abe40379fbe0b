"""The driver: `python -m cluster.driver --config FILE [--address ADDRESS]`.

Joins the Ray cluster at --address or $RAY_ADDRESS (a `ray://host:10001` Ray Client
address works too). Without either, Ray's default applies: the cluster that `ray start`
started on this machine, else a new local one, which stops with the driver. Starts one
actor per group member and one controller per direction (cluster.plan, cluster.controller),
supervises them until SIGTERM or SIGINT, then stops them within
shutdownGracePeriodSeconds and exits. It reads the config file again when
it changes, and on SIGHUP: a new replicaCount starts or stops members (cluster.reload). As
a Ray job (README, "Ray"; ray-job.yaml installs the dependencies on the nodes):

    ray job submit --no-wait --working-dir . --runtime-env ray-job.yaml -- python -m cluster.driver --config FILE
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import ray
from kafka.errors import KafkaError

from replicator.cli import add_log_level, report_error, setup_logging
from replicator.config import load_config
from replicator.errors import ClusterError, ConfigError, ReplicatorError
from replicator.offsets import describe_groups

from . import ray_internals
from .loopback import is_loopback, stay_on_loopback
from .options import PROGRESS_SECONDS, add_run_arguments, health_address
from .owners import CHECK_SECONDS, OwnerWatch
from .plan import NAMESPACE, MemberPlan, plan
from .probes import DriverProbes
from .reload import ConfigFile
from .supervisor import CALL_TIMEOUT_SECONDS, Supervisor

log = logging.getLogger("cluster.driver")

POLL_SECONDS = 5.0


def run(config_path: Path, address: str | None = None, namespace: str = NAMESPACE,
        progress_seconds: float = PROGRESS_SECONDS, log_level: str = "INFO",
        health: tuple[str, int] | None = None, log_format: str = "text") -> int:
    """Replicate until SIGTERM/SIGINT; 0 after a graceful stop, ConfigError's exit code when a
    member stopped on a config error. `health`: (host, port) of /healthz and /readyz."""
    config = load_config(config_path)
    for warning in config.warnings():
        log.warning("%s", warning)
    config_file = ConfigFile(Path(config_path), config)
    members = plan(config)
    grace = config.shutdown_grace_period_seconds
    # Served before Ray is joined, so that a probe can tell a driver that is starting.
    probes = None if health is None else DriverProbes(*health, loop_bound=_loop_bound(grace))
    try:
        return _run(config, config_path, config_file, members, address, namespace,
                    progress_seconds, log_level, log_format, probes)
    finally:
        if probes is not None:
            probes.close()


def _loop_bound(grace: float) -> float:
    """The longest a round of the loop takes: the wait, a poll, and a scale-down's stop."""
    return 2 * (POLL_SECONDS + CALL_TIMEOUT_SECONDS) + grace + 60


def _run(config, config_path: Path, config_file: ConfigFile, members: list[MemberPlan],
         address: str | None, namespace: str, progress_seconds: float, log_level: str,
         log_format: str, probes: DriverProbes | None) -> int:
    grace = config.shutdown_grace_period_seconds
    _join(address, namespace)
    _warn_if_too_small(members)
    stopping = threading.Event()
    reread = threading.Event()
    woken = threading.Event()  # cuts the wait between two polls short

    def stop(signum, _frame) -> None:
        log.info("%s received: stopping the members within %.0fs", signal.Signals(signum).name, grace)
        stopping.set()
        woken.set()

    def hang_up(_signum, _frame) -> None:
        log.info("SIGHUP received: reading %s again", config_path)
        reread.set()
        woken.set()

    # After ray.init, so that these handlers are the ones in force.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hang_up)
    supervisor = Supervisor(config, namespace, log_level, log_format)
    owners = OwnerWatch(config)
    code = 0
    try:
        log.info("starting %d members in Ray namespace %s: %s", len(members), namespace,
                 ", ".join(member.name for member in members))
        supervisor.apply(members)
        next_progress = time.monotonic() + progress_seconds
        next_owner_check = time.monotonic() + CHECK_SECONDS
        while True:
            woken.wait(POLL_SECONDS)
            woken.clear()
            if stopping.is_set():
                break
            asked = reread.is_set()
            reread.clear()
            change = config_file.check(asked)
            if change is not None and change.scaled:
                supervisor.config = change.config  # what members started from now on run
                members = plan(change.config)
                _warn_if_too_small(members)
            try:
                supervisor.apply(members)  # after a change; or a member whose start failed
            except ReplicatorError as exc:
                log.error("%s; trying again at the next poll", exc)
            statuses = supervisor.poll()
            if probes is not None:
                probes.looped(supervisor.not_ready(members))
            if supervisor.fatal:
                for name, error in supervisor.fatal.items():
                    log.error("%s stopped on a config error: %s", name, error)
                code = ConfigError.exit_code
                break
            if time.monotonic() >= next_progress:
                next_progress += progress_seconds
                for status in statuses:
                    log.info("%s", status.line())
            if time.monotonic() >= next_owner_check:
                next_owner_check = time.monotonic() + CHECK_SECONDS
                for direction in _check_owners(owners, supervisor.config, statuses):
                    supervisor.rejoin(direction)
    finally:
        started = time.monotonic()
        supervisor.stop(grace)
        log.info("all members stopped in %.1fs", time.monotonic() - started)
        ray.shutdown()
    return code


def _check_owners(owners: OwnerWatch, config, statuses) -> list[str]:
    """The directions whose group must rebalance: partitions without an owner for long."""
    try:
        rows = describe_groups(config)
    except (KafkaError, ReplicatorError, OSError) as exc:  # a broker restarting: next time
        log.debug("owner check skipped: %s", exc)
        return []
    return owners.check(rows, {status.direction: status.running for status in statuses})


class RayUnreachable(ReplicatorError):
    """The Ray cluster to join did not let the driver in."""

    exit_code = ClusterError.exit_code


# The lines the chart's runbook greps the driver's output for (README, "Logs an operator can grep").
RUNBOOK_LINES = r"(?i:rebalanc|assignment|Auto commit|AUTO_OFFSET_RESET)"


def _join(address: str | None, namespace: str) -> None:
    if _on_this_machine(address):
        stay_on_loopback()
    ray_internals.never_deduplicate(RUNBOOK_LINES)
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=True)
    except ConnectionError as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "the local Ray cluster"
        raise RayUnreachable(
            f"cannot join {where}: {exc}. If the cluster uses token authentication (Ray 2.59 "
            "and later turn it on for clusters started on a machine that has a token), set "
            "RAY_AUTH_MODE=token and give this process the cluster's token: RAY_AUTH_TOKEN, "
            "a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (`ray get-auth-token` "
            "prints it on the head node)") from None


def _on_this_machine(address: str | None) -> bool:
    """Whether the driver joins or starts a Ray cluster on this machine's loopback, where Ray
    would otherwise register the machine's network address (cluster.loopback)."""
    wanted = address or os.environ.get("RAY_ADDRESS")
    if wanted:
        return is_loopback(wanted)
    # No address: the cluster the last `ray start` here recorded, else a new local one.
    recorded = ray_internals.recorded_address()
    return recorded is None or is_loopback(recorded)


def _warn_if_too_small(members: list[MemberPlan]) -> None:
    """Members that do not fit wait for resources, silently as far as Ray is concerned."""
    needed = sum(member.num_cpus for member in members)
    available = ray.cluster_resources().get("CPU", 0.0)
    if needed > available:
        log.warning("the members need %.1f CPUs and the Ray cluster has %.1f: some will wait "
                    "until nodes join; lower resources.requests.cpu or add nodes", needed, available)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.driver",
        description="Run the replicator on Ray: one actor per group member, supervised.")
    add_log_level(parser, default="INFO")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        return run(args.config, args.address, args.namespace, args.progress_seconds, args.log_level,
                   health_address(args), args.log_format)
    except ReplicatorError as exc:
        report_error(exc, args.log_format)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
