"""The chart installed on a live control plane, with the KubeRay operator reconciling it.

The control plane (tests/k8s_support.py) is etcd, kube-apiserver, kube-controller-manager,
kube-scheduler v1.34, the KubeRay operator v1.6.1 and KWOK as its only node, inside a network
namespace that has only loopback. KWOK marks scheduled pods Running and Ready without running
them (no container runtime): these tests see what the API server accepts and what the
operator makes of the chart's objects; the Ray side is covered by the local Ray tests.

The first run builds the control plane with Go into ~/.cache/kafka-replicator/k8s (about
10 minutes on 2 cores); later runs start it in about 15 s.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest
import yaml

from k8s_support import CACHE, KUBERAY_VERSION, Missing, build_tools, control_plane, wait_for
from test_chart import (
    ALERTS,
    BOTH_DIRECTIONS,
    CHART,
    CRD_DIR,
    SASL_FROM_SECRET,
    VARIATIONS,
    dashboard_exprs,
    find_helm,
    millicpu,
    nbytes,
    ray_resources,
    render,
)

# The first test of a cold machine builds the control plane (18 minutes seen on a loaded
# 2-core machine) inside its timeout.
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(3600)]

RELEASE = "kafka-replicator"
CLUSTER = "kafka-replicator"  # the RayCluster's name for this release name
OURS = f"app.kubernetes.io/instance={RELEASE}"


@pytest.fixture(scope="module")
def k8s(tmp_path_factory):
    report = lambda message: print(message, flush=True)  # noqa: E731
    try:
        build_tools(report)  # Missing only when something must be built and Go is not there
    except Missing as missing:
        pytest.skip(f"no local control plane: {missing}")
    helm = find_helm()
    try:
        with control_plane(tmp_path_factory.mktemp("k8s"), helm, report=report) as plane:
            yield plane
            # Every reconcile of every RayCluster above went without this error (the chart
            # once rendered the worker's Ray resources in a form the operator cannot parse).
            log = plane.log("ray-operator")
            assert "failed to get resources map" not in log and "failed to unmarshal resources" not in log
    except Missing as missing:
        pytest.skip(f"no local control plane: {missing}")


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def install(k8s, namespace: str, values: dict, *, command: str = "install", extra: tuple = (),
            check: bool = True) -> subprocess.CompletedProcess:
    if command == "install":
        k8s.kubectl("create", "namespace", namespace, check=False)
    return k8s.helm(command, RELEASE, str(CHART), "--namespace", namespace, "--values", "-",
                    "--wait", "--timeout", "180s", *extra, input=json.dumps(values), check=check,
                    timeout=240)


def ray_cluster(k8s, namespace: str) -> dict:
    return k8s.get("raycluster", CLUSTER, "-n", namespace)


def wait_ready(k8s, namespace: str, workers: int) -> dict:
    """The RayCluster `ready` with its head and `workers` worker pods Running."""
    def ready():
        cluster = ray_cluster(k8s, namespace)
        pods = running_pods(k8s, namespace)
        return cluster if (cluster.get("status", {}).get("state") == "ready"
                           and len(pods["head"]) == 1 and len(pods["worker"]) == workers) else None
    return wait_for(f"RayCluster {namespace}/{CLUSTER} ready with {workers} workers", ready)


def running_pods(k8s, namespace: str) -> dict[str, list[dict]]:
    pods = k8s.get("pods", "-n", namespace, "-l", f"ray.io/cluster={CLUSTER}")["items"]
    out: dict[str, list[dict]] = {"head": [], "worker": []}
    for pod in pods:
        if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp"):
            out[pod["metadata"]["labels"]["ray.io/node-type"]].append(pod)
    return out


def container(pod_or_template: dict, name: str | None = None) -> dict:
    containers = pod_or_template["spec"]["containers"]
    return next(c for c in containers if c["name"] == name) if name else containers[0]


def same_quantities(got: dict, want: dict) -> bool:
    def norm(section):
        return {k: (millicpu(v) if k == "cpu" else nbytes(v)) for k, v in (section or {}).items()}
    return all(norm(got.get(s)) == norm(want.get(s)) for s in ("requests", "limits"))


def ray_start_args(pod: dict) -> list[str]:
    """What bash hands `ray start` from the command KubeRay generated for the pod."""
    ray = container(pod)
    # KubeRay: command ["/bin/bash", "-c", "--"], args ["ulimit -n 65536; ray start ..."]
    assert ray["command"][:1] == ["/bin/bash"] and ray["command"][1].startswith("-"), ray["command"]
    script = " ".join(ray["command"][3:] + ray.get("args", []))
    command = next(part for part in script.split(";") if "ray start" in part)
    words = shlex.split(command)  # bash's quote removal, for the quoting KubeRay uses
    return words[words.index("start") + 1:]


def ray_custom_resources(pod: dict) -> dict:
    """The custom resources `ray start` gets, parsed by Ray's own CLI."""
    args = ray_start_args(pod)
    try:
        from ray._private.utils import parse_resources_json
        from ray.scripts.scripts import start
    except ImportError:  # Ray is the optional [ray] extra: parse the flag the way it does
        value = next(a.split("=", 1)[1] for a in args if a.startswith("--resources="))
        return json.loads(value)
    context = start.make_context("start", list(args))
    return parse_resources_json(context.params["resources"], None, None)


