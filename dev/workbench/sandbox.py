"""A local two-cluster Apache Kafka sandbox: real KRaft brokers on 127.0.0.1.

``Sandbox(host=...)`` puts every listener on another address of this machine instead (the
tests' real Kubernetes node starts one inside its network namespace, where pods reach it).

Two single-node clusters, "source" and "target", run as detached JVMs so the
sandbox outlives the Python process that started it. Their jars come once from
Maven Central (or from ``$KAFKA_HOME/libs``); everything needed to find a running
sandbox again (ports, pids, paths, the SASL and TLS flags) lives in
``<state_dir>/sandbox.json``.

``up(sasl=True)`` adds a SASL listener (PLAIN and SCRAM, user ``SASL_USERNAME``) and runs KRaft's
StandardAuthorizer: User:ANONYMOUS, the PLAINTEXT listener's principal, is a super user, and a
resource without ACLs is open to everyone, so that a test can refuse the SASL user something by
setting ACLs. Without SASL the clusters have no authorizer (ACL requests get SecurityDisabledError).

``up(tls=True)`` adds three TLS listeners to each cluster: SSL, SASL_SSL and MTLS (SSL
that requires a client certificate). Their throwaway CA, broker and client certificates
are made afresh in the state dir at every start (``<state_dir>/tls``). TLS implies SASL,
whose users the SASL_SSL listener shares.

``up(proxied=True)`` adds a PROXIED listener to each cluster that advertises another port,
kept free for a proxy in front of the broker (workbench.proxy): clients that bootstrap through
the proxy learn its address from the metadata and keep going through it.

``up(sasl=True)``, ``up(tls=True)`` or ``up(proxied=True)`` on a running sandbox that was
started without them recreates both clusters, which discards their data.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from kafka import KafkaAdminClient

from . import certificates
from replicator.errors import ReplicatorError

log = logging.getLogger("workbench.sandbox")

KAFKA_VERSION = "4.4.0"
# Kafka's own distribution ships a log4j2 backend; the Maven artifact doesn't.
LOG4J_VERSION = "2.24.3"
# log4j-slf4j2-impl needs the slf4j 2 API; Kafka's pom asks for 1.7, which 2.x serves too.
SLF4J_VERSION = "2.0.17"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

CLUSTERS = ("source", "target")
SASL_USERNAME = "replicator"
MIN_JAVA = 17
BROKER_HEAP = ("-Xms256m", "-Xmx768m")
# What Kafka's bin/kafka-run-class.sh gives every JVM it starts (brokers, MirrorMaker 2, the
# perf tools). Without it Java 17 picks G1 with a 200 ms pause goal instead of 20 ms.
KAFKA_JVM_OPTS = ("-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
                  "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true")
GC_LOG = "gc.log"  # in each cluster's directory
STOP_GRACE_SECONDS = 20.0
PORTS_FROM = 20000  # the brokers' ports: from here up to the ephemeral range
MAVEN_TIMEOUT_SECONDS = 1800.0

_JAVA_HINT = "install OpenJDK 17+, e.g. apt-get install openjdk-17-jre-headless (or set JAVA_HOME)"

# Popen handles of brokers started by this process, kept so that stopped ones
# are reaped instead of lingering as zombies (and without ResourceWarnings).
_children: dict[int, subprocess.Popen[bytes]] = {}


class SandboxError(ReplicatorError):
    """The sandbox could not be set up, started or stopped; the message says why."""


@dataclass(frozen=True)
class SaslEndpoint:
    bootstrap_servers: str
    username: str
    password_file: Path

    def password(self) -> str:
        return self.password_file.read_text().strip()


@dataclass(frozen=True)
class TlsEndpoint:
    """The TLS listeners of one cluster, and the PEM files a client needs for them."""

    ssl_bootstrap_servers: str
    sasl_ssl_bootstrap_servers: str  # the SASL listener's users and password
    mtls_bootstrap_servers: str  # requires the client certificate
    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class ProxiedEndpoint:
    """A listener that advertises a proxy's port: the proxy listens on `proxy_port` and
    forwards to the broker's `broker_port`."""

    bootstrap_servers: str  # the proxy's address: where clients connect
    proxy_port: int
    broker_port: int


