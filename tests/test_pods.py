"""Real pods: the control plane of tests/k8s_support.py with a real node (tests/node_support.py:
kubelet, containerd + runc, CNI bridge, kube-proxy, CoreDNS), all inside a network namespace
owned by root that has no way out. The Kafka sandbox runs in there too, on the node's address,
where the pods reach it.

Needs root, containerd, runc, the CNI plugins and Go (the first run builds the kubelet,
kube-proxy, CoreDNS and the pause image); skipped, saying which, where one is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from k8s_support import Missing, wait_for
from node_support import NODE_IP, NODE_NAME, PROBE_IMAGE, build_node_tools, missing_prerequisites, node_plane
from test_chart import find_helm

# The first test of a cold machine builds the control plane, the node and the images inside
# its timeout: more than 30 minutes on a loaded 2-core machine.
pytestmark = [pytest.mark.pods, pytest.mark.timeout(3600)]

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


# ----------------------------------------------------------------------------------------
# The chart on the real node
# ----------------------------------------------------------------------------------------

RELEASE = "kafka-replicator"
CLUSTER = "kafka-replicator"
OURS = f"app.kubernetes.io/instance={RELEASE}"
CHART = TESTS.parent / "charts" / "kafka-replicator"
RECORDS = 1000  # per topic, before the install and again while it runs
PARTITIONS = 3


@pytest.fixture(scope="module")
def image(node):
    """The replicator's image (tests/image_support.py), imported into the node's containerd."""
    import image_support

    report = lambda message: print(message, flush=True)  # noqa: E731
    try:
        built = image_support.build_image(report)
    except image_support.Missing as missing:
        pytest.skip(f"no image for the pods: {missing}")
    archive = built.archive()
    started = time.monotonic()
    node.import_image(archive)
    print(f"imported {built.name} ({archive.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - started:.0f} s")
    return built


def chart_values(kafka: dict, **extra) -> dict:
    """The chart's defaults, but for where Kafka is (the source through SASL, its password
    from a Secret), both directions, and the image: the locally built one, never pulled.
    CPU requests are lowered (the head's from 500m to 250m, each member's from 500m to 100m):
    the node has 2 cores, and the head, the driver and three workers (both directions: 2 x
    100m + 250m each, after the upgrade to three replicas) must fit on it; and the members
    get 10 s to stop, not 30, to keep the tests short."""
    values = {
        "image": {"pullPolicy": "Never"},
        "sourceKafka": {"bootstrapServers": kafka["source"]["sasl"]["bootstrapServers"],
                        "securityProtocol": "SASL_PLAINTEXT", "saslMechanism": "SCRAM-SHA-512",
                        "saslUsername": kafka["source"]["sasl"]["username"],
                        "saslPasswordSecret": {"name": "kafka-source-credentials", "key": "password"}},
        "targetKafka": {"bootstrapServers": kafka["target"]["bootstrapServers"]},
        "replication": {"targetToSource": {"enabled": True, "topics": [{"sourceTopicName": "warehouse-events"}]}},
        "head": {"resources": {"requests": {"cpu": "250m"}}},
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        # 10 s instead of 30 for the members to stop: the Ray pods' preStop sleeps shrink
        # from 35 s to 15, and so do a deleted worker's and the uninstall's waits.
        "shutdownGracePeriodSeconds": 10,
    }
    values.update(extra)
    return values


TOPICS = {  # topic: (where it is written, where its copies arrive)
    "damage": ("source", "target"),
    "events-sensor": ("source", "target"),
    "warehouse-events": ("target", "source"),
}


def produce_all(node, kafka: dict, first: int, count: int) -> None:
    for topic, (origin, _) in TOPICS.items():
        print(topic, kafka_tool(node, "produce", kafka[origin]["bootstrapServers"], topic, str(first), str(count)))


def count_all(node, kafka: dict, first: int, count: int, timeout: float = 180) -> dict[str, dict]:
    counted = {}
    for topic, (_, copies) in TOPICS.items():
        counted[topic] = kafka_tool(node, "count", kafka[copies]["bootstrapServers"], topic, str(first), str(count),
                                    str(timeout), timeout=timeout + 60)
        print(f"{topic} on {copies}: {counted[topic]}")
    return counted


def ray_head(node, namespace: str) -> str:
    pods = node.get("pods", "-n", namespace, "-l", f"ray.io/cluster={CLUSTER},ray.io/node-type=head")["items"]
    return pods[0]["metadata"]["name"]


def ray_list(node, namespace: str, what: str) -> list[dict]:
    out = node.kubectl("exec", "-n", namespace, ray_head(node, namespace), "-c", "ray-head", "--",
                       "ray", "list", what, "--format", "json", "--limit", "1000", timeout=120).stdout
    if "[" not in out:  # the dashboard is not answering yet, say
        raise AssertionError(f"ray list {what}: {out[-500:]}")
    return json.loads(out[out.index("["):])


def pod_states(node, namespace: str) -> dict:
    return {p["metadata"]["name"]: (p["status"].get("phase"),
                                    {c["name"]: (c.get("ready"), c.get("restartCount"), c.get("state"))
                                     for c in p["status"].get("containerStatuses", [])})
            for p in node.get("pods", "-n", namespace)["items"]}


def pod_usage(node, namespace: str) -> dict[str, str]:
    """Working set and CPU per pod, from the kubelet's summary (what `kubectl top` reads)."""
    summary = json.loads(node.kubectl("get", "--raw", f"/api/v1/nodes/{NODE_NAME}/proxy/stats/summary").stdout)
    return {p["podRef"]["name"]: f"{p.get('memory', {}).get('workingSetBytes', 0) / 2**20:.0f} MiB, "
                                 f"{p.get('cpu', {}).get('usageNanoCores', 0) / 1e6:.0f}m CPU"
            for p in summary["pods"] if p["podRef"]["namespace"] == namespace}