def expected_pod_templates(values: dict) -> dict[str, dict]:
    """The chart's rendered pod templates: head, worker/<group>, driver."""
    docs = render(find_helm(), values)
    out = {}
    for doc in docs:
        if doc["kind"] == "RayCluster":
            out["head"] = doc["spec"]["headGroupSpec"]["template"]
            for group in doc["spec"]["workerGroupSpecs"]:
                out[f"worker/{group['groupName']}"] = group["template"]
        elif doc["kind"] == "Deployment":
            out["driver"] = doc["spec"]["template"]
    return out


def check_pod_against_template(pod: dict, template: dict) -> None:
    """The pod KubeRay (or the Deployment) made carries what the chart asked for."""
    name = pod["metadata"]["name"]
    for key, value in template["metadata"]["labels"].items():
        assert pod["metadata"]["labels"].get(key) == value, (name, key)
    want_spec, got_spec = template["spec"], pod["spec"]
    assert got_spec["securityContext"] == {**got_spec["securityContext"], **want_spec["securityContext"]}, name
    assert got_spec["serviceAccountName"] == want_spec["serviceAccountName"], name
    for want in want_spec["containers"]:
        got = container(pod, want["name"])
        assert same_quantities(got["resources"], want["resources"]), (name, want["name"], got["resources"])
        assert got["securityContext"] == want["securityContext"], (name, want["name"])
        got_env = {e["name"]: e for e in got.get("env", [])}
        for env in want.get("env", []):
            assert got_env[env["name"]] == env, (name, env["name"])
        got_mounts = {m["mountPath"]: m for m in got.get("volumeMounts", [])}
        for mount in want.get("volumeMounts", []):
            assert got_mounts[mount["mountPath"]]["name"] == mount["name"], (name, mount["mountPath"])
    got_volumes = {v["name"]: v for v in got_spec.get("volumes", [])}
    for volume in want_spec.get("volumes", []):
        for source in ("configMap", "secret", "emptyDir"):
            if source in volume:
                assert source in got_volumes[volume["name"]], (name, volume["name"])
                if source in ("configMap", "secret"):
                    key = "name" if source == "configMap" else "secretName"
                    assert got_volumes[volume["name"]][source][key] == volume[source][key]


def leftovers(k8s, namespace: str, keep_secrets: set[str] = frozenset()) -> list[str]:
    kinds = ("pods,services,deployments,replicasets,configmaps,serviceaccounts,secrets,rayclusters,rayjobs,"
             "endpointslices,jobs,podmonitors,prometheusrules")
    items = k8s.get(kinds, "-n", namespace)["items"]
    left = []
    for item in items:
        name = item["metadata"]["name"]
        if (item["kind"], name) in {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}:
            continue
        if item["kind"] == "Secret" and name in keep_secrets:
            continue
        left.append(f"{item['kind']}/{name}")
    return left


# ----------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------


