"""`python -m workbench.chaos`: a bounded soak with faults injected under steady load.

Starts its own sandbox (two one-broker Kafka clusters) and a two-node Ray cluster (a head
and a worker, each `ray start` on 127.0.0.1), runs the replicator through the real driver
(`python -m cluster.driver`) in both directions with two members each, and produces keyed
traffic in which every record carries its own sequence: per-direction topics, a topic
replicated both ways (active-active), a compacted topic, and transactions of which some
abort. The replicator reaches the target broker through a proxy of ours (workbench.proxy) that
can make it slow or unreachable. Faults come from a seeded schedule, one at a time or
`--overlap` at once (never two on the same broker, Ray node, driver or member), each
followed by the time the replicator took to bring its lag back under a threshold. At the
end the traffic stops,
the lag goes to 0, and every record is checked on both clusters: lost, duplicated (per
fault), out of order, aborted records leaked, loops. Everything runs on loopback and
everything it started is stopped when it ends.

    python -m workbench.chaos --minutes 30 --seed 7 --json chaos.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from cluster.loopback import LOOPBACK
from replicator.config import parse_config
from replicator.offsets import describe_groups

from .proxy import Proxy
from .sandbox import Sandbox
from .traffic import RUN_HEADER, Stream, Traffic, arrived

log = logging.getLogger("workbench.chaos")

REPO = Path(__file__).resolve().parent.parent
KINDS = ("member-kill", "member-freeze", "source-broker-kill", "target-broker-kill",
         "driver-kill", "node-kill", "target-slow", "target-stall", "target-cut",
         "rebalance-storm")
# What a fault acts on: two faults on the same thing never overlap (members are picked
# apart one by one instead). The target's broker and its network are apart: a broker may
# restart while the network to it is slow.
RESOURCE = {"source-broker-kill": "source broker", "target-broker-kill": "target broker",
            "driver-kill": "driver", "node-kill": "Ray worker node", "target-slow": "proxy",
            "target-stall": "proxy", "target-cut": "proxy", "rebalance-storm": "config file"}
STORM = (4, 1, 2)  # replicaCount from 2, step by step
SESSION_TIMEOUT_MS = 10_000
FREEZE_SECONDS = SESSION_TIMEOUT_MS / 1000 + 5  # past the session timeout
GRACE_SECONDS = 10.0
MEMBER_WAIT_SECONDS = 60.0
RECOVERY_LIMIT_SECONDS = 240.0
CATCH_UP_SECONDS = 300.0
HEAD_CPUS, WORKER_CPUS = 4, 4  # logical: each node can hold every member on its own
PARTITIONS = 4
PROBLEMS = ("lost", "duplicated", "loops", "aborted_leaked", "out_of_order")
TX_RECORDS, TX_ABORT_SHARE, TX_PAUSE = 10, 0.25, 0.2


# Ray nodes on 127.0.0.1 for a run's length: no token to hand around, loopback kept (cluster.loopback).
LOCAL_RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                 "RAY_USAGE_STATS_ENABLED": "0"}


def say(*parts: object) -> None:
    print(*parts, flush=True)


# -- the processes the soak runs -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Every live process of a session: a `ray start` and all Ray started from it."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def kill_session(sid: int, sig: int = signal.SIGKILL) -> None:
    for pid in session_pids(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class RayNodes:
    """A head and a worker node, each `ray start --block` in its own session on 127.0.0.1."""

    def __init__(self, directory: Path, env: dict, head_cpus: int = HEAD_CPUS):
        self.directory = directory
        self.env = env
        self.head_cpus = head_cpus
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self._starts = 0
        self._temp_dirs: list[str] = []  # Ray's session files, removed by stop()

    def _temp_dir(self, prefix: str) -> str:
        # Short: Ray's socket paths must stay under 108 bytes.
        self._temp_dirs.append(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        return self._temp_dirs[-1]

    def _ray_start(self, args: list[str], name: str) -> subprocess.Popen:
        self._starts += 1
        with open(self.directory / f"{name}-{self._starts}.log", "w") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "cluster.loopback", "start", "--block",
                 "--node-ip-address", LOOPBACK, "--disable-usage-stats",
                 # Not Ray's fixed default (52365), which the other node on this machine takes.
                 "--dashboard-agent-listen-port", str(free_port()),
                 "--object-store-memory", str(80 * 1024**2), *args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                cwd=REPO, start_new_session=True)

    def start(self, worker: bool = True) -> None:
        """The head, and the worker node unless `worker` is False."""
        self.head = self._ray_start(
            ["--head", "--port", str(self.port), "--num-cpus", str(self.head_cpus),
             "--include-dashboard", "false", "--dashboard-port", str(free_port()),
             "--ray-client-server-port", str(free_port()),
             "--temp-dir", self._temp_dir("krch-")], "head")
        self._wait_nodes(1)
        if worker:
            self.start_worker()

    def start_worker(self, resources: dict[str, float] | None = None) -> None:
        """The worker node, with `resources` (custom ones, as `ray start --resources`)."""
        extra = ["--resources", json.dumps(resources)] if resources else []
        self.worker = self._ray_start(
            ["--address", self.address, "--num-cpus", str(WORKER_CPUS), *extra,
             "--temp-dir", self._temp_dir("krcw-")], "worker")
        self._wait_nodes(2)

    def kill_worker(self) -> None:
        if self.worker is not None:
            kill_session(self.worker.pid)
            self.worker.wait()

    def _wait_nodes(self, count: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.head.poll() is not None:
                raise RuntimeError(f"ray start --head exited; see {self.directory}")
            if _alive_nodes(self.address, self.env) >= count:
                return
            time.sleep(1)
        raise RuntimeError(f"{count} Ray nodes did not come up within {timeout:.0f}s")

    def pids(self) -> list[int]:
        """Every live process of the nodes: Ray's own and the actors'."""
        return [pid for proc in (self.head, self.worker) if proc is not None for pid in session_pids(proc.pid)]

    def member_pids(self) -> list[tuple[int, str]]:
        """(pid, node) of every replicator member process."""
        return self.actor_pids("Member")

    def actor_pids(self, actor_class: str) -> list[tuple[int, str]]:
        """(pid, node) of every process of an actor class (Member, Controller)."""
        found = []
        for node, proc in (("head", self.head), ("worker", self.worker)):
            if proc is None:
                continue
            for pid in session_pids(proc.pid):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if f.read().startswith(f"ray::{actor_class}".encode()):
                            found.append((pid, node))
                except OSError:
                    pass
        return found

    def stop(self) -> None:
        for proc in (self.worker, self.head):
            if proc is not None:
                kill_session(proc.pid)
                proc.wait()
        for directory in self._temp_dirs:
            shutil.rmtree(directory, ignore_errors=True)


def _alive_nodes(address: str, env: dict) -> int:
    """Alive nodes, asked from a throwaway process (this one stays out of Ray)."""
    code = ("import json,ray,sys;ray.init(address=sys.argv[1],logging_level='ERROR');"
            "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))")
    try:
        out = subprocess.run([sys.executable, "-c", code, address], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        addresses = json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return 0
    if any(a != LOOPBACK for a in addresses):
        raise RuntimeError(f"a Ray node registered an address other than {LOOPBACK}: {addresses}")
    return len(addresses)


class Driver:
    """`python -m cluster.driver` in its own session."""

    def __init__(self, config_file: Path, address: str, directory: Path, env: dict):
        self.config_file, self.address, self.directory, self.env = config_file, address, directory, env
        self.proc: subprocess.Popen | None = None
        self._starts = 0
        # A fault's restart must not outlive the soak's stop (an interrupted soak left one).
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._starts += 1
            with open(self.directory / f"driver-{self._starts}.log", "w") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "cluster.driver", "--config", str(self.config_file),
                     "--address", self.address, "--progress-seconds", "10"],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                    cwd=REPO, start_new_session=True)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int | None:
        with self._lock:
            self._stopped = True
            if self.proc is None or self.proc.poll() is not None:
                return self.proc.returncode if self.proc else None
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=3 * GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()
                return None


# -- traffic -----------------------------------------------------------------------


def _keyed(origin: str, keys: int):
    def sample(chance: random.Random) -> tuple[str, dict]:
        key = f"k{chance.randrange(keys)}"
        return key, {"o": origin, "v": chance.randrange(10**6)}
    return sample


@dataclass
class Topics:
    """The soak's topics: where each is written and where it is replicated to."""

    s2t: tuple[str, ...] = ("orders", "both-ways", "compacted", "tx-source")
    t2s: tuple[str, ...] = ("returns", "both-ways", "tx-target")