NAMESPACE = "replication"


def ray_state(node, namespace: str) -> str:
    """What a failed wait needs to be understood: Ray's nodes and actors, the pods, and the
    driver's last lines."""
    lines = []
    try:
        for n in ray_list(node, namespace, "nodes"):
            lines.append(f"node {n['node_id'][:8]} {n['state']} head={n['is_head_node']} "
                         f"{ {k: v for k, v in n.get('resources_total', {}).items() if not k.startswith('node:')} }")
        for a in ray_list(node, namespace, "actors"):
            lines.append(f"actor {a.get('name') or a['class_name']} {a['state']} node {(a.get('node_id') or '-')[:8]} "
                         f"pid {a.get('pid')} {(a.get('death_cause') or '')!s:.300}")
    except Exception as exc:  # the dump must not hide the failure it explains
        lines.append(f"ray list: {exc!r}")
    lines.append(f"pods: {pod_states(node, namespace)}")
    driver = node.kubectl("logs", "-n", namespace, "-l", "app.kubernetes.io/component=driver", "--tail", "80",
                          check=False)
    lines += ["driver log:", driver.stdout + driver.stderr]
    return "\n".join(lines)


def ready_pods(node, namespace: str) -> list[dict]:
    return [p for p in node.get("pods", "-n", namespace)["items"]
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


MEMBERS = ("sourceToTarget-0", "targetToSource-0")
CONTROLLERS = ("controller-sourceToTarget", "controller-targetToSource")


def members_alive(node, namespace: str, names=MEMBERS) -> dict | None:
    """The named actors if every one is ALIVE (a name's dead predecessors aside)."""
    actors = {a["name"]: a for a in ray_list(node, namespace, "actors") if a.get("name") and a["state"] == "ALIVE"}
    return {n: actors[n] for n in names} if all(n in actors for n in names) else None


@pytest.fixture(scope="module")
def release(node, kafka, image):
    """The chart installed once (helm install --wait) for the tests below, which run in
    order; the last one uninstalls it."""
    for topic, (origin, _) in TOPICS.items():
        kafka_tool(node, "topic", kafka[origin]["bootstrapServers"], topic, str(PARTITIONS))
    produce_all(node, kafka, 0, RECORDS)
    node.kubectl("create", "namespace", NAMESPACE)
    node.kubectl("create", "secret", "generic", "kafka-source-credentials", "-n", NAMESPACE,
                 f"--from-literal=password={Path(kafka['source']['sasl']['passwordFile']).read_text().strip()}")
    started = time.monotonic()
    installed = node.helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", "-",
                          "--wait", "--timeout", "600s", input=json.dumps(chart_values(kafka)), check=False,
                          timeout=660)
    assert installed.returncode == 0, (installed.stderr, pod_states(node, NAMESPACE))
    print(f"helm install --wait: {time.monotonic() - started:.0f} s")
    # Helm waits for the driver's Deployment; the Ray pods are the operator's: wait for them.
    try:
        wait_for("head, worker and driver Ready", lambda: len(ready_pods(node, NAMESPACE)) == 3, timeout=300, every=3)
    except AssertionError:
        raise AssertionError(f"not Ready: {pod_states(node, NAMESPACE)}") from None
    print(f"head, worker and driver Running and Ready {time.monotonic() - started:.0f} s after the install began")
    state = {"installed": True, "next": RECORDS}  # the next record number per topic
    yield state
    if state["installed"]:
        node.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "180s", check=False, timeout=240)