def test_the_control_plane_is_the_one_we_claim(k8s):
    version = json.loads(k8s.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert version["gitVersion"].startswith("v1.34."), version
    # The operator serves the CRDs the chart tests validate against.
    for path in sorted(CRD_DIR.glob("*.yaml")):
        ours = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        served = k8s.get("crd", ours["metadata"]["name"])
        assert served["spec"]["versions"] == ours["spec"]["versions"], f"{path.name} differs from KubeRay {KUBERAY_VERSION}'s"
        assert (CACHE / f"kuberay-{KUBERAY_VERSION}" / "crds" / path.name).read_text() == path.read_text()
    # Nothing can leave: the namespace has no interface but loopback.
    assert set(re.findall(r"^\s*(\w+):", k8s.run(["cat", "/proc/net/dev"]).stdout, re.M)) == {"lo"}


def test_default_values_install_and_the_operator_creates_the_ray_pods(k8s):
    namespace = "defaults"
    install(k8s, namespace, {})
    cluster = wait_ready(k8s, namespace, workers=1)
    templates = expected_pod_templates({})
    pods = running_pods(k8s, namespace)
    check_pod_against_template(pods["head"][0], templates["head"])
    check_pod_against_template(pods["worker"][0], templates["worker/replicators"])
    assert pods["worker"][0]["metadata"]["labels"]["ray.io/group"] == "replicators"
    # The pinning resource reaches `ray start` as JSON that Ray parses.
    assert ray_custom_resources(pods["worker"][0]) == {"kafka-replicator-sourceToTarget": 1.0}
    assert ray_resources(cluster["spec"]["workerGroupSpecs"][0]["rayStartParams"]) == {"kafka-replicator-sourceToTarget": 1}
    head_args = ray_start_args(pods["head"][0])
    assert "--head" in head_args and "--num-cpus=0" in head_args

    # The driver Deployment runs and points at the head Service KubeRay created.
    deployment = k8s.get("deployment", f"{RELEASE}-driver", "-n", namespace)
    assert deployment["status"]["availableReplicas"] == 1
    driver_pods = k8s.get("pods", "-n", namespace, "-l", "app.kubernetes.io/component=driver")["items"]
    assert len(driver_pods) == 1 and driver_pods[0]["status"]["phase"] == "Running"
    check_pod_against_template(driver_pods[0], templates["driver"])
    env = {e["name"]: e.get("value") for e in container(driver_pods[0])["env"]}
    service = k8s.get("service", f"{CLUSTER}-head-svc", "-n", namespace)
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert env["RAY_ADDRESS"] == f"ray://{CLUSTER}-head-svc:{ports['client']}"
    assert service["spec"]["selector"].items() <= pods["head"][0]["metadata"]["labels"].items()
    dashboard = k8s.get("service", f"{RELEASE}-dashboard", "-n", namespace)
    assert dashboard["spec"]["selector"].items() <= pods["head"][0]["metadata"]["labels"].items()

    # What there is for the release: the README's list.
    made = sorted(f"{i['kind']}/{i['metadata']['name']}" for i in
                  k8s.get("serviceaccounts,configmaps,deployments,services,rayclusters,pods", "-n", namespace)["items"]
                  if i["metadata"]["name"] not in ("default", "kube-root-ca.crt"))
    print("\n".join(made))
    assert [m for m in made if not m.startswith("Pod/")] == [
        "ConfigMap/kafka-replicator-config", "ConfigMap/kafka-replicator-scripts",
        "Deployment/kafka-replicator-driver", "RayCluster/kafka-replicator",
        "Service/kafka-replicator-dashboard", "Service/kafka-replicator-head-svc",
        "ServiceAccount/kafka-replicator"]


SECRET_VALUES = {
    "kafka-source-credentials": {"password": "src-sasl-Zq8v1"},
    "kafka-source-tls": {"ca.crt": "CA-PEM-x7", "tls.crt": "CERT-PEM-x7", "tls.key": "KEY-PEM-x7",
                         "key-password": "src-keypass-Jw3"},
    "kafka-target-credentials": {"pw": "tgt-sasl-Pp02"},
}


def test_sasl_and_tls_from_secrets_reach_the_pods_by_reference(k8s):
    namespace = "secrets"
    k8s.kubectl("create", "namespace", namespace)
    for name, data in SECRET_VALUES.items():
        k8s.kubectl("create", "secret", "generic", name, "-n", namespace,
                    *(f"--from-literal={k}={v}" for k, v in data.items()))
    values = {**SASL_FROM_SECRET, **BOTH_DIRECTIONS}
    install(k8s, namespace, values)
    wait_ready(k8s, namespace, workers=1)
    templates = expected_pod_templates(values)
    pods = running_pods(k8s, namespace)
    driver = k8s.get("pods", "-n", namespace, "-l", "app.kubernetes.io/component=driver")["items"]
    everything = [("head", pods["head"][0]), ("worker/replicators", pods["worker"][0]), ("driver", driver[0])]
    for template_name, pod in everything:
        check_pod_against_template(pod, templates[template_name])
        env = {e["name"]: e for e in container(pod)["env"]}
        assert env["SOURCE_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-source-credentials", "key": "password"}
        assert env["SOURCE_KAFKA_SSL_KEY_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-source-tls", "key": "key-password"}
        assert env["TARGET_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-target-credentials", "key": "pw"}
        tls = next(m for m in container(pod)["volumeMounts"] if m["mountPath"] == "/etc/kafka-replicator-tls/source")
        assert tls.get("readOnly") is True
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == tls["name"])
        assert volume["secret"]["secretName"] == "kafka-source-tls"
    assert ray_custom_resources(pods["worker"][0]) == {"kafka-replicator-sourceToTarget": 1.0,
                                                       "kafka-replicator-targetToSource": 1.0}
    # No Secret's value anywhere in what the chart or the operator made.
    made = json.dumps(k8s.get("pods,configmaps,deployments,rayclusters,services", "-n", namespace))
    for data in SECRET_VALUES.values():
        for value in data.values():
            assert value not in made


