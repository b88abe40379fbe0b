"""A live Kubernetes control plane for the chart tests, built with Go and run without Docker.

What it is: etcd, kube-apiserver, kube-controller-manager and kube-scheduler (v1.34), the
KubeRay operator (v1.6.1) and KWOK as a fake node that marks scheduled pods Running. No
container runtime: pods are objects that never run a process, which is enough to see what
the API server accepts and what the operator creates from the chart's objects.

Built from the Go module proxy into ~/.cache/kafka-replicator/k8s/ on first use (about 10
minutes on 2 cores, then cached); $KAFKA_REPLICATOR_K8S_CACHE moves that folder.

Nothing leaves the machine: every process, and every command that talks to the control
plane (kubectl, helm), runs inside a network namespace of its own that has only a loopback
interface (`unshare -rn`, entered with `nsenter`). Pod, Service and node addresses handed
out by the control plane lead nowhere: a connection to them fails at once.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from workbench.sandbox import cache_root

K8S_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
KUBERAY_VERSION = "v1.6.1"
KWOK_VERSION = "v0.8.0"
KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
KWOK_MODULE = "sigs.k8s.io/kwok"
PROMETHEUS_VERSION = "v0.316.0"  # Prometheus 3.x's Go module: its rule-file checks
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"  # its CRDs: PodMonitor, PrometheusRule
PROMETHEUS_OPERATOR_CRDS = ("monitoring.coreos.com_podmonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml")
CACHE = Path(os.environ.get("KAFKA_REPLICATOR_K8S_CACHE",
                            cache_root() / "k8s"))
K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
# Staging modules of k8s.io/kubernetes: its go.mod replaces them with ./staging/...,
# which a module that requires it cannot use; their published v0.x versions are the same code.
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
NODE_IP = "10.250.0.1"  # outside the pod range, as KWOK asks; never reached
NODE_NAME = "kwok-node-0"
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat/node-heartbeat.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


class Missing(Exception):
    """A prerequisite of the control plane is not on this machine (a reason to skip)."""


class BuildFailed(Exception):
    pass


# ----------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise Missing("Go is not installed: the control plane is built with it")
    return go


def _run_go(args: list[str], cwd: Path, log: Path, env: dict | None = None, timeout: int = 2400) -> None:
    with log.open("a") as out:
        out.write(f"\n$ go {' '.join(args)}   (in {cwd})\n")
        out.flush()
        result = subprocess.run([_go(), *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "GOFLAGS": "-mod=mod", "GOWORK": "off", **(env or {})},
                                timeout=timeout)
    if result.returncode != 0:
        tail = log.read_text()[-4000:]
        raise BuildFailed(f"go {' '.join(args)} failed (log {log}):\n{tail}")


def _gomodcache() -> Path:
    return Path(subprocess.run([_go(), "env", "GOMODCACHE"], capture_output=True, text=True,
                               check=True).stdout.strip())


def _module_dir(path: str, version: str, work: Path, log: Path) -> Path:
    """The extracted source of a module from the module cache (downloaded if needed)."""
    _run_go(["mod", "download", f"{path}@{version}"], work, log)
    return _gomodcache() / f"{path}@{version}"


def _build_kubernetes(out: Path, work: Path, log: Path, commands: tuple[str, ...] = K8S_COMMANDS,
                      module: str = "kubernetes") -> None:
    go_mod = _module_dir("k8s.io/kubernetes", K8S_VERSION, work, log).joinpath("go.mod").read_text()
    staging = sorted({line.split("=>")[0].strip() for line in go_mod.splitlines()
                      if "=> ./staging/" in line})
    minor = K8S_VERSION.split(".")[1]
    patch = K8S_VERSION.split(".")[2]
    mod = work / module
    mod.mkdir(parents=True, exist_ok=True)
    (mod / "go.mod").write_text(
        "module kafka-replicator.test/kubernetes\n\ngo 1.24.0\n\ngodebug default=go1.24\n\n"
        f"require k8s.io/kubernetes {K8S_VERSION}\n\nreplace (\n"
        + "".join(f"\t{m} => {m} v0.{minor}.{patch}\n" for m in staging) + ")\n")
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in commands]
    _run_go(["get", *(f"{p}@{K8S_VERSION}" for p in packages)], mod, log)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={K8S_VERSION}", f"-X {pkg}.gitMajor=1",
                  f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean",
                  f"-X {pkg}.buildDate={date}"]
    for name, pkg in zip(commands, packages):
        _run_go(["build", "-ldflags", " ".join(flags), "-o", str(out / name), pkg], mod, log)


def _build_etcd(out: Path, work: Path, log: Path) -> None:
    # `go install` refuses etcd's modules (they have replace directives): build it from a
    # module that requires it.
    mod = work / "etcd"
    mod.mkdir(parents=True, exist_ok=True)
    (mod / "go.mod").write_text("module kafka-replicator.test/etcd\n\ngo 1.24.0\n")
    _run_go(["get", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"], mod, log)
    _run_go(["build", "-ldflags", "-s -w", "-o", str(out / "etcd"), "go.etcd.io/etcd/server/v3"], mod, log)


def _build_kuberay(out: Path, work: Path, log: Path) -> None:
    _run_go(["install", "-ldflags", "-s -w", f"{KUBERAY_MODULE}@{KUBERAY_VERSION}"], work, log,
            env={"GOBIN": str(out)})
    crds = _module_dir(KUBERAY_MODULE, KUBERAY_VERSION, work, log) / "config" / "crd" / "bases"
    (out / "crds").mkdir(exist_ok=True)
    for crd in sorted(crds.glob("*.yaml")):
        shutil.copyfile(crd, out / "crds" / crd.name)


def _build_kwok(out: Path, work: Path, log: Path) -> None:
    _run_go(["install", "-ldflags", "-s -w", f"{KWOK_MODULE}/cmd/kwok@{KWOK_VERSION}"], work, log,
            env={"GOBIN": str(out)})
    source = _module_dir(KWOK_MODULE, KWOK_VERSION, work, log)
    # KWOK without stages exits ("no stages found"): give it the ones its module ships.
    (out / "stages.yaml").write_text(
        "\n---\n".join((source / stage).read_text().strip().removeprefix("---").strip()
                       for stage in KWOK_STAGES) + "\n")


# What `promtool check rules` checks, with Prometheus' own rule-file parser (promtool
# itself pulls in every service discovery; this builds in seconds).
_CHECK_RULES_GO = """// check-rules FILE...: parse and validate Prometheus rule files, like promtool check rules.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	failed := false
	for _, file := range os.Args[1:] {
		groups, errs := rulefmt.ParseFile(file, false, model.UTF8Validation,
			parser.NewParser(parser.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
		for _, err := range errs {
			fmt.Fprintln(os.Stderr, err)
			failed = true
		}
		if len(errs) == 0 {
			rules := 0
			for _, group := range groups.Groups {
				rules += len(group.Rules)
			}
			fmt.Printf("%s: SUCCESS: %d rules found\\n", file, rules)
		}
	}
	if failed {
		os.Exit(1)
	}
}
"""


def _build_check_rules(out: Path, work: Path, log: Path) -> None:
    mod = work / "check-rules"
    mod.mkdir(parents=True, exist_ok=True)
    (mod / "go.mod").write_text("module kafka-replicator.test/check-rules\n\ngo 1.24.0\n")
    (mod / "main.go").write_text(_CHECK_RULES_GO)
    _run_go(["get", f"github.com/prometheus/prometheus@{PROMETHEUS_VERSION}"], mod, log)
    _run_go(["build", "-ldflags", "-s -w", "-o", str(out / "check-rules"), "."], mod, log)


def _prometheus_operator_crds(out: Path, work: Path, log: Path) -> None:
    source = _module_dir("github.com/prometheus-operator/prometheus-operator", PROMETHEUS_OPERATOR_VERSION, work, log)
    (out / "crds").mkdir()
    for name in PROMETHEUS_OPERATOR_CRDS:
        shutil.copyfile(source / "example" / "prometheus-operator-crd" / name, out / "crds" / name)


COMPONENTS = {
    # folder in the cache: (builder, what it must hold)
    f"kubernetes-{K8S_VERSION}": (_build_kubernetes, K8S_COMMANDS),
    f"etcd-{ETCD_VERSION}": (_build_etcd, ("etcd",)),
    f"kuberay-{KUBERAY_VERSION}": (_build_kuberay, ("ray-operator", "crds/ray.io_rayclusters.yaml")),
    f"kwok-{KWOK_VERSION}": (_build_kwok, ("kwok", "stages.yaml")),
    f"prometheus-{PROMETHEUS_VERSION}": (_build_check_rules, ("check-rules",)),
    f"prometheus-operator-{PROMETHEUS_OPERATOR_VERSION}": (
        _prometheus_operator_crds, tuple(f"crds/{name}" for name in PROMETHEUS_OPERATOR_CRDS)),
}


def build_tools(report=print, components: dict | None = None) -> dict[str, Path]:
    """Every component's folder in the cache, built first where missing."""
    (CACHE / ".work").mkdir(parents=True, exist_ok=True)
    found = {}
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, whoever asks
        for folder, (builder, files) in (COMPONENTS if components is None else components).items():
            done = CACHE / folder
            if all((done / f).is_file() for f in files):
                found[folder.rsplit("-", 1)[0]] = done
                continue
            partial = CACHE / f".{folder}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            log = CACHE / f"{folder}.build.log"
            log.write_text("")
            report(f"building {folder} into {done} (log {log}) ...")
            started = time.monotonic()
            builder(partial, CACHE / ".work", log)
            shutil.rmtree(done, ignore_errors=True)
            partial.rename(done)
            report(f"built {folder} in {time.monotonic() - started:.0f} s")
            found[folder.rsplit("-", 1)[0]] = done
    return found


# ----------------------------------------------------------------------------------------
# Certificates
# ----------------------------------------------------------------------------------------


def _write_pki(pki: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def save_key(name, key):
        (pki / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))

    def name(cn, org=None):
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("kafka-replicator-test-ca"))
          .issuer_name(name("kafka-replicator-test-ca")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    save_key("ca", ca_key)
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(file, cn, org=None, server=False):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn, org)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False))
        if server:
            service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
                x509.DNSName("kubernetes.default.svc"), x509.DNSName("kubernetes.default.svc.cluster.local"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(service_ip)]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        save_key(file, key)
        (pki / f"{file}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    leaf("apiserver", "kube-apiserver", server=True)
    leaf("admin", "kubernetes-admin", org="system:masters")
    leaf("controller-manager", "system:kube-controller-manager")
    leaf("scheduler", "system:kube-scheduler")
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    save_key("sa", sa)
    (pki / "sa.pub").write_bytes(sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _kubeconfig(path: Path, pki: Path, user: str, server: str) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": server,
                                                   "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": user, "user": {"client-certificate": str(pki / f"{user}.crt"),
                                          "client-key": str(pki / f"{user}.key")}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
    }, indent=1))