def test_default_values_install_on_real_pods_and_replicate_both_directions(node, kafka, release):
    namespace = NAMESPACE
    pods = node.get("pods", "-n", namespace)["items"]
    # Head, worker and driver Running and Ready: the probes KubeRay gives the Ray containers pass.
    for pod in pods:
        conditions = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert pod["status"]["phase"] == "Running" and conditions["Ready"] == "True", (pod["metadata"]["name"], pod["status"])
    kinds = sorted(p["metadata"]["labels"].get("ray.io/node-type") or p["metadata"]["labels"]["app.kubernetes.io/component"]
                   for p in pods)
    assert kinds == ["driver", "head", "worker"], kinds

    # Ray sees the head and the worker, with the worker group's pinning resources.
    def ray_nodes():
        alive = [n for n in ray_list(node, namespace, "nodes") if n["state"] == "ALIVE"]
        return alive if len(alive) == 2 else None
    nodes = wait_for("Ray's head and worker nodes", ray_nodes, timeout=120, every=3)
    worker = next(n for n in nodes if not n["is_head_node"])
    assert worker["resources_total"].get("kafka-replicator-sourceToTarget") == 1, worker["resources_total"]
    assert worker["resources_total"].get("kafka-replicator-targetToSource") == 1, worker["resources_total"]

    # The driver reached the head through its Service by name and started one member per direction.
    actors = wait_for("the members ALIVE", lambda: members_alive(node, namespace), timeout=180, every=3)
    for name in MEMBERS:
        assert actors[name]["node_id"] == worker["node_id"], (name, actors[name])
    # The controllers run on the worker too, off the head, even when the driver joined before
    # the worker did (it then moves them once the worker's pins appear).
    def controllers_on_the_worker():
        placed = members_alive(node, namespace, CONTROLLERS)
        return placed if placed and all(a["node_id"] == worker["node_id"] for a in placed.values()) else None
    wait_for("the controllers ALIVE on the worker", controllers_on_the_worker, timeout=60, every=3)

    # Every record written before the install, and every one written while it runs, copied.
    counted = count_all(node, kafka, 0, RECORDS)
    first = release["next"]
    produce_all(node, kafka, first, RECORDS)
    release["next"] += RECORDS
    counted_live = count_all(node, kafka, first, RECORDS, timeout=120)
    for topic in TOPICS:
        assert counted[topic]["lost"] == 0, (topic, counted[topic])
        assert counted_live[topic]["lost"] == 0, (topic, counted_live[topic])
    print("pod usage:", pod_usage(node, namespace))

    # The worker's Prometheus endpoint (the port the scrape annotations name) serves the
    # members' series, with the records just counted.
    worker_pod = next(p for p in pods if p["metadata"]["labels"].get("ray.io/node-type") == "worker")
    port = worker_pod["metadata"]["annotations"]["prometheus.io/port"]
    url = f"http://{worker_pod['status']['podIP']}:{port}/metrics"

    def replicated_series():
        text = node.run([sys.executable, "-c", f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"],
                        timeout=30).stdout
        lines = [line for line in text.splitlines() if line.startswith("ray_kafka_replicator_records_replicated") and "_created" not in line]
        return lines if sum(float(line.rsplit(" ", 1)[1]) for line in lines) >= 2 * RECORDS * len(TOPICS) else None
    series = wait_for(f"ray_kafka_replicator_records_replicated on {url}", replicated_series, timeout=90, every=5)
    print(f"{url}:", *series[:3], sep="\n  ")


STREAM_RATE = 100  # records per second and topic while a worker pod goes
# Long enough that a container killed (members back in ~20 s) is struck mid-stream and copies
# on after it; a deleted pod (~75 s, its preStop sleep included) catches up after the stream.
STREAM_SECONDS = 40


def workers(node, namespace: str) -> list[dict]:
    return [p for p in ready_pods(node, namespace) if p["metadata"]["labels"].get("ray.io/node-type") == "worker"]


def stream_through(node, kafka, release, fault, recovered, what: str) -> None:
    """Records flow both ways (STREAM_RATE a second per direction) while `fault()` strikes;
    `recovered()` says when the cluster has taken it in (its members ALIVE where they
    should be); then every record must arrive: 0 lost, duplicates within twice the README's
    bound (what a member copied in one autoCommitIntervalMs, 1 s here, plus what was in
    flight)."""
    first, count = release["next"], STREAM_RATE * STREAM_SECONDS
    release["next"] += count
    streamed = ("damage", "warehouse-events")
    producers = {topic: subprocess.Popen(node._enter([
        sys.executable, str(TESTS / "pod_kafka.py"), "produce", kafka[TOPICS[topic][0]]["bootstrapServers"], topic,
        str(first), str(count), str(STREAM_RATE)]), stdout=subprocess.PIPE, text=True) for topic in streamed}
    try:
        time.sleep(5)
        started = time.monotonic()
        fault()
        try:
            wait_for(f"the members running again after {what}", recovered, timeout=480, every=3)
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}\n{ray_state(node, NAMESPACE)}") from None
        print(f"members running again {time.monotonic() - started:.0f} s after {what}")
        for topic, producer in producers.items():
            out, _ = producer.communicate(timeout=STREAM_SECONDS + 120)
            assert producer.returncode == 0, (topic, out)
            print(topic, out.strip())
    finally:
        for producer in producers.values():
            if producer.poll() is None:
                producer.kill()
                producer.wait()
    for topic in streamed:
        copies = TOPICS[topic][1]
        counted = kafka_tool(node, "count", kafka[copies]["bootstrapServers"], topic, str(first), str(count), "240",
                             timeout=300)
        print(f"{topic} on {copies}: {counted}")
        assert counted["lost"] == 0, (topic, counted)
        assert counted["duplicates"] <= 2 * STREAM_RATE, (topic, counted)