def test_rayjob_driver_is_accepted_by_the_operator_and_targets_the_head(k8s):
    namespace = "rayjob"
    values = VARIATIONS["rayjob-driver"]
    install(k8s, namespace, values)
    wait_ready(k8s, namespace, workers=1)
    assert not k8s.get("deployments", "-n", namespace)["items"]
    jobs = k8s.get("rayjobs", "-n", namespace)["items"]
    assert len(jobs) == 1
    name = jobs[0]["metadata"]["name"]

    def validated():
        status = k8s.get("rayjob", name, "-n", namespace).get("status", {})
        state = status.get("jobDeploymentStatus")
        return status if state in ("ValidationFailed", "Failed") or (state and status.get("dashboardURL")) else None
    status = wait_for("the RayJob to pass validation and find its cluster", validated, timeout=60)
    # Was: ValidationFailed, "BackoffLimit is incompatible with ClusterSelector mode".
    assert status["jobDeploymentStatus"] not in ("ValidationFailed", "Failed"), status
    assert status.get("reason") != "ValidationFailed", status
    assert status["rayClusterName"] == CLUSTER
    assert status["dashboardURL"] == f"{CLUSTER}-head-svc.{namespace}.svc.cluster.local:8265", status
    # The operator submits the driver to the head Service's dashboard; in the namespace
    # with only loopback, its connection fails on the spot (nothing leaves the machine).
    head_api = f"http://{CLUSTER}-head-svc.{namespace}.svc.cluster.local:8265/api/jobs/"
    wait_for("the operator to call the head's job API",
             lambda: head_api in k8s.log("ray-operator"), timeout=60)
    assert "network is unreachable" in k8s.log("ray-operator")
    events = k8s.get("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    assert not [e for e in events if "invalid" in e.get("message", "").lower()], events
    # The operator left our RayCluster alone (clusterSelector: it is not the job's to manage).
    assert ray_cluster(k8s, namespace)["metadata"].get("ownerReferences") is None
    k8s.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")
    wait_for("nothing left of the RayJob release", lambda: not leftovers(k8s, namespace))


def test_one_worker_group_per_direction(k8s):
    namespace = "per-direction"
    values = {"replicaCount": 2, **BOTH_DIRECTIONS, "worker": {"groupPerDirection": True}}
    install(k8s, namespace, values)
    wait_ready(k8s, namespace, workers=4)
    templates = expected_pod_templates(values)
    by_group: dict[str, list[dict]] = {}
    for pod in running_pods(k8s, namespace)["worker"]:
        by_group.setdefault(pod["metadata"]["labels"]["ray.io/group"], []).append(pod)
    assert {g: len(p) for g, p in by_group.items()} == {"source-to-target": 2, "target-to-source": 2}
    for group, pods in by_group.items():
        direction = {"source-to-target": "sourceToTarget", "target-to-source": "targetToSource"}[group]
        for pod in pods:
            check_pod_against_template(pod, templates[f"worker/{group}"])
            assert ray_custom_resources(pod) == {f"kafka-replicator-{direction}": 1.0}, pod["metadata"]["name"]


def test_upgrade_rolls_the_driver_and_scales_the_workers_then_uninstall_leaves_nothing(k8s):
    namespace = "upgrade"
    install(k8s, namespace, {})
    cluster = wait_ready(k8s, namespace, workers=1)
    workers_before = {p["metadata"]["uid"] for p in running_pods(k8s, namespace)["worker"]}

    def driver_pod():
        pods = [p for p in k8s.get("pods", "-n", namespace, "-l", "app.kubernetes.io/component=driver")["items"]
                if not p["metadata"].get("deletionTimestamp")]
        return pods[0] if len(pods) == 1 and pods[0]["status"].get("phase") == "Running" else None
    before = driver_pod()

    # A replication change: the driver rolls, Ray stays as it is.
    changed = {"replication": {"sourceToTarget": {"topics": [{"sourceTopicName": "orders"}]}}}
    install(k8s, namespace, changed, command="upgrade")
    after = wait_for("the new driver pod", lambda: (p := driver_pod()) and p["metadata"]["uid"] != before["metadata"]["uid"] and p)
    checksum = lambda pod: pod["metadata"]["annotations"]["checksum/config"]  # noqa: E731
    assert checksum(after) != checksum(before)
    config = yaml.safe_load(k8s.get("configmap", f"{RELEASE}-config", "-n", namespace)["data"]["config.yaml"])
    assert [t["sourceTopicName"] for t in config["replication"]["sourceToTarget"]["topics"]] == ["orders"]
    same = ray_cluster(k8s, namespace)
    assert same["metadata"]["uid"] == cluster["metadata"]["uid"]
    assert {p["metadata"]["uid"] for p in running_pods(k8s, namespace)["worker"]} == workers_before

    # replicaCount: the worker group grows; the running workers stay.
    install(k8s, namespace, {**changed, "replicaCount": 3}, command="upgrade")
    scaled = wait_ready(k8s, namespace, workers=3)
    assert scaled["metadata"]["uid"] == cluster["metadata"]["uid"]
    assert scaled["spec"]["workerGroupSpecs"][0]["replicas"] == 3
    assert workers_before <= {p["metadata"]["uid"] for p in running_pods(k8s, namespace)["worker"]}
    rolled = wait_for("the driver rolled for 3 members", lambda: (p := driver_pod()) and p["metadata"]["uid"] != after["metadata"]["uid"] and p)
    assert checksum(rolled) != checksum(after)

    k8s.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")
    wait_for("nothing of the release left", lambda: not leftovers(k8s, namespace), timeout=120)
    assert not k8s.get("all", "-n", namespace, "-l", OURS)["items"]


CHART_REFUSALS = [
    # values the chart refuses (schema or template checks): (values, what the error names)
    ({"replicaCount": -1}, "/replicaCount"),
    ({"driver": {"kind": "Job"}}, "/driver/kind"),
    ({"sourceKafka": {"saslPassword": "x"}}, "sourceKafka.saslPassword"),
    # The API server refuses a malformed quantity of a built-in kind without naming the
    # field ("quantities must match the regular expression"): the schema checks them all.
    ({"driver": {"resources": {"requests": {"cpu": "2 cores"}}}}, "/driver/resources/requests/cpu"),
]

API_REFUSALS = [
    # values the chart lets through, the API server refuses: (values, field named in the error)
    ({"podLabels": {"team": "x" * 64}}, "spec.template.labels"),
    ({"serviceAccount": {"name": "s" * 254}}, "metadata.name"),
    ({"driver": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}},
     "spec.template.spec.containers[0].resources.requests"),
]


