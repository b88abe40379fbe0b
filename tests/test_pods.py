"""Real pods: the control plane of tests/k8s_support.py with a real node (tests/node_support.py:
kubelet, containerd + runc, CNI bridge, kube-proxy, CoreDNS), all inside a network namespace
owned by root that has no way out. The Kafka sandbox runs in there too, on the node's address,
where the pods reach it.

Needs root, containerd, runc, the CNI plugins and Go (the first run builds the kubelet,
kube-proxy, CoreDNS and the pause image); skipped, saying which, where one is missing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from k8s_support import Missing
from node_support import NODE_IP, NODE_NAME, PROBE_IMAGE, build_node_tools, missing_prerequisites, node_plane
from test_chart import find_helm

pytestmark = [pytest.mark.pods, pytest.mark.timeout(1800)]

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    reason = missing_prerequisites()
    if reason:
        pytest.skip(f"no real node: {reason}")
    report = lambda message: print(message, flush=True)  # noqa: E731
    try:
        build_node_tools(report)
    except Missing as missing:
        pytest.skip(f"no real node: {missing}")
    helm = find_helm()
    plane = None
    with node_plane(tmp_path_factory.mktemp("pods"), helm, report=report) as plane:
        yield plane
    # Stopped by pid, in order: nothing of the node may be left on the machine.
    print("stop:", plane.stop_report)
    assert plane.leftovers() == {}
    assert plane.stop_report.get("left") == {}, plane.stop_report


def kafka_tool(node, *args: str, timeout: float = 180) -> dict:
    """tests/pod_kafka.py, run inside the node's network namespace."""
    result = node.run([sys.executable, str(TESTS / "pod_kafka.py"), *args], timeout=timeout)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kafka(node, tmp_path_factory):
    """The two-cluster sandbox, listening on the node's address inside its namespace."""
    state = tmp_path_factory.mktemp("pod-kafka")
    try:
        yield kafka_tool(node, "up", str(state), NODE_IP)
    finally:
        node.run([sys.executable, str(TESTS / "pod_kafka.py"), "down", str(state)], check=False, timeout=120)


def wait_for(what: str, check, timeout: float = 120, every: float = 1.0):
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


# ----------------------------------------------------------------------------------------
# The node itself
# ----------------------------------------------------------------------------------------


def test_a_pod_runs_and_reaches_kafka_through_a_service_by_dns_name(node, kafka):
    """A pod on the real node resolves a Service's name with CoreDNS, kube-proxy sends the
    connection to the source broker on the node's address: the path every replicator pod
    takes to Kafka and to the Ray head."""
    kube_node = node.get("node", NODE_NAME)
    ready = {c["type"]: c["status"] for c in kube_node["status"]["conditions"]}
    assert ready["Ready"] == "True", kube_node["status"]["conditions"]
    assert kube_node["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"
    assert kube_node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    print("node:", kube_node["status"]["nodeInfo"]["containerRuntimeVersion"],
          "allocatable", kube_node["status"]["allocatable"])
    # Only loopback (with the node's address) and the pods' bridge and veths: no route out.
    assert node.routes() == [], node.routes()

    port = int(kafka["source"]["bootstrapServers"].rsplit(":", 1)[1])
    node.kubectl("create", "namespace", "probe")
    node.kubectl("apply", "-n", "probe", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kafka-source"},
         "spec": {"ports": [{"name": "kafka", "port": 9092, "targetPort": port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "kafka-source-1", "labels": {"kubernetes.io/service-name": "kafka-source"}},
         "addressType": "IPv4", "endpoints": [{"addresses": [NODE_IP]}],
         "ports": [{"name": "kafka", "port": port, "protocol": "TCP"}]},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
         "spec": {"containers": [{"name": "probe", "image": PROBE_IMAGE, "imagePullPolicy": "Never",
                                  "args": ["kafka-source.probe.svc.cluster.local:9092", f"{NODE_IP}:{port}"],
                                  "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                                      "allowPrivilegeEscalation": False,
                                                      "capabilities": {"drop": ["ALL"]}}}],
                  "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 2}},
    ]}))
    node.kubectl("wait", "-n", "probe", "--for=condition=Ready", "pod/probe", "--timeout=90s", timeout=120)
    pod = node.get("pod", "probe", "-n", "probe")
    assert pod["status"]["podIP"].startswith("10.244.0."), pod["status"]

    def connected():
        log = node.kubectl("logs", "-n", "probe", "probe", check=False).stdout
        return log if ("kafka-source.probe.svc.cluster.local:9092 connected to" in log
                       and f"{NODE_IP}:{port} connected to" in log) else None
    log = wait_for("the probe to connect to the broker by name and by address", connected, timeout=60)
    print(log.splitlines()[-2:])
    node.kubectl("delete", "namespace", "probe", "--wait=true", "--timeout=90s", timeout=120)
    assert not node.tasks() or wait_for("the probe's containers to go", lambda: not node.tasks(), timeout=60)

