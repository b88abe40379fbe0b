"""A real node for the tests' control plane: pods that run, on this machine, without Docker.

The control plane of tests/k8s_support.py (etcd, kube-apiserver, controller-manager,
scheduler, the KubeRay operator) plus, instead of KWOK:

- the kubelet and kube-proxy (Kubernetes v1.34, built from k8s.io/kubernetes like the
  control plane, into their own cache folder),
- containerd and runc (Debian's packages) with its own root, state and socket under the
  test's state folder, cgroupfs on the machine's cgroup v1 hierarchies,
- CNI: bridge + host-local + loopback (Debian's containernetworking-plugins),
- CoreDNS (its Go module, with only the plugins used here),
- a pause image built here (a static Go binary packed as a docker archive), imported into
  containerd as its sandbox image.

The kubelet mounts, makes cgroups and network namespaces: it needs real root. So the whole
plane runs in a network namespace owned by root (`unshare -n`, entered with `nsenter -n`),
with only loopback (which also holds the node's address) and the CNI bridge of the pods: nothing in it has a route out, and nothing outside has a route in.

Built on first use into ~/.cache/kafka-replicator/k8s/ (node-v1.34.4, coredns-..., node-images-...).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from k8s_support import (
    CACHE,
    K8S_VERSION,
    POD_CIDR,
    ControlPlane,
    Missing,
    _build_kubernetes,
    _run_go,
    build_tools,
)

COREDNS_VERSION = "v1.15.0"
NODE_COMMANDS = ("kubelet", "kube-proxy")
NODE_NAME = "node-0"
NODE_IP = "10.250.0.1"  # on the namespace's loopback: the node's address, the brokers' and DNS'
POD_SUBNET = "10.244.0.0/24"  # this node's share of POD_CIDR
CLUSTER_DNS = NODE_IP
PAUSE_IMAGE = "kafka-replicator.local/pause:1.0"
PROBE_IMAGE = "kafka-replicator.local/probe:1.0"
IMAGES_VERSION = "1"
CNI_BIN = Path("/usr/lib/cni")


# ----------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------


def _build_node(out: Path, work: Path, log: Path) -> None:
    # Its own scratch module: the control plane's keeps its go.mod and its cache folder.
    _build_kubernetes(out, work, log, commands=NODE_COMMANDS, module="kubernetes-node")


# CoreDNS with only what the tests' Corefile uses (the full build carries every cloud's SDK).
_COREDNS_MAIN = """package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

var directives = []string{"bind", "errors", "log", "health", "ready", "cache", "kubernetes"}

func init() {
	// Keep CoreDNS' own order of these plugins.
	keep := map[string]bool{}
	for _, d := range directives {
		keep[d] = true
	}
	var ordered []string
	for _, d := range dnsserver.Directives {
		if keep[d] {
			ordered = append(ordered, d)
		}
	}
	dnsserver.Directives = ordered
}

func main() { coremain.Run() }
"""


def _build_coredns(out: Path, work: Path, log: Path) -> None:
    mod = work / "coredns"
    mod.mkdir(parents=True, exist_ok=True)
    (mod / "go.mod").write_text("module kafka-replicator.test/coredns\n\ngo 1.26.0\n")
    (mod / "main.go").write_text(_COREDNS_MAIN)
    _run_go(["get", f"github.com/coredns/coredns@{COREDNS_VERSION}"], mod, log)
    _run_go(["build", "-ldflags", "-s -w", "-o", str(out / "coredns"), "."], mod, log)


# pause: what every pod's sandbox runs. probe: a tiny image for the node's own checks.
_PAUSE_MAIN = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

// Sleeps until told to stop; reaps orphans when it is a pid namespace's init.
func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, _ := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
	}
}
"""

_PROBE_MAIN = """package main

// probe [ADDRESS ...]: resolve and connect to each host:port every 2 s, say what happened;
// the node's checks read it from the pod's log.
import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	for {
		for _, address := range os.Args[1:] {
			conn, err := net.DialTimeout("tcp", address, 2*time.Second)
			if err != nil {
				fmt.Printf("%s failed: %v\\n", address, err)
				continue
			}
			fmt.Printf("%s connected to %s\\n", address, conn.RemoteAddr())
			conn.Close()
		}
		select {
		case <-stop:
			return
		case <-time.After(2 * time.Second):
		}
	}
}
"""