# ----------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------

# Run by the namespace's holder process: bring loopback up (the only interface there),
# say so, and wait to be stopped.
_HOLDER = r"""
import fcntl, signal, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ifreq = struct.pack("16sH14s", b"lo", 0, b"")
flags = struct.unpack("16sH14s", fcntl.ioctl(s, 0x8913, ifreq))[1]          # SIOCGIFFLAGS
fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 0x1, b""))   # SIOCSIFFLAGS, IFF_UP
print("up", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.pause()
"""

APISERVER_PORT = 6443
ETCD_PORT = 2379


def wait_for(what: str, check, timeout: float = 120, every: float = 0.5):
    """check()'s first truthy result; its last answer or error named when time runs out."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, KeyError, IndexError, json.JSONDecodeError) as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class ControlPlane:
    """The control plane inside its own network namespace. start(), then kubectl()/helm(),
    then stop() (which stops every process by pid, in order)."""

    def __init__(self, tools: dict[str, Path], state: Path, helm: str):
        self.tools = tools
        self.state = state
        self.helm_bin = helm
        self.pki = state / "pki"
        self.logs = state / "logs"
        self.admin = state / "admin.kubeconfig"
        self.holder: subprocess.Popen | None = None
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.helm_home = state / "helm-home"

    # -- the namespace ------------------------------------------------------------------

    def _enter(self, cmd: list[str]) -> list[str]:
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-U", "-n", "--preserve-credentials", "--", *cmd]

    def _make_namespace(self) -> None:
        """The holder of a user + network namespace with only loopback (`unshare -rn`)."""
        if shutil.which("unshare") is None or shutil.which("nsenter") is None:
            raise Missing("unshare/nsenter (util-linux) are not installed")
        probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            raise Missing(f"cannot make a network namespace with `unshare -rn`: {probe.stderr.strip()}")
        self.holder = subprocess.Popen(["unshare", "-rn", "--", sys.executable, "-c", _HOLDER],
                                       stdout=subprocess.PIPE, text=True, start_new_session=True)
        if self.holder.stdout.readline().strip() != "up":
            raise AssertionError("the network namespace's holder did not bring loopback up")
        # Only loopback in there, or nothing must start.
        links = self.run(["cat", "/proc/net/dev"]).stdout
        interfaces = {line.split(":")[0].strip() for line in links.splitlines()[2:]}
        assert interfaces == {"lo"}, f"the namespace has more than loopback: {interfaces}"

    def _apiserver_flags(self) -> list[str]:
        return []

    def run(self, cmd: list[str], *, check: bool = True, input: str | None = None,
            timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        """A command inside the namespace."""
        result = subprocess.run(self._enter(cmd), capture_output=True, text=True, input=input,
                                timeout=timeout, env={**os.environ, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def kubectl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run([str(self.tools["kubernetes"] / "kubectl"), "--kubeconfig", str(self.admin), *args], **kw)

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def helm(self, *args: str, **kw) -> subprocess.CompletedProcess:
        env = {"HELM_CACHE_HOME": str(self.helm_home / "cache"), "HELM_CONFIG_HOME": str(self.helm_home / "config"),
               "HELM_DATA_HOME": str(self.helm_home / "data"), "KUBECONFIG": str(self.admin)}
        return self.run([self.helm_bin, *args], env=env, **kw)

    def _start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w")
        # nsenter execs the command: the pid is the component's own.
        proc = subprocess.Popen(self._enter(cmd), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def _wait(self, what: str, check, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                         + self.log(name)[-3000:])
            try:
                if check():
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.5)

    # -- start and stop -----------------------------------------------------------------

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._make_namespace()
        _write_pki(self.pki)

        k8s, pki = self.tools["kubernetes"], self.pki
        server = f"https://127.0.0.1:{APISERVER_PORT}"
        _kubeconfig(self.admin, pki, "admin", server)
        for user in ("controller-manager", "scheduler"):
            _kubeconfig(self.state / f"{user}.kubeconfig", pki, user, server)

        self._start("etcd", [
            str(self.tools["etcd"] / "etcd"), "--name=test", f"--data-dir={self.state / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}", f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
            "--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=test=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level=warn"])
        self._start("kube-apiserver", [
            str(k8s / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={APISERVER_PORT}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
            "--allow-privileged=true", "--endpoint-reconciler-type=none",
            f"--cert-dir={self.state / 'apiserver-certs'}", *self._apiserver_flags()])
        self._wait("the API server", lambda: self.kubectl("get", "--raw=/readyz", check=False, timeout=10).returncode == 0,
                   timeout=90)
        kubeconfig = lambda user: str(self.state / f"{user}.kubeconfig")  # noqa: E731
        self._start("kube-controller-manager", [
            str(k8s / "kube-controller-manager"), f"--kubeconfig={kubeconfig('controller-manager')}",
            f"--authentication-kubeconfig={kubeconfig('controller-manager')}",
            f"--authorization-kubeconfig={kubeconfig('controller-manager')}",
            "--bind-address=127.0.0.1", "--secure-port=10257",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true", "--leader-elect=false", "--controllers=*",
            f"--cert-dir={self.state / 'controller-manager-certs'}"])
        self._start("kube-scheduler", [
            str(k8s / "kube-scheduler"), f"--kubeconfig={kubeconfig('scheduler')}",
            f"--authentication-kubeconfig={kubeconfig('scheduler')}",
            f"--authorization-kubeconfig={kubeconfig('scheduler')}",
            "--bind-address=127.0.0.1", "--secure-port=10259", "--leader-elect=false",
            f"--cert-dir={self.state / 'scheduler-certs'}"])
        # The RayCluster CRD is too large for client-side apply (annotation limit): create it.
        self.kubectl("create", "-f", str(self.tools["kuberay"] / "crds"))
        self.kubectl("create", "-f", str(self.tools["prometheus-operator"] / "crds"))
        self._wait("the CRDs", lambda: self.kubectl(
            "wait", "--for=condition=Established", "crd", "--all", "--timeout=5s", check=False).returncode == 0)
        self._start("ray-operator", [
            str(self.tools["kuberay"] / "ray-operator"), "--metrics-addr=127.0.0.1:18080",
            "--health-probe-bind-address=127.0.0.1:18082", "--enable-leader-election=false"],
            env={"KUBECONFIG": str(self.admin)})
        self._start_node()
        self._wait("the default ServiceAccount", lambda: self.kubectl(
            "get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0)
        self._wait("the operator", lambda: "Starting workers" in self.log("ray-operator"), timeout=60)

    def _start_node(self) -> None:
        """KWOK, and the Node it pretends to be."""
        self._start("kwok", [
            str(self.tools["kwok"] / "kwok"), f"--kubeconfig={self.admin}",
            f"--config={self.tools['kwok'] / 'stages.yaml'}", "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--cidr={POD_CIDR}", f"--node-ip={NODE_IP}", "--node-port=0", "--server-address=127.0.0.1:10247"])
        self.kubectl("create", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE_NAME, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok"}},
            "status": {"allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
                       "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"}},
        }))
        self._wait("the node to be Ready", lambda: self.kubectl(
            "wait", "--for=condition=Ready", f"node/{NODE_NAME}", "--timeout=5s", check=False).returncode == 0)

    def stop(self) -> None:
        """Every process by its pid, the last started first: the API server before etcd
        (else it hangs on SIGTERM); then the namespace's holder."""
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self.procs.clear()
        if self.holder is not None and self.holder.poll() is None:
            self.holder.terminate()
            try:
                self.holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.holder.kill()
                self.holder.wait(timeout=10)

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs}