def test_bad_values_are_refused_before_anything_is_created(k8s):
    namespace = "bad-values"
    k8s.kubectl("create", "namespace", namespace)
    for values, field in CHART_REFUSALS:
        result = k8s.helm("install", RELEASE, str(CHART), "--namespace", namespace, "--values", "-",
                          input=json.dumps(values), check=False)
        assert result.returncode != 0, values
        assert field in result.stderr, result.stderr
        assert not leftovers(k8s, namespace), (values, leftovers(k8s, namespace))
        assert not json.loads(k8s.helm("list", "-a", "-n", namespace, "-o", "json").stdout)


@pytest.mark.parametrize("values, field", API_REFUSALS, ids=[f for _, f in API_REFUSALS])
def test_what_only_the_api_server_refuses_is_refused_naming_the_field(k8s, values, field):
    namespace = "api-refusals"
    k8s.kubectl("create", "namespace", namespace, check=False)
    result = k8s.helm("install", RELEASE, str(CHART), "--namespace", namespace, "--values", "-",
                      input=json.dumps(values), check=False)
    try:
        assert result.returncode != 0, f"{values} was accepted"
        assert field in result.stderr, result.stderr
    finally:
        k8s.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", check=False)
        wait_for("the failed release gone", lambda: not leftovers(k8s, namespace), timeout=60)