def docker_archive(path: Path, reference: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str]) -> None:
    """A one-layer image as a docker archive (what `ctr images import` reads)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/node_support.py"}],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [reference],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in ((f"{diff_id}/layer.tar", layer_bytes), (config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


def _build_images(out: Path, work: Path, log: Path) -> None:
    mod = work / "node-images"
    for name, source in (("pause", _PAUSE_MAIN), ("probe", _PROBE_MAIN)):
        (mod / name).mkdir(parents=True, exist_ok=True)
        (mod / name / "main.go").write_text(source)
    (mod / "go.mod").write_text("module kafka-replicator.test/node-images\n\ngo 1.24.0\n")
    for name in ("pause", "probe"):
        _run_go(["build", "-ldflags", "-s -w", "-trimpath", "-o", str(work / "node-images" / f"{name}.bin"),
                 f"./{name}"], mod, log, env={"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64"})
    for name, reference in (("pause", PAUSE_IMAGE), ("probe", PROBE_IMAGE)):
        binary = (mod / f"{name}.bin").read_bytes()
        docker_archive(out / f"{name}.tar", reference, {name: (binary, 0o755)}, [f"/{name}"])


NODE_COMPONENTS = {
    f"node-{K8S_VERSION}": (_build_node, NODE_COMMANDS),
    f"coredns-{COREDNS_VERSION}": (_build_coredns, ("coredns",)),
    f"node-images-{IMAGES_VERSION}": (_build_images, ("pause.tar", "probe.tar")),
}


def build_node_tools(report=print) -> dict[str, Path]:
    """The control plane's components and the node's, built first where missing."""
    tools = build_tools(report)
    tools.update(build_tools(report, NODE_COMPONENTS))
    return tools


# ----------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------

CGROUP_ROOT = "/sys/fs/cgroup"


def _v1_controllers() -> list[Path]:
    """The mounted cgroup v1 hierarchies (one folder per mount), and the v2 one if any."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2") and fields[4].startswith(CGROUP_ROOT + "/"):
            found.append(Path(fields[4]))
    return found


def missing_prerequisites() -> str | None:
    """Why this machine cannot run the real node, or None."""
    if os.geteuid() != 0:
        return "not root: the kubelet and containerd need real root (mounts, cgroups, network namespaces)"
    for tool in ("containerd", "ctr", "runc", "ip", "iptables", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install containerd runc containernetworking-plugins iptables)"
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_BIN / plugin).is_file():
            return f"the CNI plugin {CNI_BIN / plugin} is missing (apt-get install containernetworking-plugins)"
    if shutil.which("go") is None and not all((CACHE / f).is_dir() for f in NODE_COMPONENTS):
        return "Go is not installed: the kubelet, kube-proxy, CoreDNS and the pause image are built with it"
    if not any(p.name == "memory" for p in _v1_controllers()) and not Path(CGROUP_ROOT, "cgroup.controllers").exists():
        return "no memory cgroup is mounted"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "overlayfs is not available (containerd's snapshotter)"
    return None


def _lacks_sys_resource() -> bool:
    """True where even root lacks CAP_SYS_RESOURCE (bit 24 of the effective set)."""
    status = Path("/proc/self/status").read_text()
    effective = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    return not effective & (1 << 24)


# Run (as root, in a new network namespace) by the namespace's holder: loopback up, wait.
_ROOT_HOLDER = r"""
import signal, subprocess, sys
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
print("up", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.pause()
"""


def _machine_state() -> dict[str, set[str]]:
    """Pods' network namespaces (containerd mounts them under /var/run/netns) and
    containerd shims' sockets and runc state under /run/containerd, machine-wide (empty
    folders aside: the shims make /run/containerd/s and leave it)."""
    state = {}
    for what, folder in (("network namespaces", Path("/var/run/netns")),
                         ("containerd runtime files", Path("/run/containerd"))):
        state[what] = {str(p) for p in folder.rglob("*") if not p.is_dir()} if folder.is_dir() else set()
    return state