def moved_to_a_new_worker(node, replaced, what: str):
    """`recovered` for a worker struck: `replaced()` names the worker back (Ready), then the
    members must be ALIVE again on its new Ray node."""
    before = members_alive(node, NAMESPACE)
    assert before, f"the members are not ALIVE before {what}"
    started, back = [], []

    def recovered():  # first called right after the fault
        started.append(time.monotonic())
        if not back:
            worker = replaced()
            if not worker:
                return None
            back.append(worker)
            print(f"worker {worker} Ready {time.monotonic() - started[0]:.0f} s after {what}")
        actors = members_alive(node, NAMESPACE)
        return actors if actors and all(actors[n]["node_id"] != before[n]["node_id"] for n in before) else None
    return recovered


def test_a_worker_pod_deleted_mid_stream_comes_back_and_nothing_is_lost(node, kafka, release):
    """`kubectl delete pod` of the worker: KubeRay makes a new worker pod, the driver's
    members start again on it and resume from the committed offsets."""
    (old,) = workers(node, NAMESPACE)
    name = old["metadata"]["name"]

    def replaced():
        new = [p["metadata"]["name"] for p in workers(node, NAMESPACE) if p["metadata"]["name"] != name]
        return new[0] if new else None
    stream_through(node, kafka, release, lambda: node.kubectl("delete", "pod", "-n", NAMESPACE, name, "--wait=false"),
                   moved_to_a_new_worker(node, replaced, "the delete"), "the delete")