@dataclass(frozen=True)
class ClusterEndpoint:
    name: str
    bootstrap_servers: str
    sasl: SaslEndpoint | None
    tls: TlsEndpoint | None = None
    proxied: ProxiedEndpoint | None = None


@dataclass(frozen=True)
class SandboxInfo:
    source: ClusterEndpoint
    target: ClusterEndpoint
    state_dir: Path

    def as_json(self) -> dict:
        """The endpoints in the camelCase shape used by config files."""
        result: dict[str, Any] = {}
        for cluster in (self.source, self.target):
            entry: dict[str, Any] = {"bootstrapServers": cluster.bootstrap_servers}
            if cluster.sasl is not None:
                entry["sasl"] = {
                    "bootstrapServers": cluster.sasl.bootstrap_servers,
                    "username": cluster.sasl.username,
                    "passwordFile": str(cluster.sasl.password_file),
                }
            if cluster.tls is not None:
                # The files under the config keys that take them, ready to copy.
                entry["tls"] = {
                    "sslBootstrapServers": cluster.tls.ssl_bootstrap_servers,
                    "saslSslBootstrapServers": cluster.tls.sasl_ssl_bootstrap_servers,
                    "mtlsBootstrapServers": cluster.tls.mtls_bootstrap_servers,
                    "sslCaFile": str(cluster.tls.ca_file),
                    "sslCertFile": str(cluster.tls.cert_file),
                    "sslKeyFile": str(cluster.tls.key_file),
                }
            if cluster.proxied is not None:
                entry["proxied"] = {
                    "bootstrapServers": cluster.proxied.bootstrap_servers,
                    "brokerPort": cluster.proxied.broker_port,
                }
            result[cluster.name] = entry
        return result