class NodePlane(ControlPlane):
    """The control plane and a real node (kubelet, containerd, kube-proxy, CoreDNS) in a
    network namespace owned by root. start(), kubectl()/helm()/run(), stop()."""

    def __init__(self, tools: dict[str, Path], state: Path, helm: str):
        super().__init__(tools, state, helm)
        self.node = state / "node"
        self.containerd_dir = self.node / "containerd"
        self.socket = self.containerd_dir / "containerd.sock"
        self.cgroup_name = f"kafka-replicator-node-{os.getpid()}-{int(time.time())}"
        self.stop_report: dict = {}
        self._machine_before: dict[str, set[str]] = {}

    # -- the namespace: root's, with the node's address on its loopback ------------------

    def _enter(self, cmd: list[str]) -> list[str]:
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-n", "--", *cmd]

    def _make_namespace(self) -> None:
        reason = missing_prerequisites()
        if reason:
            raise Missing(reason)
        # What is there before the node starts, to tell what it leaves behind.
        self._machine_before = _machine_state()
        self.holder = subprocess.Popen(["unshare", "-n", "--", sys.executable, "-c", _ROOT_HOLDER],
                                       stdout=subprocess.PIPE, text=True, start_new_session=True)
        if self.holder.stdout.readline().strip() != "up":
            raise AssertionError("the network namespace's holder did not bring loopback up")
        assert self.interfaces() == {"lo"}, f"a new namespace with more than loopback: {self.interfaces()}"
        # The node's address, on loopback (which leads nowhere; this kernel has no dummy
        # interfaces); the CNI bridge comes with the first pod. No default route: nothing
        # in here can reach out.
        self.run(["ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo"])
        self.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])  # pod -> Service -> pod
        assert self.routes() == [], self.routes()

    def interfaces(self) -> set[str]:
        links = self.run(["cat", "/proc/net/dev"]).stdout
        return {line.split(":")[0].strip() for line in links.splitlines()[2:]}

    def routes(self) -> list[str]:
        """The main routing table, but for the pods' own subnet: no way out, ever."""
        return [r for r in self.run(["ip", "-4", "route", "show"]).stdout.splitlines()
                if not r.startswith(POD_SUBNET)]

    def _start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        if name == "ray-operator":
            # The operator calls the Ray head's dashboard by its Service's DNS name (RayJob's
            # HTTPMode): it resolves with the cluster's DNS, through a resolv.conf of its own
            # mount namespace (the machine's resolver is out of reach in here anyway).
            resolv = self.node / "host-resolv.conf"
            resolv.parent.mkdir(parents=True, exist_ok=True)
            resolv.write_text(f"nameserver {CLUSTER_DNS}\nsearch cluster.local\noptions ndots:5\n")
            cmd = ["unshare", "-m", "--propagation", "private", "--", "sh", "-c",
                   'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv), *cmd]
        return super()._start(name, cmd, env)

    def _apiserver_flags(self) -> list[str]:
        # For logs and exec: the API server calls the kubelet with the admin's certificate.
        return [f"--kubelet-client-certificate={self.pki / 'admin.crt'}",
                f"--kubelet-client-key={self.pki / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP"]

    # -- the node ------------------------------------------------------------------------

    def ctr(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args], **kw)

    def _write_configs(self) -> None:
        node, c = self.node, self.containerd_dir
        for d in (c, node / "cni" / "net.d", node / "kubelet", node / "pod-logs", node / "coredns"):
            d.mkdir(parents=True, exist_ok=True)
        (c / "config.toml").write_text(f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  # This machine withholds CAP_SYS_RESOURCE even from root: runc cannot lower a sandbox's
  # oom_score_adj to -998 ("failed to update /proc/self/oom_score_adj: Permission denied").
  # Scores are then kept at or above containerd's own.
  restrict_oom_score_adj = {'true' if _lacks_sys_resource() else 'false'}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{c / 'runc'}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{node / 'cni' / 'net.d'}"
""")
        (node / "cni" / "net.d" / "10-pods.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "pods",
            "plugins": [{"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
                         "hairpinMode": True,
                         "ipam": {"type": "host-local", "dataDir": str(node / "cni" / "ipam"),
                                  "ranges": [[{"subnet": POD_SUBNET}]],
                                  "routes": [{"dst": "0.0.0.0/0"}]}}]}, indent=1))
        # The pods' upstream resolver file: nothing but the cluster's DNS.
        (node / "resolv.conf").write_text(f"nameserver {CLUSTER_DNS}\n")
        (node / "coredns" / "Corefile").write_text(f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:18180
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {self.admin} local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
""")
        (node / "kube-proxy.yaml").write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.admin)},
            "hostnameOverride": NODE_NAME, "clusterCIDR": POD_CIDR, "mode": "iptables",
            "bindAddress": NODE_IP, "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": "127.0.0.1:10256",
            # Leave the machine's conntrack settings alone (they are not the namespace's).
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }, indent=1))
        (node / "kubelet.yaml").write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{self.cgroup_name}",
            "failSwapOn": False,
            "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(self.pki / "ca.crt")}},
            "authorization": {"mode": "AlwaysAllow"},
            "clusterDomain": "cluster.local", "clusterDNS": [CLUSTER_DNS],
            "resolvConf": str(node / "resolv.conf"),
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "imageServiceEndpoint": f"unix://{self.socket}",
            "podCIDR": POD_SUBNET, "maxPods": 30, "podLogsDir": str(node / "pod-logs"),
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "registerNode": True, "volumeStatsAggPeriod": "0s",
            # Without CAP_SYS_RESOURCE the kubelet cannot lower its own score to -999.
            **({"oomScoreAdj": 0} if _lacks_sys_resource() else {}),
        }, indent=1))

    def _start_node(self) -> None:
        self._write_configs()
        # Every v1 hierarchy (and the v2 mount) gets the node's own root cgroup, so that
        # what the kubelet makes under it can be found and removed afterwards.
        for hierarchy in _v1_controllers():
            (hierarchy / self.cgroup_name).mkdir(exist_ok=True)
        self._start("containerd", ["containerd", "--config", str(self.containerd_dir / "config.toml")])
        self._wait("containerd", lambda: self.ctr("version", check=False, timeout=10).returncode == 0, timeout=60)
        for image in ("pause", "probe"):
            self.import_image(self.tools["node-images"] / f"{image}.tar")
        self._start("coredns", [str(self.tools["coredns"] / "coredns"), "-conf", str(self.node / "coredns" / "Corefile")])
        self._start("kube-proxy", [str(self.tools["node"] / "kube-proxy"), f"--config={self.node / 'kube-proxy.yaml'}"])
        self._start("kubelet", [
            str(self.tools["node"] / "kubelet"), f"--config={self.node / 'kubelet.yaml'}",
            f"--kubeconfig={self.admin}", f"--root-dir={self.node / 'kubelet'}",
            f"--cert-dir={self.node / 'kubelet-pki'}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}", "--v=1"])
        self._wait("the node to be Ready", lambda: self.kubectl(
            "wait", "--for=condition=Ready", f"node/{NODE_NAME}", "--timeout=5s", check=False).returncode == 0,
            timeout=120)

    def import_image(self, archive: Path) -> None:
        self.ctr("images", "import", "--no-unpack=false", str(archive), timeout=900)

    # -- stopping, and checking nothing is left -------------------------------------------

    def tasks(self) -> list[str]:
        result = self.ctr("tasks", "ls", "-q", check=False, timeout=20)
        return result.stdout.split() if result.returncode == 0 else []

    def _drain(self) -> None:
        """No pod left running: controllers stopped first (nothing recreates them), every
        pod deleted through the API, so that the kubelet stops their containers and
        tears down their network."""
        for name in ("ray-operator", "kube-controller-manager"):
            for n, proc in self.procs:
                if n == name and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)
        self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=5", "--wait=false",
                     check=False, timeout=60)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            pods = self.kubectl("get", "pods", "-A", "-o", "name", check=False, timeout=20)
            if pods.returncode == 0 and not pods.stdout.strip() and not self.tasks():
                return
            time.sleep(1)
        # The kubelet did not get there: kill what is left by hand (and say so).
        left = self.tasks()
        self.stop_report["killed tasks"] = left
        for task in left:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        time.sleep(2)
        for task in left:
            self.ctr("tasks", "delete", "-f", task, check=False)

    def stop(self) -> None:
        if self.holder is not None and any(n == "containerd" and p.poll() is None for n, p in self.procs):
            with contextlib.suppress(Exception):
                self._drain()
        super().stop()
        self._clean_up()

    def _clean_up(self) -> None:
        """Remove the node's cgroups; unmount what is left under its folders; say what was left."""
        left: dict[str, list[str]] = {}
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if line.split()[4].startswith(str(self.state)) or "/cni-" in line.split()[4]]
        mounts = [m for m in mounts if m.startswith(str(self.state))]
        # The kubelet bind-mounts its root folder onto itself (to make it shared): expected.
        own = str(self.node / "kubelet")
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        mounts = [m for m in mounts if m != own]
        if mounts:
            left["mounts"] = mounts
        cgroups = []
        for hierarchy in _v1_controllers():
            top = hierarchy / self.cgroup_name
            if not top.exists():
                continue
            children = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for child in children:
                if (child / "cgroup.procs").exists() and (child / "cgroup.procs").read_text().strip():
                    cgroups.append(f"{child} (with processes)")
                with contextlib.suppress(OSError):
                    child.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
            if top.exists():
                cgroups.append(str(top))
        if cgroups:
            left["cgroups"] = cgroups
        self.stop_report["left"] = left

    def leftovers(self) -> dict[str, list[str]]:
        """After stop(): containers' processes, mounts, cgroups and network namespaces of
        this node that are still there (an empty dict when it left nothing)."""
        left: dict[str, list[str]] = {}
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
        mounts = [line.split()[4] for line in mountinfo if line.split()[4].startswith(str(self.state))]
        if mounts:
            left["mounts"] = mounts
        cgroups = [str(h / self.cgroup_name) for h in _v1_controllers() if (h / self.cgroup_name).exists()]
        if cgroups:
            left["cgroups"] = cgroups
        shims = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) not in (os.getpid(), os.getppid()):
                with contextlib.suppress(OSError):
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    if str(self.socket) in cmdline or str(self.state) in cmdline:
                        shims.append(f"{proc.name}: {cmdline[:200]}")
        if shims:
            left["processes"] = shims
        if self.holder is not None and self.holder.poll() is None:
            left["namespace holder"] = [str(self.holder.pid)]
        for what, names in _machine_state().items():
            new = sorted(names - self._machine_before.get(what, set()))
            if new:
                left[what] = new
        return left


