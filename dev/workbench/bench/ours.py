"""Our replicator under test: one `replicate` process per consumer-group member, or on Ray.

`python -m cluster.cli replicate --member mN` runs one member of one direction in its
own process: the same Flow loop each Ray actor runs, without Ray's own processes, so
the CPU counted is the replication loop's (plus the interpreter's). The direction runs in
one of two modes (`replication.<direction>.mode`): `batch` copies Kafka record batches as
bytes, `record` re-encodes each record with provenance headers; the benchmark runs both.
`ours-ray` runs batch mode as users do: the driver and its actors on a local Ray cluster
(OnRay), where Ray's own processes count too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..chaos import free_port
from .procstat import terminate


# Our rows of bare `replicate` processes, by the direction settings each runs with.
ROWS = {
    "ours-batch": {"mode": "batch"},
    "ours-record": {"mode": "record"},
    "ours-exactly-once": {"mode": "batch", "exactlyOnce": True},
}
RAY_ROW = "ours-ray"
SETTINGS = {**ROWS, RAY_ROW: ROWS["ours-batch"]}


def describe(row: str) -> str:
    settings = SETTINGS[row]
    return f"{settings['mode']} mode" + (", exactlyOnce" if settings.get("exactlyOnce") else "")


def write_config(path: Path, source: str, target: str, group: str, routes: dict[str, str],
                 members: int, row: str, overrides: dict | None = None) -> Path:
    """The config of one sourceToTarget direction copying `routes` as our `row` does."""
    config = {
        "sourceKafka": {"bootstrapServers": source},
        "targetKafka": {"bootstrapServers": target},
        "consumerGroup": {"sourceToTarget": {"groupId": group}},
        "replicaCount": members,
        "replication": {"sourceToTarget": {**SETTINGS[row], "topics": [
            {"sourceTopicName": s, "targetTopicName": t} for s, t in routes.items()]}},
        "shutdownGracePeriodSeconds": 20,
    }
    _merge(config, overrides or {})
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _merge(into: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class Replicators:
    """N member processes of the sourceToTarget direction; stopped with SIGTERM."""

    def __init__(self, config: Path, members: int, log_dir: Path, label: str, profile: bool = False,
                 metrics: bool = False):
        """`metrics`: each member serves /metrics on a port of its own (`metrics_ports`)."""
        self.config, self.members, self.log_dir, self.label = config, members, log_dir, label
        self.profile = profile
        self.metrics_ports = [free_port() for _ in range(members)] if metrics else []
        self.procs: list[subprocess.Popen] = []
        self.started = 0.0

    def start(self) -> "Replicators":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        for member in range(self.members):
            command = [sys.executable, "-m", "cluster.cli", "--log-level", "WARNING", "replicate",
                       "--config", str(self.config), "--direction", "sourceToTarget",
                       "--member", f"bench-m{member}"]
            if self.metrics_ports:
                command += ["--metrics-port", str(self.metrics_ports[member])]
            if self.profile:
                out = self.log_dir / f"{self.label}-m{member}.prof"
                command[1:3] = ["-m", "cProfile", "-o", str(out), "-m", "cluster.cli"]
            log = open(self.log_dir / f"{self.label}-m{member}.log", "wb")
            self.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, env=_env()))
            log.close()
        return self

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs)

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()

    def stop(self, timeout: float = 30.0) -> list[int | None]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return [proc.returncode for proc in self.procs]


class OnRay:
    """`python -m cluster.driver` with its members as actors on a Ray node of its own
    (127.0.0.1), started for one row. The processes counted are every one of the node's
    (the actors, the GCS, the raylet, Ray's agents) and the driver's."""

    def __init__(self, log_dir: Path):
        from ..chaos import LOCAL_RAY_ENV, RayNodes

        self.env = {**_env(), **LOCAL_RAY_ENV}
        self.env.pop("RAY_ADDRESS", None)
        self.log_dir = log_dir / "ray"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.nodes = RayNodes(self.log_dir, self.env)
        self.nodes.start(worker=False)

    def run(self, config: Path) -> "RayDriver":
        from ..chaos import Driver

        driver = RayDriver(Driver(config, self.nodes.address, self.log_dir, self.env), self.nodes)
        driver.start()
        return driver

    def close(self) -> None:
        self.nodes.stop()


class RayDriver:
    """One row's driver on the OnRay node: started, watched and stopped like Replicators."""

    def __init__(self, driver, nodes):
        self.driver, self.nodes = driver, nodes
        self.started = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        self.driver.start()

    def pids(self) -> list[int]:
        from ..chaos import session_pids

        return self.nodes.pids() + session_pids(self.driver.proc.pid)

    def alive(self) -> bool:
        return self.driver.proc.poll() is None

    def stop(self) -> list[int | None]:
        return [self.driver.stop()]


def _env() -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Relay:
    """The bare kafka-python relay (workbench.bench.relay) in its own process."""

    def __init__(self, source: str, target: str, group: str, routes: dict[str, str], log_dir: Path):
        self.command = [sys.executable, "-m", "workbench.bench.relay", source, target, group,
                        *(f"{s}={t}" for s, t in routes.items())]
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Relay":
        with open(self.log_dir / "relay.log", "wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=_env())
        return self

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        return terminate(self.proc, timeout)