def cache_root() -> Path:
    """Where jars, builds and runs are kept: $XDG_CACHE_HOME/kafka-replicator, else ~/.cache/kafka-replicator."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kafka-replicator"


def default_state_dir() -> Path:
    """``$KAFKA_REPLICATOR_SANDBOX_DIR``, else ``~/.cache/kafka-replicator/sandbox``."""
    override = os.environ.get("KAFKA_REPLICATOR_SANDBOX_DIR")
    return Path(override).expanduser() if override else cache_root() / "sandbox"


@functools.lru_cache(maxsize=1)
def java_executable() -> str:
    """Path of a ``java`` that is new enough for Kafka 4 brokers."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise SandboxError(f"Java not found: {_JAVA_HINT}")
    probe = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', probe.stderr + probe.stdout)
    if not match:
        raise SandboxError(f"cannot tell the version of {java}: {probe.stderr.strip()}")
    major = int(match.group(1))
    if major == 1:  # "1.8.0_392" style
        major = int(match.group(2) or 0)
    if major < MIN_JAVA:
        raise SandboxError(f"{java} is Java {major}, Kafka 4 brokers need {MIN_JAVA}+: {_JAVA_HINT}")
    return java


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise processes working on the same directory (e.g. parallel test runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-replicator</groupId>
  <artifactId>{name}</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{plugin}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def ensure_kafka_libs(version: str = KAFKA_VERSION) -> Path:
    """Directory of jars that run a Kafka broker, downloading them once if needed.

    ``$KAFKA_HOME/libs`` wins when ``KAFKA_HOME`` is set (``version`` is then ignored).
    """
    kafka_home = os.environ.get("KAFKA_HOME")
    if kafka_home:
        libs = Path(kafka_home).expanduser() / "libs"
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise SandboxError(
                f"KAFKA_HOME={kafka_home} has no libs/kafka_2.13-*.jar: point it at an "
                "unpacked Kafka distribution, or unset it to download the jars with Maven"
            )
        return libs

    return maven_libs("kafka_2.13", version, cache_name=f"kafka-{version}")


def maven_libs(artifact: str, version: str, cache_name: str) -> Path:
    """Jars of org.apache.kafka:<artifact>:<version> and its runtime, downloaded once.

    A tiny generated pom and ``mvn dependency:copy-dependencies`` fill
    ``~/.cache/kafka-replicator/<cache_name>/libs``; a marker file says it is complete.
    """
    home = cache_root() / cache_name
    libs, done_marker = home / "libs", home / ".complete"
    if done_marker.exists():
        return libs
    with _file_lock(home / ".lock"):
        if done_marker.exists():  # another process finished the download while we waited
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise SandboxError(
                f"Maven (mvn) is needed once to download org.apache.kafka:{artifact}: install it "
                "(e.g. apt-get install maven) or, for the broker, set KAFKA_HOME to an unpacked "
                "Kafka distribution"
            )
        shutil.rmtree(libs, ignore_errors=True)  # leftovers of an interrupted run
        (home / "pom.xml").write_text(_POM.format(
            name=cache_name, artifact=artifact, version=version,
            log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION, plugin=DEPENDENCY_PLUGIN_VERSION))
        _run_maven(mvn, home, f"org.apache.kafka:{artifact}:{version}")
        done_marker.write_text(f"{version}\n")
    return libs


def _run_maven(mvn: str, home: Path, coordinates: str) -> None:
    command = [mvn, "-q", "-B", "dependency:copy-dependencies", "-DoutputDirectory=libs", "-DincludeScope=runtime"]
    output = home / "mvn.log"
    log.info("Downloading %s and its dependencies from Maven Central into %s (once)", coordinates, home)
    started = time.monotonic()
    with open(output, "wb") as out:
        proc = subprocess.Popen(command, cwd=home, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while True:
            try:
                proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if elapsed > MAVEN_TIMEOUT_SECONDS:
                    proc.kill()
                    proc.wait()
                    raise SandboxError(f"Maven did not finish within {MAVEN_TIMEOUT_SECONDS:.0f}s; see {output}")
                log.info("Still downloading %s (%.0fs so far)...", coordinates, elapsed)
    if proc.returncode != 0:
        raise SandboxError(
            f"Maven could not resolve {coordinates} (exit {proc.returncode}); "
            f"check network access to Maven Central. Last lines of {output}:\n{_tail(output)}"
        )
    log.info("%s ready in %.0fs", coordinates, time.monotonic() - started)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no output)"


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Distinct free ports of ``host`` below the ephemeral range: any outgoing connection may take
    an ephemeral port between this check and the broker's bind (seen with Ray busy beside)."""
    chosen: list[int] = []
    candidates = list(range(PORTS_FROM, _ephemeral_start()))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise SandboxError(f"fewer than {count} free ports of {host} from {PORTS_FROM} up")


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _new_cluster_uuid() -> str:
    """A Kafka-style cluster id: 16 random bytes, URL-safe base64 without padding."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):  # would be read as a command-line flag
            return value


def _write_private(path: Path, text: str) -> None:
    """Write a file only the owner can read (it may hold a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _broker_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    """True if the broker at ``bootstrap`` answers a metadata request."""
    host, port = bootstrap.rsplit(":", 1)
    try:
        # A bare connect first: cheap, and keeps kafka-python from logging
        # connection errors while the JVM is still booting.
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    timeout_ms = int(timeout * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
        )
    except Exception:
        return False
    try:
        admin.describe_cluster()
        return True
    except Exception:
        return False
    finally:
        admin.close()


def _is_ours(pid: int | None, config: Path) -> bool:
    """True if ``pid`` is alive and is the broker started with ``config``.

    Checking the command line guards against a recycled pid: we must never
    signal somebody else's process.
    """
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None:
        # Our own child: /proc would do, but right after Popen returns, while the exec
        # finishes, its command line reads empty, which must not pass for a dead broker.
        return child.poll() is None and str(config) in child.args
    if Path("/proc/self").exists():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return str(config) in cmdline.split("\0")  # a zombie's is empty: dead too
    try:
        os.kill(pid, 0)  # no /proc (macOS): all we can tell is whether the pid exists
    except OSError:
        return False
    return True


def _stop_process(pid: int, config: Path) -> None:
    """SIGTERM the broker's process group, then SIGKILL it if it lingers."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 10.0)):
        if not _is_ours(pid, config):
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _is_ours(pid, config):
            time.sleep(0.2)
    child = _children.pop(pid, None)
    if child is not None:
        child.wait()
    if _is_ours(pid, config):
        raise SandboxError(f"broker process {pid} did not exit after SIGKILL")


_LOG4J2_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Broker logs go to stdout, which the sandbox redirects to <cluster>/broker.log. -->
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="stdout"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.network.RequestChannel$" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="org.apache.kafka.common.config" level="WARN"/>
    <Logger name="org.apache.kafka.common.utils.AppInfoParser" level="WARN"/>
    <Logger name="org.apache.kafka.raft" level="WARN"/>
    <Logger name="org.apache.kafka.controller" level="WARN"/>
    <Logger name="org.apache.kafka.image" level="WARN"/>
    <Logger name="org.apache.kafka.metadata" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log" level="WARN"/>
    <Logger name="kafka.log" level="WARN"/>
  </Loggers>
</Configuration>
"""


class Sandbox:
    """Start, inspect and stop the two-cluster sandbox kept in one state directory."""

    def __init__(self, state_dir: Path | None = None, kafka_version: str = KAFKA_VERSION,
                 host: str = "127.0.0.1", broker_heap: tuple[str, ...] = BROKER_HEAP,
                 group_join_delay_ms: int = 0) -> None:
        """`group_join_delay_ms`: the brokers' group.initial.rebalance.delay.ms. 0 lets a
        test's lone consumer start at once; Kafka's default (3,000) lets members started
        together join one generation."""
        # Absolute, because the broker's config path doubles as its process marker.
        self.state_dir = Path(state_dir or default_state_dir()).expanduser().resolve()
        self.kafka_version = kafka_version
        self.host = host  # where a new sandbox listens; a running one keeps its own
        self.broker_heap = broker_heap  # of brokers this object starts; running ones keep theirs
        self.group_join_delay_ms = group_join_delay_ms  # likewise
        self._state_file = self.state_dir / "sandbox.json"
        self._password_file = self.state_dir / "sasl-password"
        self._tls_dir = self.state_dir / "tls"
        self._log4j_config = self.state_dir / "log4j2.xml"

    # -- public API ----------------------------------------------------------

    def up(self, sasl: bool = False, tls: bool = False, timeout: float = 90.0,
           proxied: bool = False) -> SandboxInfo:
        """Start both clusters, or return the endpoints of the running ones.

        A sandbox with a dead broker is wiped and started afresh, and so is one
        running without SASL or TLS when they are asked for. A sandbox with them
        also serves callers that do not ask: its PLAINTEXT listeners stay open.
        """
        sasl = sasl or tls
        with self._lock():
            state = self._load()
            if state is not None:
                if all(self._alive(state, name) for name in CLUSTERS):
                    missing = [what for what, wanted, has in (
                        ("SASL", sasl, state["sasl"]), ("TLS", tls, state.get("tls", False)),
                        ("a proxied listener", proxied, state.get("proxied", False)))
                               if wanted and not has]
                    if missing:
                        log.warning("Sandbox in %s runs without %s: recreating it with it",
                                    self.state_dir, " and ".join(missing))
                        self._teardown(state)
                    else:
                        self._wait_ready(state, CLUSTERS, timeout)
                        return self._info(state)
                else:
                    log.info("Sandbox in %s has a dead broker: recreating it", self.state_dir)
                    self._teardown(state)
            state = self._create(sasl, tls, proxied)
            for name in CLUSTERS:
                self._spawn(state, name)
            self._save(state)
            self._wait_ready(state, CLUSTERS, timeout)
            return self._info(state)

    def info(self) -> SandboxInfo | None:
        """Endpoints recorded in the state dir (without checking they answer)."""
        state = self._load()
        return self._info(state) if state is not None else None

    def status(self) -> dict:
        """Per cluster: is the process alive, does the broker answer, where is it
        (every listener, and the files its SASL and TLS clients need)."""
        state = self._load()
        result = {}
        endpoints = self._info(state).as_json() if state is not None else {}
        for name in CLUSTERS:
            if state is None:
                result[name] = {"running": False, "answering": False, "bootstrapServers": None}
                continue
            bootstrap = self._bootstrap(state, name)
            running = self._alive(state, name)
            result[name] = {
                "running": running,
                "answering": running and _broker_answers(bootstrap),
                **endpoints[name],
            }
        return result

    def down(self) -> None:
        """Stop both brokers and delete their data and the state file."""
        with self._lock():
            self._teardown(self._load())

    def stop_broker(self, name: str) -> None:
        """Stop one cluster's broker, keeping its data and ports."""
        with self._lock():
            state = self._require_state(name)
            cluster = state["clusters"][name]
            if cluster["pid"]:
                _stop_process(cluster["pid"], Path(cluster["config"]))
            cluster["pid"] = None
            self._save(state)

    def start_broker(self, name: str, timeout: float = 90.0) -> None:
        """Start one cluster's broker again on its old data and ports."""
        with self._lock():
            state = self._require_state(name)
            if not self._alive(state, name):
                self._spawn(state, name)
                self._save(state)
            self._wait_ready(state, (name,), timeout)

    def cluster_id(self, name: str) -> str:
        """The KRaft cluster id that ``name``'s storage was formatted with."""
        return self._require_state(name)["clusters"][name]["clusterId"]

    def authority(self) -> certificates.Issued:
        """The CA that signed the TLS sandbox's certificates: to sign more of them."""
        return certificates.load(self._tls_dir / "ca.crt", self._tls_dir / "ca.key")

    # -- state ---------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with _file_lock(self.state_dir / ".lock"):
            yield

    def _load(self) -> dict | None:
        try:
            return json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return None

    def _save(self, state: dict) -> None:
        # Write-then-rename so that status()/info() never see a half-written file.
        partial = self._state_file.with_suffix(".json.tmp")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(self._state_file)

    def _require_state(self, name: str) -> dict:
        if name not in CLUSTERS:
            raise SandboxError(f"unknown cluster {name!r}: expected one of {', '.join(CLUSTERS)}")
        state = self._load()
        if state is None:
            raise SandboxError(f"no sandbox in {self.state_dir}: run `sandbox up` first")
        return state

    def _info(self, state: dict) -> SandboxInfo:
        endpoints = {}
        host = state.get("host", "127.0.0.1")
        for name in CLUSTERS:
            ports = state["clusters"][name]["ports"]
            sasl = tls = proxied = None
            if state["sasl"]:
                sasl = SaslEndpoint(
                    bootstrap_servers=f"{host}:{ports['sasl']}",
                    username=SASL_USERNAME,
                    password_file=Path(state["passwordFile"]),
                )
            if state.get("tls"):
                tls = TlsEndpoint(
                    ssl_bootstrap_servers=f"{host}:{ports['ssl']}",
                    sasl_ssl_bootstrap_servers=f"{host}:{ports['saslSsl']}",
                    mtls_bootstrap_servers=f"{host}:{ports['mtls']}",
                    ca_file=self._tls_dir / "ca.crt",
                    cert_file=self._tls_dir / "client.crt",
                    key_file=self._tls_dir / "client.key",
                )
            if state.get("proxied"):
                proxied = ProxiedEndpoint(bootstrap_servers=f"{host}:{ports['proxy']}",
                                          proxy_port=ports["proxy"], broker_port=ports["proxied"])
            endpoints[name] = ClusterEndpoint(name, self._bootstrap(state, name), sasl, tls, proxied)
        return SandboxInfo(source=endpoints["source"], target=endpoints["target"], state_dir=self.state_dir)

    @staticmethod
    def _bootstrap(state: dict, name: str) -> str:
        return f"{state.get('host', '127.0.0.1')}:{state['clusters'][name]['ports']['plaintext']}"

    @staticmethod
    def _alive(state: dict, name: str) -> bool:
        cluster = state["clusters"][name]
        return _is_ours(cluster["pid"], Path(cluster["config"]))

    # -- lifecycle -----------------------------------------------------------

    def _create(self, sasl: bool, tls: bool, proxied: bool = False) -> dict:
        """Write configs (and TLS material) and format storage for two fresh clusters."""
        java = java_executable()
        libs = ensure_kafka_libs(self.kafka_version)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._log4j_config.write_text(_LOG4J2_XML)
        if sasl and not self._password_file.exists():
            _write_private(self._password_file, secrets.token_hex(16) + "\n")
        password = self._password_file.read_text().strip() if sasl else ""

        state: dict[str, Any] = {
            "kafkaVersion": self.kafka_version,
            "libs": str(libs),
            "sasl": sasl,
            "passwordFile": str(self._password_file) if sasl else None,
            "tls": tls,
            "proxied": proxied,
            "host": self.host,
            "clusters": {},
        }
        listeners = ["plaintext", "controller"]
        if sasl:
            listeners.append("sasl")
        if tls:
            listeners += ["ssl", "saslSsl", "mtls"]
        if proxied:
            listeners += ["proxied", "proxy"]  # the broker's port, and the one it advertises
        authority = self._new_tls_material() if tls else None
        free_ports = iter(_free_ports(len(listeners) * len(CLUSTERS), self.host))
        for name in CLUSTERS:
            cluster_dir = self.state_dir / name
            shutil.rmtree(cluster_dir, ignore_errors=True)
            cluster_dir.mkdir(parents=True)
            ports = {listener: next(free_ports) for listener in listeners}
            cluster = {
                "clusterId": _new_cluster_uuid(),
                "pid": None,
                "ports": ports,
                "dir": str(cluster_dir),
                "config": str(cluster_dir / "server.properties"),
                "log": str(cluster_dir / "broker.log"),
            }
            broker_tls = self._broker_tls(authority, name, cluster_dir) if authority else None
            _write_private(Path(cluster["config"]),
                           _server_properties(cluster_dir / "data", ports, password, broker_tls, self.host,
                                              self.group_join_delay_ms))
            state["clusters"][name] = cluster
        self._format_storage(java, libs, state, password)
        return state

    def _new_tls_material(self) -> certificates.Issued:
        """A fresh CA in ``<state_dir>/tls``, with the client certificate and key it signed."""
        shutil.rmtree(self._tls_dir, ignore_errors=True)
        self._tls_dir.mkdir()
        authority = certificates.new_authority("kafka-replicator sandbox CA")
        client = certificates.issue(authority, "kafka-replicator sandbox client", server=False)
        certificates.write(self._tls_dir / "ca.crt", authority.certificate_pem())
        certificates.write(self._tls_dir / "ca.key", authority.key_pem(), private=True)
        certificates.write(self._tls_dir / "client.crt", client.certificate_pem())
        certificates.write(self._tls_dir / "client.key", client.key_pem(), private=True)
        return authority

    def _broker_tls(self, authority: certificates.Issued, name: str, cluster_dir: Path) -> _BrokerTls:
        """The broker's key store: its certificate for localhost, 127.0.0.1 and its host, signed by the CA."""
        names = ("localhost", "127.0.0.1") + ((self.host,) if self.host != "127.0.0.1" else ())
        broker = certificates.issue(authority, f"{name} broker", names, server=True)
        password = secrets.token_hex(16)
        keystore = certificates.write(cluster_dir / "broker.p12",
                                      broker.pkcs12(password, authority), private=True)
        return _BrokerTls(keystore, password, self._tls_dir / "ca.crt")

    def _format_storage(self, java: str, libs: Path, state: dict, password: str) -> None:
        # Both formats run at once: each is a JVM start, the slow part of up().
        scram = []
        if password:
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                scram += ["--add-scram", f"{mechanism}=[name={SASL_USERNAME},password={password}]"]
        running = {}
        for name, cluster in state["clusters"].items():
            command = [
                java, "-Xmx256m", f"-Dlog4j2.configurationFile={self._log4j_config}",
                "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
                "-t", cluster["clusterId"], "-c", cluster["config"], "--standalone", *scram,
            ]  # fmt: skip
            running[name] = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
            )
        outputs = {name: proc.communicate(timeout=180)[0] for name, proc in running.items()}
        for name, proc in running.items():
            if proc.returncode != 0:
                raise SandboxError(f"formatting the {name} cluster's storage failed:\n{outputs[name][-3000:]}")

    def _spawn(self, state: dict, name: str) -> None:
        """Launch a broker detached from this process, recording its pid in ``state``."""
        cluster = state["clusters"][name]
        command = [
            java_executable(), *self.broker_heap, *KAFKA_JVM_OPTS,
            # kafka-server-start.sh logs GC too: a pause shows up there, not in broker.log
            f"-Xlog:gc:file={Path(cluster['dir']) / GC_LOG}:time:filecount=2,filesize=20M",
            f"-Dlog4j2.configurationFile={self._log4j_config}",
            "-cp", f"{state['libs']}/*", "kafka.Kafka", cluster["config"],
        ]  # fmt: skip
        with open(cluster["log"], "ab") as out:
            proc = subprocess.Popen(
                command,
                cwd=cluster["dir"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: survives us, and down() can signal it whole
            )
        _children[proc.pid] = proc
        cluster["pid"] = proc.pid

    def _wait_ready(self, state: dict, names: tuple[str, ...], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            cluster = state["clusters"][name]
            bootstrap = self._bootstrap(state, name)
            while not _broker_answers(bootstrap):
                if not self._alive(state, name):
                    raise SandboxError(
                        f"the {name} broker process exited; last lines of {cluster['log']}:\n"
                        f"{_tail(Path(cluster['log']))}"
                    )
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"the {name} broker did not answer on {bootstrap} within {timeout:.0f}s "
                        f"(run `sandbox down` to reset it); last lines of {cluster['log']}:\n"
                        f"{_tail(Path(cluster['log']))}"
                    )
                time.sleep(0.5)

    def _teardown(self, state: dict | None) -> None:
        """Stop the brokers in ``state`` and delete all cluster files."""
        clusters = state["clusters"].values() if state is not None else ()
        for cluster in clusters:
            if cluster["pid"]:
                _stop_process(cluster["pid"], Path(cluster["config"]))
        for name in CLUSTERS:
            shutil.rmtree(self.state_dir / name, ignore_errors=True)
        shutil.rmtree(self._tls_dir, ignore_errors=True)
        self._state_file.unlink(missing_ok=True)


@dataclass(frozen=True)
class _BrokerTls:
    keystore: Path
    password: str
    truststore: Path


def _server_properties(data_dir: Path, ports: dict[str, int], sasl_password: str,
                       tls: _BrokerTls | None, host: str = "127.0.0.1",
                       group_join_delay_ms: int = 0) -> str:
    """server.properties for a one-node combined broker+controller."""
    listeners = [f"PLAINTEXT://{host}:{ports['plaintext']}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if sasl_password:
        listeners.append(f"SASL_PLAINTEXT://{host}:{ports['sasl']}")
        protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
    if tls:
        listeners += [f"SSL://{host}:{ports['ssl']}", f"SASL_SSL://{host}:{ports['saslSsl']}",
                      f"MTLS://{host}:{ports['mtls']}"]
        protocols += ["SSL:SSL", "SASL_SSL:SASL_SSL", "MTLS:SSL"]
    advertised = list(listeners)
    if "proxied" in ports:
        listeners.append(f"PROXIED://{host}:{ports['proxied']}")
        advertised.append(f"PROXIED://{host}:{ports['proxy']}")
        protocols.append("PROXIED:PLAINTEXT")
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.bootstrap.servers={host}:{ports['controller']}",
        f"listeners={','.join(listeners)},CONTROLLER://{host}:{ports['controller']}",
        f"advertised.listeners={','.join(advertised)}",
        f"listener.security.protocol.map={','.join(protocols)}",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        f"log.dirs={data_dir}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        f"group.initial.rebalance.delay.ms={group_join_delay_ms}",
        "auto.create.topics.enable=false",
        # Compacted topics get cleaned within seconds, so tests can see what the cleaner leaves.
        "log.cleaner.backoff.ms=1000",
        # Two brokers share two cores with the tests: fewer threads, less contention.
        "num.network.threads=2",
        "num.io.threads=2",
    ]
    if sasl_password:
        lines += [
            "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
            # ACLs bind the SASL user only where one is set, so that a test can refuse it
            # something; everyone else (and every resource without ACLs) is allowed.
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=true",
            "super.users=User:ANONYMOUS",
        ]
        for listener in ("sasl_plaintext", "sasl_ssl") if tls else ("sasl_plaintext",):
            prefix = f"listener.name.{listener}"
            lines += [
                f"{prefix}.scram-sha-256.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                f"{prefix}.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                f"{prefix}.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
                f'required user_{SASL_USERNAME}="{sasl_password}";',
            ]
    if tls:
        lines += [
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={tls.keystore}",
            f"ssl.keystore.password={tls.password}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={tls.truststore}",
            # Only MTLS asks clients for a certificate, and it turns away those without one.
            "listener.name.mtls.ssl.client.auth=required",
        ]
    return "\n".join(lines) + "\n"