@contextlib.contextmanager
def node_plane(state: Path, helm: str, report=print):
    tools = build_node_tools(report)
    plane = NodePlane(tools, state, helm)
    try:
        started = time.monotonic()
        plane.start()
        report(f"control plane and real node up in {time.monotonic() - started:.0f} s")
        yield plane
    finally:
        plane.stop()


# ----------------------------------------------------------------------------------------
# By hand: python tests/node_support.py up
# ----------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the control plane with a real node until Ctrl-C (as root).")
    parser.add_argument("command", choices=["up", "build"])
    parser.add_argument("--state", type=Path, default=Path("/tmp/kafka-replicator-node"),
                        help="folder for its certificates, data, containerd and logs (emptied first)")
    parser.add_argument("--image", action="store_true",
                        help="also build the replicator's image (tests/image_support.py) and import it")
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(repo / "tests"))
    if args.command == "build":
        for folder in build_node_tools().values():
            print(folder)
        return 0
    from test_chart import find_helm

    shutil.rmtree(args.state, ignore_errors=True)
    args.state.mkdir(parents=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    with node_plane(args.state, find_helm()) as plane:
        if args.image:
            import image_support

            plane.import_image(image_support.build_image().archive())
        bin_dir = plane.state / "bin"
        bin_dir.mkdir(exist_ok=True)
        enter = f"nsenter -t {plane.holder.pid} -n --"
        for name, command in (("kubectl", f"{plane.tools['kubernetes'] / 'kubectl'} --kubeconfig {plane.admin}"),
                              ("helm", f"env KUBECONFIG={plane.admin} {plane.helm_bin}"),
                              ("in-node", "")):
            script = bin_dir / name
            script.write_text(f'#!/bin/sh\nexec {enter} {command} "$@"\n'.replace("  ", " "))
            script.chmod(0o755)
        print(f"\nup: {', '.join(f'{n} (pid {p})' for n, p in plane.pids().items())}\n"
              f"kubectl, helm and in-node (any command inside the node's network namespace):\n"
              f"  export PATH={bin_dir}:$PATH\n"
              f"Kafka where the pods reach it:\n"
              f"  in-node {sys.executable} {repo / 'tests' / 'pod_kafka.py'} up {args.state / 'kafka'} {NODE_IP}\n"
              f"  (and `... pod_kafka.py down {args.state / 'kafka'}` before Ctrl-C)\n"
              f"logs: {plane.logs}\nCtrl-C stops it all.", flush=True)
        while not stop:
            time.sleep(0.5)
        print("stopping ...", flush=True)
    left = plane.leftovers()
    print(f"left behind: {left}" if left else "stopped; nothing left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