def test_a_worker_container_killed_mid_stream_comes_back_and_nothing_is_lost(node, kafka, release):
    """SIGKILL to the worker's ray-worker container (its raylet and the members with it), as
    the OOM killer would: the kubelet restarts the container, or KubeRay replaces the pod."""
    (old,) = workers(node, NAMESPACE)
    name = old["metadata"]["name"]
    status = next(c for c in old["status"]["containerStatuses"] if c["name"] == "ray-worker")
    container_id = status["containerID"].split("://", 1)[1]

    def restarted():
        for pod in workers(node, NAMESPACE):
            ray = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "ray-worker")
            if pod["metadata"]["name"] != name or ray["restartCount"] > status["restartCount"]:
                return f"{pod['metadata']['name']} (ray-worker restarts: {ray['restartCount']})"
        return None
    stream_through(node, kafka, release, lambda: node.ctr("tasks", "kill", "--signal", "SIGKILL", container_id),
                   moved_to_a_new_worker(node, restarted, "the SIGKILL"), "the SIGKILL")


def group_members(node, kafka, direction: str) -> dict[str, list[str]]:
    """Each member of the direction's group and the partitions it is assigned."""
    groups = yaml.safe_load((CHART / "values.yaml").read_text())["consumerGroup"]
    group = groups[direction] if isinstance(groups[direction], str) else groups[direction]["groupId"]
    cluster = "source" if direction == "sourceToTarget" else "target"
    return kafka_tool(node, "members", kafka[cluster]["bootstrapServers"], group)["members"]


def test_helm_upgrade_to_three_replicas_spreads_the_partitions_and_loses_nothing(node, kafka, release):
    """`helm upgrade --reuse-values --set replicaCount=3` while records flow: KubeRay adds two
    worker pods, the driver restarts with the new config and starts three members per
    direction, one per worker, and each direction's group spreads its partitions over the
    three; the old members stop gracefully, so nothing is lost."""
    names = [f"{d}-{i}" for d in ("sourceToTarget", "targetToSource") for i in range(3)]

    def spread():
        if len(workers(node, NAMESPACE)) != 3:
            return None
        actors = members_alive(node, NAMESPACE, names)
        if actors is None or len({actors[n]["node_id"] for n in names}) != 3:
            return None
        owned = {d: group_members(node, kafka, d) for d in ("sourceToTarget", "targetToSource")}
        return owned if all(len(m) == 3 and all(m.values()) for m in owned.values()) else None

    def upgrade():
        upgraded = node.helm("upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
                             "--set", "replicaCount=3", check=False, timeout=300)
        assert upgraded.returncode == 0, upgraded.stderr
    stream_through(node, kafka, release, upgrade, spread, "helm upgrade --set replicaCount=3")
    for direction in ("sourceToTarget", "targetToSource"):
        owned = group_members(node, kafka, direction)
        print(direction, owned)
        assert len(owned) == 3 and all(owned.values()), (direction, owned)
    print("pod usage:", pod_usage(node, NAMESPACE))


def test_helm_uninstall_leaves_nothing(node, release):
    namespace = NAMESPACE
    started = time.monotonic()
    node.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "180s", timeout=240)
    release["installed"] = False
    wait_for("the release's pods to go", lambda: not node.get("pods", "-n", namespace)["items"], timeout=180)
    print(f"helm uninstall: every pod gone {time.monotonic() - started:.0f} s after it began")
    left = [f"{i['kind']}/{i['metadata']['name']}" for i in node.get(
        "pods,services,deployments,configmaps,rayclusters,rayjobs", "-n", namespace)["items"]
        if i["metadata"]["name"] != "kube-root-ca.crt"]
    assert left == [], left
    wait_for("no container left on the node", lambda: not node.tasks(), timeout=60)
    volumes = list((node.node / "kubelet" / "pods").glob("*/volumes/*/*"))
    assert volumes == [], volumes