class Transactions:
    """Transactions of TX_RECORDS records on one cluster, a share of them aborted."""

    def __init__(self, bootstrap: str, topic: str, origin: str, run_id: str, seed: int):
        self.bootstrap, self.topic, self.origin, self.run_id = bootstrap, topic, origin, run_id
        self.chance = random.Random(seed)
        self.committed: set[int] = set()
        self.aborted: set[int] = set()
        self.uncertain: set[int] = set()  # the commit's answer was lost: the log decides
        self.errors = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tx-{origin}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=120)

    def _producer(self) -> KafkaProducer:
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                 transactional_id=f"chaos-{self.origin}-{self.run_id}",
                                 max_block_ms=30_000)
        producer.init_transactions()
        return producer

    def _run(self) -> None:
        header = [(RUN_HEADER, self.run_id.encode())]
        txn = 0
        producer = None
        while not self._stopping.wait(TX_PAUSE):
            try:
                if producer is None:
                    producer = self._producer()
                txn += 1
                abort = self.chance.random() < TX_ABORT_SHARE
                producer.begin_transaction()
                for i in range(TX_RECORDS):
                    value = json.dumps({"o": self.origin, "txn": txn, "i": i,
                                        "abort": abort}).encode()
                    producer.send(self.topic, key=f"t{txn}-{i}".encode(), value=value,
                                  headers=header, partition=(txn + i) % PARTITIONS)
                if abort:
                    producer.abort_transaction()
                    self.aborted.add(txn)
                else:
                    producer.commit_transaction()
                    self.committed.add(txn)
            except Exception as exc:  # a broker restart: the transaction's fate is in the log
                self.errors += 1
                self.uncertain.add(txn)
                log.info("transaction %d on %s: %s", txn, self.origin, exc)
                if producer is not None:
                    try:
                        producer.close(timeout=5)
                    except Exception:
                        pass
                producer = None
                self._stopping.wait(1.0)
        if producer is not None:
            producer.close(timeout=10)