@contextlib.contextmanager
def control_plane(state: Path, helm: str, report=print):
    tools = build_tools(report)
    plane = ControlPlane(tools, state, helm)
    try:
        started = time.monotonic()
        plane.start()
        report(f"control plane up in {time.monotonic() - started:.0f} s")
        yield plane
    finally:
        plane.stop()


# ----------------------------------------------------------------------------------------
# By hand: python tests/k8s_support.py up
# ----------------------------------------------------------------------------------------


def _wrappers(plane: ControlPlane) -> Path:
    """kubectl and helm scripts that run inside the namespace, for a shell's PATH."""
    bin_dir = plane.state / "bin"
    bin_dir.mkdir(exist_ok=True)
    enter = f"nsenter -t {plane.holder.pid} -U -n --preserve-credentials --"
    for name, command in (("kubectl", f"{plane.tools['kubernetes'] / 'kubectl'} --kubeconfig {plane.admin}"),
                          ("helm", f"env KUBECONFIG={plane.admin} {plane.helm_bin}")):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\nexec {enter} {command} "$@"\n')
        script.chmod(0o755)
    return bin_dir


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the tests' local Kubernetes control plane until Ctrl-C.")
    parser.add_argument("command", choices=["up", "build"])
    parser.add_argument("--state", type=Path, default=Path("/tmp/kafka-replicator-k8s"),
                        help="folder for its certificates, data and logs (emptied first)")
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo / "tests"))
    sys.path.insert(0, str(repo))
    if args.command == "build":
        for folder in build_tools().values():
            print(folder)
        return 0
    from test_chart import find_helm

    shutil.rmtree(args.state, ignore_errors=True)
    args.state.mkdir(parents=True)
    stop = []
    # Both set here: a shell's background job starts with SIGINT ignored.
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    with control_plane(args.state, find_helm()) as plane:
        bin_dir = _wrappers(plane)
        print(f"\nup: {', '.join(f'{n} (pid {p})' for n, p in plane.pids().items())}")
        print(f"kubectl and helm that reach it (inside its network namespace):\n"
              f"  export PATH={bin_dir}:$PATH\nlogs: {plane.logs}\nCtrl-C stops it all.", flush=True)
        while not stop:
            time.sleep(0.5)
        print("stopping ...", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