def test_driver_kind_rayjob_runs_replicates_and_stops_gracefully(node, kafka, release):
    """driver.kind: RayJob: KubeRay submits the driver to the head over HTTP (the head
    Service's DNS name), the job RUNS and replicates; uninstalling deletes the RayJob, KubeRay
    stops the Ray job, the driver stops the members gracefully (its log says so) and their
    groups have committed everything they read."""
    assert not release["installed"], "runs after the Deployment's release is gone"
    namespace = "rayjob"
    node.kubectl("create", "namespace", namespace)
    node.kubectl("create", "secret", "generic", "kafka-source-credentials", "-n", namespace,
                 f"--from-literal=password={Path(kafka['source']['sasl']['passwordFile']).read_text().strip()}")
    started = time.monotonic()
    node.helm("install", RELEASE, str(CHART), "--namespace", namespace, "--values", "-", "--wait",
              "--timeout", "600s", input=json.dumps(chart_values(kafka, driver={"kind": "RayJob"})), timeout=660)
    try:
        def running():
            jobs = node.get("rayjobs", "-n", namespace)["items"]
            status = jobs[0].get("status", {}) if len(jobs) == 1 else {}
            return status if status.get("jobStatus") == "RUNNING" else None
        status = wait_for("the RayJob's Ray job RUNNING", running, timeout=300, every=3)
        print(f"RayJob {status.get('jobDeploymentStatus')}, job {status['jobStatus']} "
              f"{time.monotonic() - started:.0f} s after the install began")
        wait_for("the members ALIVE", lambda: members_alive(node, namespace), timeout=240, every=3)
        first = release["next"]
        release["next"] += RECORDS
        produce_all(node, kafka, first, RECORDS)
        for topic, counted in count_all(node, kafka, first, RECORDS, timeout=120).items():
            assert counted["lost"] == 0, (topic, counted)

        # What Helm's uninstall does first: delete the RayJob. KubeRay stops its Ray job, and
        # the driver stops the members within the grace period (its log says so).
        job = node.get("rayjobs", "-n", namespace)["items"][0]
        node.kubectl("delete", "rayjob", "-n", namespace, job["metadata"]["name"], "--wait=true", timeout=120)
        head = ray_head(node, namespace)

        def job_log():
            out = node.kubectl("exec", "-n", namespace, head, "-c", "ray-head", "--", "ray", "job", "logs",
                               "--address", "http://127.0.0.1:8265", job["status"]["jobId"], timeout=60).stdout
            return out if "all members stopped" in out else None
        log = wait_for("the driver's graceful stop in its job's log", job_log, timeout=90, every=3)
        print("\n".join(line for line in log.splitlines() if "received: stopping" in line or "members stopped" in line))
        assert "SIGTERM received: stopping the members" in log
    finally:
        stopping = time.monotonic()
        node.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "180s", timeout=240)
    wait_for("the release's pods to go", lambda: not node.get("pods", "-n", namespace)["items"], timeout=180)
    print(f"helm uninstall: every pod gone {time.monotonic() - stopping:.0f} s after it began")
    # Stopped gracefully: each direction's group committed up to the end of what it read.
    groups = yaml.safe_load((CHART / "values.yaml").read_text())["consumerGroup"]  # the defaults'
    groups = {d: g if isinstance(g, str) else g["groupId"] for d, g in groups.items()}
    for group, topic, cluster in ((groups["sourceToTarget"], "damage", "source"),
                                  (groups["sourceToTarget"], "events-sensor", "source"),
                                  (groups["targetToSource"], "warehouse-events", "target")):
        lag = kafka_tool(node, "lag", kafka[cluster]["bootstrapServers"], group, topic)
        print(group, topic, lag)
        assert lag["lag"] == 0, (group, topic, lag)
    assert node.get("rayjobs,rayclusters,pods", "-n", namespace)["items"] == []