# -- faults ------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    time: float  # seconds since the start of traffic
    at: float  # epoch seconds
    detail: str = ""
    injected: bool = True  # False: it could not be injected (the detail says why); not counted
    recovery_seconds: float | None = None
    problems: Counter = field(default_factory=Counter)  # records, by what went wrong

    def as_json(self) -> dict:
        return {"kind": self.kind, "time": round(self.time, 1), "detail": self.detail,
                "injected": self.injected,
                "recovery_seconds": None if self.recovery_seconds is None
                else round(self.recovery_seconds, 1),
                **{what: self.problems.get(what, 0) for what in PROBLEMS}}


class Soak:
    def __init__(self, args, cleanup: ExitStack):
        self.args = args
        self.cleanup = cleanup
        self.chance = random.Random(args.seed)
        self.run_id = f"chaos-{args.seed}-{uuid.uuid4().hex[:6]}"
        self.directory = Path(args.state_dir or tempfile.mkdtemp(prefix="kafka-replicator-chaos-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **LOCAL_RAY_ENV, "PYTHONPATH": str(REPO)}
        self.env.pop("RAY_ADDRESS", None)
        self.faults: list[Fault] = []
        self.manual_steps = 0  # the driver exiting by itself, restarted by the soak
        self.started = 0.0
        # Overlapping faults: the scheduler's state, and the driver's process (a kill and
        # the check that the driver has not exited by itself must not interleave).
        self._turn = threading.Condition()
        self._busy: set[str] = set()  # resources and member pids a fault is acting on
        self._round: list[str] = []
        self._driver_lock = threading.Lock()

    # -- set-up --------------------------------------------------------------------

    def setup(self) -> None:
        say(f"Soak {self.run_id}: state in {self.directory}")
        # Ray's two nodes start while the brokers do: each takes tens of seconds here.
        self.ray = RayNodes(self.directory, self.env)
        self.cleanup.callback(self.ray.stop)
        starting = ThreadPoolExecutor(1, thread_name_prefix="ray-start")
        self.cleanup.callback(starting.shutdown)
        nodes = starting.submit(self.ray.start)
        self.sandbox = Sandbox(self.directory / "sandbox")
        self.cleanup.callback(self.sandbox.down)
        info = self.sandbox.up(proxied=True)
        self.source, self.target = info.source.bootstrap_servers, info.target.bootstrap_servers
        proxied = info.target.proxied
        self.proxy = Proxy(proxied.proxy_port, proxied.broker_port)
        self.proxy.start()
        self.cleanup.callback(self.proxy.stop)
        say(f"  sandbox: source {self.source}, target {self.target}; the replicator reaches "
            f"the target through {proxied.bootstrap_servers}")
        topics = Topics()
        for bootstrap, names in ((self.source, topics.s2t), (self.target, topics.t2s)):
            _create_topics(bootstrap, names)
        self.settings = {
            "sourceKafka": {"bootstrapServers": self.source},
            "targetKafka": {"bootstrapServers": proxied.bootstrap_servers},
            "consumerGroup": {
                direction: {"groupId": f"{self.run_id}-{short}", "sessionTimeoutMs": SESSION_TIMEOUT_MS,
                            "heartbeatIntervalMs": 1000}
                for direction, short in (("sourceToTarget", "s2t"), ("targetToSource", "t2s"))},
            "replicaCount": 2,
            "replication": {
                "sourceToTarget": {"topics": [{"sourceTopicName": t} for t in topics.s2t],
                                   "exactlyOnce": self.args.exactly_once},
                "targetToSource": {"topics": [{"sourceTopicName": t} for t in topics.t2s],
                                   "exactlyOnce": self.args.exactly_once}},
            "shutdownGracePeriodSeconds": GRACE_SECONDS,
        }
        # The soak watches the groups on the target directly, not through the proxy.
        self.config = parse_config({**self.settings, "targetKafka": {"bootstrapServers": self.target}},
                                   origin="the soak's config")
        self.config_file = self.directory / "chaos-config.yaml"
        self._write_config(replicas=2)
        _wait_for(lambda: describe_groups(self.config) is not None, 90, "the group coordinators")

        nodes.result()
        say(f"  Ray: head and worker node on {self.ray.address}")
        self.driver = Driver(self.config_file, self.ray.address, self.directory, self.env)
        self.cleanup.callback(self.driver.stop)
        self.driver.start()

        rate = self.args.rate
        s, t = self.source, self.target
        self.streams = {
            "source": [Stream("orders", s, t, PARTITIONS, 0.4, _keyed("source", 500)),
                       Stream("both-ways", s, t, PARTITIONS, 0.35, _keyed("source", 200)),
                       Stream("compacted", s, t, PARTITIONS, 0.25, _keyed("source", 50))],
            "target": [Stream("returns", t, s, PARTITIONS, 0.6, _keyed("target", 500)),
                       Stream("both-ways", t, s, PARTITIONS, 0.4, _keyed("target", 200))],
        }
        self.traffic = {side: Traffic(streams, rate / 2, self.run_id)
                        for side, streams in self.streams.items()}
        self.transactions = {
            "source": Transactions(s, "tx-source", "source", self.run_id, self.args.seed),
            "target": Transactions(t, "tx-target", "target", self.run_id, self.args.seed + 1)}
        # Lag under this counts as recovered: a few seconds of traffic.
        self.threshold = max(200, int(3 * rate))

    # -- the run ---------------------------------------------------------------------

    def run(self) -> dict:
        self.setup()
        _wait_for(lambda: self._lag() == 0, 120, "the members to join and settle")
        say(f"Traffic: {self.args.rate:.0f} records/s plus transactions; faults: "
            f"{', '.join(self.args.faults)}; {self.args.minutes:g} minutes")
        self.started = time.monotonic()
        for traffic in self.traffic.values():
            traffic.start()
        for transactions in self.transactions.values():
            transactions.start()
        end = self.started + self.args.minutes * 60
        try:
            time.sleep(min(self.args.warm_up, max(0.0, end - time.monotonic())))
            injectors = [threading.Thread(target=self._inject_until, args=(end - self.args.settle,),
                                          name=f"faults-{i}", daemon=True)
                         for i in range(self.args.overlap)]
            for injector in injectors:
                injector.start()
                time.sleep(self.args.gap / self.args.overlap)  # staggered, not all at once
            for injector in injectors:
                injector.join()
            time.sleep(max(0.0, end - time.monotonic()))
        finally:
            stopping = time.monotonic()
            # Side by side: each may wait for a broker that has just restarted.
            producers = [*self.traffic.values(), *self.transactions.values()]
            with ThreadPoolExecutor(len(producers), thread_name_prefix="stop") as pool:
                list(pool.map(lambda producer: producer.stop(), producers))
            say(f"{self._now():6.0f}s producers stopped in {time.monotonic() - stopping:.0f}s")
        produced = sum(t.produced(s.topic) for side, t in self.traffic.items()
                       for s in self.streams[side])
        say(f"{self._now():6.0f}s traffic stopped: {produced} records acknowledged "
            f"({sum(t.failed for t in self.traffic.values())} sends failed), transactions "
            + ", ".join(f"{side}: {len(x.committed)} committed, {len(x.aborted)} aborted, "
                        f"{len(x.uncertain)} uncertain" for side, x in self.transactions.items()))
        caught_up = self._wait_lag_zero()
        driver_alive = self.driver.proc.poll() is None
        code = self.driver.stop()
        say(f"{self._now():6.0f}s driver stopped (exit {code})")
        report = self.verify()
        report["caught_up"] = caught_up
        report["driver_alive_at_end"] = driver_alive
        return report

    def _inject_until(self, deadline: float) -> None:
        """One fault after another, each once the previous recovered, until `deadline`.
        With --overlap several of these run at once (the seeded order is then only the
        schedule's: which fault starts first depends on the recoveries)."""
        while time.monotonic() < deadline:
            kind = self._next_kind(deadline)
            if kind is None:
                return
            try:
                self._inject(kind)
            finally:
                with self._turn:
                    self._busy.discard(RESOURCE.get(kind))
                    self._turn.notify_all()
            pause = self.chance.uniform(self.args.gap / 2, self.args.gap * 1.5)
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    def _next_kind(self, deadline: float) -> str | None:
        """The next kind of the round whose resource no other fault is acting on; every kind
        comes once per round, in a seeded order, so that each gets its share."""
        with self._turn:
            while time.monotonic() < deadline:
                if not self._round:
                    self._round = list(self.args.faults)
                    self.chance.shuffle(self._round)
                kind = next((k for k in self._round if RESOURCE.get(k) not in self._busy), None)
                if kind is not None:
                    self._round.remove(kind)
                    if kind in RESOURCE:
                        self._busy.add(RESOURCE[kind])
                    return kind
                self._turn.wait(1.0)
        return None

    def _now(self) -> float:
        return time.monotonic() - self.started if self.started else 0.0

    def _inject(self, kind: str) -> None:
        before = self._ends()
        fault = Fault(kind, self._now(), time.time())
        self.faults.append(fault)
        try:
            fault.detail = getattr(self, "_" + kind.replace("-", "_"))()
        except Exception as exc:
            fault.detail = f"injection failed: {type(exc).__name__}: {exc}"
            fault.injected = False
            log.exception("%s", kind)
        fault.recovery_seconds = self._recover(fault, before)
        rec = ("NOT recovered within %.0fs" % RECOVERY_LIMIT_SECONDS if fault.recovery_seconds is None
               else f"recovered in {fault.recovery_seconds:.1f}s")
        say(f"{fault.time:6.0f}s {kind:<20} {fault.detail}; {rec}")

    def _recover(self, fault: Fault, before: dict) -> float | None:
        """Seconds from the fault until every record written before it is committed and
        the lag is under the threshold."""
        deadline = time.monotonic() + RECOVERY_LIMIT_SECONDS
        start = self.started + fault.time
        while time.monotonic() < deadline:
            with self._driver_lock:
                if self.driver.proc.poll() is not None:
                    say(f"{self._now():6.0f}s the driver exited ({self.driver.proc.returncode}): "
                        "starting it again (a manual step)")
                    fault.detail += "; driver exited and was restarted"
                    self.manual_steps += 1
                    self.driver.start()
            rows = self._rows()
            if rows is not None and all(
                    (row.committed or 0) >= before.get((row.group, row.topic, row.partition), 0)
                    for row in rows) and _lag(rows) <= self.threshold:
                return time.monotonic() - start
            time.sleep(1)
        return None

    def _rows(self):
        try:
            return describe_groups(self.config)
        except Exception:
            return None

    def _lag(self) -> int | None:
        rows = self._rows()
        return None if rows is None else _lag(rows)

    def _ends(self) -> dict:
        """Each group's partitions' log ends now (retried: the previous fault may linger)."""
        for _ in range(30):
            rows = self._rows()
            if rows is not None:
                return {(row.group, row.topic, row.partition): row.log_end for row in rows}
            time.sleep(1)
        return {}

    def _wait_lag_zero(self) -> bool:
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while time.monotonic() < deadline:
            if self._lag() == 0:
                say(f"{self._now():6.0f}s lag 0 on every partition")
                return True
            time.sleep(2)
        say(f"lag still {self._lag()} after {CATCH_UP_SECONDS:.0f}s")
        return False

    # -- the faults ------------------------------------------------------------------

    def _member(self) -> tuple[int, str]:
        """A member process no other fault is acting on: (pid, node), marked busy. Waits for
        one a while: after a driver or node kill the members are being started again."""
        deadline = time.monotonic() + MEMBER_WAIT_SECONDS
        while True:
            with self._turn:
                free = [(pid, node) for pid, node in self.ray.member_pids() if pid not in self._busy]
                if free:
                    pid, node = self.chance.choice(free)
                    self._busy.add(pid)
                    return pid, node
            if time.monotonic() > deadline:
                raise RuntimeError(f"no member process free of other faults within "
                                   f"{MEMBER_WAIT_SECONDS:.0f}s")
            time.sleep(1)

    def _release(self, pid: int) -> None:
        with self._turn:
            self._busy.discard(pid)

    def _member_kill(self) -> str:
        pid, node = self._member()
        try:
            os.kill(pid, signal.SIGKILL)
        finally:
            self._release(pid)
        return f"SIGKILL member pid {pid} on the {node} node"

    def _member_freeze(self) -> str:
        pid, node = self._member()
        try:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(FREEZE_SECONDS)
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:  # killed meanwhile with its node
            pass
        finally:
            self._release(pid)
        return f"SIGSTOP member pid {pid} on the {node} node for {FREEZE_SECONDS:.0f}s, then SIGCONT"

    def _broker_kill(self, name: str) -> str:
        state = json.loads((self.sandbox.state_dir / "sandbox.json").read_text())
        pid = state["clusters"][name]["pid"]
        os.kill(pid, signal.SIGKILL)
        down = self.chance.uniform(1, 8)
        time.sleep(down)
        started = time.monotonic()
        self.sandbox.start_broker(name)
        return (f"SIGKILL {name} broker pid {pid}, restarted after {down:.0f}s, "
                f"answering {time.monotonic() - started:.0f}s later")

    def _source_broker_kill(self) -> str:
        return self._broker_kill("source")

    def _target_broker_kill(self) -> str:
        return self._broker_kill("target")

    def _driver_kill(self) -> str:
        with self._driver_lock:
            pid = self.driver.proc.pid
            self.driver.kill()
            time.sleep(self.chance.uniform(0.5, 3))
            self.driver.start()
        return f"SIGKILL driver pid {pid}, restarted"

    def _node_kill(self) -> str:
        members = sum(1 for _, node in self.ray.member_pids() if node == "worker")
        self.ray.kill_worker()
        down = self.chance.uniform(2, 10)
        time.sleep(down)
        self.ray.start_worker()
        return f"SIGKILL Ray worker node ({members} members on it), started again after {down:.0f}s"

    def _target_slow(self) -> str:
        latency, lasting = self.chance.uniform(0.2, 1.5), self.chance.uniform(10, 30)
        self.proxy.delay(latency)
        time.sleep(lasting)
        self.proxy.heal()
        return f"target {latency * 1000:.0f} ms slower each way for {lasting:.0f}s"

    def _target_stall(self) -> str:
        lasting = self.chance.uniform(5, 20)
        self.proxy.stall()
        time.sleep(lasting)
        held = self.proxy.connections()
        self.proxy.heal()
        return f"target stalled for {lasting:.0f}s ({held} connections held open)"

    def _target_cut(self) -> str:
        lasting = self.chance.uniform(3, 15)
        held = self.proxy.connections()
        self.proxy.cut()
        time.sleep(lasting)
        self.proxy.heal()
        return f"target cut off for {lasting:.0f}s ({held} connections closed, new ones refused)"

    def _rebalance_storm(self) -> str:
        """replicaCount 2 → 4 → 1 → 2 in the driver's config file, which it reads again
        when it changes, as a mounted ConfigMap changes on Kubernetes."""
        pauses = [self.chance.uniform(8, 20) for _ in STORM[1:]]
        seen = []  # member processes at the end of each pause: the driver applied the step
        try:
            for replicas, pause in zip(STORM, pauses):
                self._write_config(replicas)
                time.sleep(pause)
                seen.append(str(len(self.ray.member_pids())))
        finally:
            self._write_config(STORM[-1])
        return (f"replicaCount 2 → {' → '.join(map(str, STORM))} in the driver's config file, "
                f"{' and '.join(f'{p:.0f}s' for p in pauses)} apart "
                f"(members of both directions: {' then '.join(seen)})")

    def _write_config(self, replicas: int) -> None:
        """Replaced whole (write, then rename), as Kubernetes swaps a ConfigMap's files."""
        partial = self.config_file.with_suffix(".tmp")
        partial.write_text(yaml.safe_dump({**self.settings, "replicaCount": replicas}, sort_keys=False))
        partial.replace(self.config_file)

    # -- the check -------------------------------------------------------------------

    def verify(self) -> dict:
        say("Checking every record on both clusters ...")
        sides = {"source": self.source, "target": self.target}
        other = {"source": "target", "target": "source"}
        totals = Counter()
        per_topic = {}
        events: list[tuple[str, float]] = []  # (what, the record's timestamp) of every problem
        for origin, streams in self.streams.items():
            acknowledged = self.traffic[origin]
            for topic in sorted({s.topic for s in streams}):
                at_origin = _read(sides[origin], topic, self.run_id, origin)
                at_destination = _read(sides[other[origin]], topic, self.run_id, origin)
                sent = acknowledged.sent(topic)
                figures = _compare(at_origin, at_destination, sent, events)
                per_topic[f"{topic} {origin}→{other[origin]}"] = figures
                totals.update(figures)
        for origin, transactions in self.transactions.items():
            topic = f"tx-{origin}"
            committed_log = _read(sides[origin], topic, self.run_id, origin)
            everything = _read(sides[other[origin]], topic, self.run_id, origin, committed=False)
            at_destination = _read(sides[other[origin]], topic, self.run_id, origin)
            figures = _compare(committed_log, at_destination, {}, events)
            in_log = {json.loads(r[1])["txn"] for records in committed_log.values() for r in records}
            aborted = transactions.aborted | (transactions.uncertain - in_log)
            leaked = [r for records in everything.values() for r in records
                      if json.loads(r[1])["txn"] in aborted]
            events.extend(("aborted_leaked", r[2] / 1000) for r in leaked)
            figures["aborted_leaked"] = len(leaked)
            figures["aborted_in_origin_log"] = len(in_log & transactions.aborted)
            figures["committed_missing_in_origin"] = len(transactions.committed - in_log)
            per_topic[f"{topic} {origin}→{other[origin]}"] = figures
            totals.update(figures)
        self._attribute(events)
        return self._report(totals, per_topic)

    def _attribute(self, events: list[tuple[str, float]]) -> None:
        """A replay after a fault copies records written before it (not yet committed) or
        while it lasted: a problem record goes to the first fault that had not recovered
        when the record was written."""
        faults = sorted((f for f in self.faults if f.injected), key=lambda f: f.at)
        for what, ts in events:
            owner = next((f for f in faults
                          if f.at + (f.recovery_seconds or RECOVERY_LIMIT_SECONDS) >= ts - 1.0), None)
            if owner is not None:
                owner.problems[what] += 1

    def _report(self, totals: Counter, per_topic: dict) -> dict:
        kinds = {}
        for kind in self.args.faults:
            faults = [f for f in self.faults if f.kind == kind and f.injected]
            times = [f.recovery_seconds for f in faults if f.recovery_seconds is not None]
            kinds[kind] = {
                "count": len(faults),
                "not_injected": sum(1 for f in self.faults if f.kind == kind and not f.injected),
                **{what: sum(f.problems.get(what, 0) for f in faults) for what in PROBLEMS},
                # Per fault: a few large replays hide behind a total.
                "duplicated_median": statistics.median(f.problems.get("duplicated", 0) for f in faults)
                if faults else None,
                "duplicated_max": max((f.problems.get("duplicated", 0) for f in faults), default=None),
                "not_recovered": len(faults) - len(times),
                "recovery_p50": round(statistics.median(times), 1) if times else None,
                "recovery_max": round(max(times), 1) if times else None,
            }
        attributed = Counter()
        for f in self.faults:
            attributed.update(f.problems)
        report = {
            "run_id": self.run_id,
            "seed": self.args.seed,
            "minutes": self.args.minutes,
            "rate": self.args.rate,
            "overlap": self.args.overlap,
            "exactly_once": self.args.exactly_once,
            "faults": [f.as_json() for f in sorted(self.faults, key=lambda f: f.at)],
            "totals": {k: totals.get(k, 0) for k in (
                "checked", "lost", "duplicated", "out_of_order", "loops", "aborted_leaked",
                "foreign", "acknowledged_missing_in_origin", "aborted_in_origin_log",
                "committed_missing_in_origin")},
            "outside_any_fault": {what: totals.get(what, 0) - attributed.get(what, 0) for what in PROBLEMS},
            "manual_steps": self.manual_steps,
            "per_kind": kinds,
            "per_topic": per_topic,
        }
        return report


def _lag(rows) -> int:
    return sum(row.log_end - (row.committed or 0) for row in rows)


def _create_topics(bootstrap: str, names) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for name in names:
            configs = ({"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"}
                       if name == "compacted" else {})
            try:
                admin.create_topics([NewTopic(name, PARTITIONS, 1, topic_configs=configs)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def _read(bootstrap: str, topic: str, run_id: str, origin: str,
          committed: bool = True) -> dict[int, list[tuple]]:
    """One run's records written first on `origin`, per partition in offset order."""
    tag = f'"o": "{origin}"'.encode()
    return arrived(bootstrap, topic, run_id, lambda record: tag in (record.value or b""),
                   committed, timeout=600)


def _compare(at_origin: dict, at_destination: dict, acknowledged: dict,
             events: list[tuple[str, float]]) -> dict:
    """One topic's records from one origin: the origin's log is what had to arrive."""
    figures = Counter()
    for partition in sorted(at_origin.keys() | at_destination.keys()):
        origin_log = at_origin.get(partition, [])
        unique = list(dict.fromkeys(origin_log))
        counts = Counter(origin_log)
        for record, count in counts.items():
            if count > 1:  # a copy came back home
                figures["loops"] += count - 1
                events.extend([("loops", record[2] / 1000)] * (count - 1))
        position = {record: index for index, record in enumerate(unique)}
        arrived = at_destination.get(partition, [])
        seen: set = set()
        latest = -1
        for record in arrived:
            index = position.get(record)
            if index is None:
                figures["foreign"] += 1
            elif index in seen:
                figures["duplicated"] += 1
                events.append(("duplicated", record[2] / 1000))
            else:
                seen.add(index)
                if index < latest:
                    figures["out_of_order"] += 1
                    events.append(("out_of_order", record[2] / 1000))
                latest = max(latest, index)
        figures["checked"] += len(unique)
        figures["lost"] += len(unique) - len(seen)
        events.extend(("lost", unique[i][2] / 1000) for i in range(len(unique)) if i not in seen)
        missing = set(acknowledged.get(partition, ())) - set(position)
        figures["acknowledged_missing_in_origin"] += len(missing)
    for key in ("lost", "duplicated", "loops", "out_of_order", "foreign"):
        figures.setdefault(key, 0)
    return dict(figures)


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(1)


def print_table(report: dict) -> None:
    say("")
    say(f"{'fault kind':<20} {'count':>5} {'lost':>5} {'dup':>6} {'dup p50':>7} {'dup max':>7} "
        f"{'loops':>5} {'leaked':>6} {'p50 s':>6} {'max s':>6} {'not rec':>7} {'not inj':>7}")
    for kind, row in report["per_kind"].items():
        p50 = "-" if row["recovery_p50"] is None else f"{row['recovery_p50']:.1f}"
        mx = "-" if row["recovery_max"] is None else f"{row['recovery_max']:.1f}"
        say(f"{kind:<20} {row['count']:>5} {row['lost']:>5} {row['duplicated']:>6} "
            f"{_or_dash(row['duplicated_median']):>7} {_or_dash(row['duplicated_max']):>7} {row['loops']:>5} "
            f"{row['aborted_leaked']:>6} {p50:>6} {mx:>6} {row['not_recovered']:>7} {row['not_injected']:>7}")
    say("")
    say(f"{'topic':<26} {'checked':>8} {'lost':>5} {'dup':>6} {'order':>5} {'loops':>5} {'leaked':>6}")
    for topic, row in report["per_topic"].items():
        say(f"{topic:<26} {row.get('checked', 0):>8} {row['lost']:>5} {row['duplicated']:>6} "
            f"{row['out_of_order']:>5} {row['loops']:>5} {row.get('aborted_leaked', '-'):>6}")
    t = report["totals"]
    say(f"\ntotal: {t['checked']} records checked, lost {t['lost']}, duplicated {t['duplicated']}, "
        f"out of order {t['out_of_order']}, loops {t['loops']}, aborted leaked {t['aborted_leaked']}, "
        f"foreign {t['foreign']}; manual steps {report['manual_steps']}; "
        f"caught up: {report['caught_up']}; verdict: "
        f"{'PASS' if passed(report) else 'FAIL'}")


def _or_dash(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def passed(report: dict) -> bool:
    t = report["totals"]
    # Exactly once promises no duplicate to a read_committed reader, which the check is.
    if report.get("exactly_once") and t["duplicated"]:
        return False
    return (report["caught_up"] and t["lost"] == t["loops"] == t["aborted_leaked"] == 0
            and t["out_of_order"] == t["foreign"] == 0
            and report["manual_steps"] == 0
            and all(f["recovery_seconds"] is not None for f in report["faults"] if f["injected"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", nargs="+", default=list(KINDS), choices=KINDS, metavar="KIND",
                        help=f"fault kinds to inject (default: all of {', '.join(KINDS)})")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="plain records/s, both clusters together (transactions come on top)")
    parser.add_argument("--gap", type=float, default=10.0,
                        help="mean seconds between a fault's recovery and the next fault")
    parser.add_argument("--overlap", type=int, default=1,
                        help="faults in flight at once (default 1: one after another)")
    parser.add_argument("--warm-up", type=float, default=15.0, help="seconds of traffic before the first fault")
    parser.add_argument("--settle", type=float, default=20.0, help="no new fault in the last seconds")
    parser.add_argument("--state-dir", type=Path, help="where the sandbox, Ray logs and driver logs go")
    parser.add_argument("--exactly-once", action="store_true",
                        help="replicate with exactlyOnce: true; then a single duplicate fails the soak")
    args = parser.parse_args(argv)
    if args.overlap < 1:
        parser.error("--overlap: give 1 (one fault after another) or more")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with ExitStack() as cleanup:
        try:
            report = Soak(args, cleanup).run()
        except KeyboardInterrupt:
            say("interrupted: stopping everything the soak started")
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if passed(report) else 1


if __name__ == "__main__":
    sys.exit(main())