def check_rules(k8s, tmp_path, name: str, groups: list[dict]) -> subprocess.CompletedProcess:
    """Prometheus' own rule-file checks (what `promtool check rules` does)."""
    path = tmp_path / f"{name}.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return subprocess.run([str(k8s.tools["prometheus"] / "check-rules"), str(path)],
                          capture_output=True, text=True, timeout=60)


def test_alerts_and_dashboard_on_the_live_control_plane(k8s, tmp_path):
    namespace = "alerts"
    values = VARIATIONS["alerts-and-dashboard"]
    install(k8s, namespace, values)
    wait_ready(k8s, namespace, workers=1)
    # The API server took them, validated by the Prometheus Operator's CRDs.
    rule = k8s.get("prometheusrule", RELEASE, "-n", namespace)
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} == ALERTS
    assert k8s.get("podmonitor", f"{RELEASE}-ray", "-n", namespace)["spec"]["selector"]["matchLabels"] == {"ray.io/cluster": CLUSTER}
    dashboard = k8s.get("configmap", f"{RELEASE}-grafana-dashboard", "-n", namespace)
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["kafka-replicator.json"])["uid"] == "kafka-replicator"

    # The rules as the API server stored them pass Prometheus' checks ...
    result = check_rules(k8s, tmp_path, "alerts", rule["spec"]["groups"])
    assert result.returncode == 0 and f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stderr
    # ... and so does every dashboard query (Grafana's variables filled in) ...
    exprs = dashboard_exprs([{"kind": "ConfigMap", **dashboard}])
    filled = [e.replace("$__rate_interval", "5m").replace("$namespace", namespace).replace("$cluster", CLUSTER)
              for e in exprs]
    result = check_rules(k8s, tmp_path, "dashboard", [{"name": "dashboard", "rules": [
        {"record": f"kafka_replicator:panel_{i}", "expr": e} for i, e in enumerate(filled)]}])
    assert result.returncode == 0 and f"SUCCESS: {len(filled)} rules found" in result.stdout, result.stderr
    # ... which do refuse a broken expression.
    broken = check_rules(k8s, tmp_path, "broken", [{"name": "x", "rules": [
        {"alert": "Broken", "expr": "sum by (direction (ray_kafka_replicator_consumer_lag) > 1"}]}])
    assert broken.returncode != 0 and "parse error" in broken.stderr, broken

    # A bad duration is refused by the schema, before anything is created.
    bad = k8s.helm("upgrade", RELEASE, str(CHART), "--namespace", namespace, "--reuse-values",
                   "--set", "metrics.prometheusRule.lagFor=10 minutes", check=False)
    assert bad.returncode != 0 and "/metrics/prometheusRule/lagFor" in bad.stderr, bad.stderr
    k8s.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")
    wait_for("nothing of the release left", lambda: not leftovers(k8s, namespace), timeout=120)
