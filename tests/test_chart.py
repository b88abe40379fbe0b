"""The Helm chart in charts/kafka-replicator: lint, render, validate, and its config.

* `helm lint` and `helm template` for the default values and variations;
* every rendered RayCluster/RayJob against the KubeRay v1.6.1 CRD schemas in
  tests/kuberay-crds (copied from the operator module's config/crd/bases, the ones
  tests/test_k8s.py installs and checks; unknown fields rejected), built-in kinds against the
  Kubernetes schemas shipped with kubernetes-validate;
* the ConfigMap's config loads with the replicator's own model and equals what the
  values asked for; wrong values make helm fail with a message naming the field.

Helm comes from $HELM, PATH, or ~/.cache/kafka-replicator/helm/bin/helm; when none is
there it is built with the machine's Go (`go install helm.sh/helm/v3/cmd/helm@<version>`).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import typing
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from replicator.config import (
    CHART_ONLY_KEYS,
    ClusterConfig,
    ConsumerConfig,
    DirectionConfig,
    GroupConfig,
    ProducerConfig,
    ReplicatorConfig,
    ResourceAmounts,
    Route,
    SyncAcls,
    SyncGroupOffsets,
    load_config,
    parse_config,
)
from replicator.errors import ConfigError
from workbench.sandbox import cache_root

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "kafka-replicator"
CRD_DIR = Path(__file__).resolve().parent / "kuberay-crds"  # KubeRay v1.6.1, Apache-2.0
HELM_VERSION = "v3.22.0"
HELM_CACHE_BIN = cache_root() / "helm" / "bin"
# Oldest and newest Kubernetes versions whose schemas kubernetes-validate ships that we claim.
K8S_VERSIONS = ("1.29.0", "1.37.0")
RELEASE = "kafka-replicator"
NAMESPACE = "replication"
BUILTIN_GROUPS = ("v1", "apps/v1", "batch/v1", "policy/v1", "rbac.authorization.k8s.io/v1")
SECRET_ENVS = {
    ("sourceKafka", "saslPassword"): "SOURCE_KAFKA_SASL_PASSWORD",
    ("sourceKafka", "sslKeyPassword"): "SOURCE_KAFKA_SSL_KEY_PASSWORD",
    ("targetKafka", "saslPassword"): "TARGET_KAFKA_SASL_PASSWORD",
    ("targetKafka", "sslKeyPassword"): "TARGET_KAFKA_SSL_KEY_PASSWORD",
}


# ----------------------------------------------------------------------------------------
# helm
# ----------------------------------------------------------------------------------------


def find_helm() -> str:
    """$HELM, then helm on PATH, then the cached build; else build it there with Go."""
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    cached = HELM_CACHE_BIN / "helm"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    go = shutil.which("go")
    if go is None:
        pytest.fail(
            "helm not found: set $HELM, put helm on PATH, or install Go so that the tests "
            f"can build it into {HELM_CACHE_BIN}"
        )
    HELM_CACHE_BIN.mkdir(parents=True, exist_ok=True)
    build = subprocess.run(
        [go, "install", f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"],
        env={**os.environ, "GOBIN": str(HELM_CACHE_BIN)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if build.returncode != 0 or not cached.is_file():
        pytest.fail(f"building helm with go install failed:\n{build.stderr[-3000:]}")
    return str(cached)


@pytest.fixture(scope="session")
def helm() -> str:
    return find_helm()


class HelmFailed(Exception):
    pass


@functools.lru_cache(maxsize=None)
def _template(helm: str, values_json: str, extra: tuple[str, ...], release: str) -> str:
    args = [helm, "template", release, str(CHART), "--namespace", NAMESPACE, *extra]
    values = json.loads(values_json)
    if values:
        # helm reads JSON as YAML
        args += ["--values", "-"]
    result = subprocess.run(
        args, input=json.dumps(values) if values else None, capture_output=True, text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise HelmFailed(result.stderr)
    return result.stdout


def render(helm: str, values: dict | None = None, *extra: str, release: str = RELEASE) -> list[dict]:
    """The documents `helm template` renders for these values (and extra arguments)."""
    text = _template(helm, json.dumps(values or {}, sort_keys=True), tuple(extra), release)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_error(helm: str, values: dict | None = None, *extra: str) -> str:
    with pytest.raises(HelmFailed) as failure:
        render(helm, values, *extra)
    return str(failure.value)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict], kind: str, suffix: str = "") -> dict:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"expected one {kind} named *{suffix}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def rendered_config(docs: list[dict]) -> dict:
    return yaml.safe_load(one(docs, "ConfigMap", "-config")["data"]["config.yaml"])


# ----------------------------------------------------------------------------------------
# What the values ask for, computed independently of the templates
# ----------------------------------------------------------------------------------------

DEFAULT_VALUES = yaml.safe_load((CHART / "values.yaml").read_text())


def merge(base: dict, override: dict) -> dict:
    """Helm's coalescing of user values onto the chart's: maps merge, None deletes."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def expected_config(overrides: dict) -> dict:
    """The replicator config the values describe: chart-only keys out, Secrets as env names
    and TLS Secrets as file paths."""
    values = merge(DEFAULT_VALUES, overrides)
    config = {k: v for k, v in values.items() if k not in CHART_ONLY_KEYS}
    for side, tls_dir in (("sourceKafka", "source"), ("targetKafka", "target")):
        cluster = config[side]
        for what in ("saslPassword", "sslKeyPassword"):
            if cluster.pop(f"{what}Secret", None):
                cluster[f"{what}Env"] = SECRET_ENVS[(side, what)]
        tls = cluster.pop("tlsSecret", None)
        if tls:
            for field, key in (("sslCaFile", tls.get("caKey", "ca.crt")),
                               ("sslCertFile", tls.get("certKey")),
                               ("sslKeyFile", tls.get("keyKey"))):
                if key:
                    cluster[field] = f"/etc/kafka-replicator-tls/{tls_dir}/{key}"
    return config


def members(config: ReplicatorConfig) -> dict[str, int]:
    return {d: config.members(d) for d in config.enabled_directions()}


def millicpu(quantity) -> int:
    text = str(quantity)
    return round(float(text[:-1])) if text.endswith("m") else round(float(text) * 1000)


UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def nbytes(quantity) -> int:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity))
    number, unit = match.groups()
    return round(float(number) * UNITS.get(unit, 1))


def ray_resources(params: dict) -> dict:
    """The custom Ray resources of a group's rayStartParams: JSON in single quotes, the form
    KubeRay writes itself (it strips the quotes and parses the JSON; bash hands `ray start`
    the bare JSON)."""
    text = params["resources"]
    assert text[0] == text[-1] == "'" and "'" not in text[1:-1], text
    return json.loads(text[1:-1])


# ----------------------------------------------------------------------------------------
# Schemas
# ----------------------------------------------------------------------------------------


def _strict(schema):
    """Reject unknown fields: additionalProperties false wherever an object lists its
    properties, unless it says x-kubernetes-preserve-unknown-fields or already decides."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    if not CRD_DIR.is_dir():
        pytest.fail(f"KubeRay CRDs not found in {CRD_DIR}")
    # ray.io_rayclusters.yaml, ray.io_rayjobs.yaml: large files, read with libyaml if there
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for path in sorted(CRD_DIR.glob(f"ray.io_{kind.lower()}s.yaml")) or sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=loader)
        if crd["spec"]["names"]["kind"] != kind:
            continue
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schema = _strict(version["schema"]["openAPIV3Schema"])
        # OpenAPI v3.0 schemas are draft-4 shaped.
        return jsonschema.Draft4Validator(schema)
    raise AssertionError(f"no CRD for kind {kind} in {CRD_DIR}")


def crd_errors(doc: dict) -> list[str]:
    assert doc["apiVersion"] == "ray.io/v1"
    validator = crd_validator(doc["kind"])
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def validate_all(docs: list[dict]) -> None:
    """Every RayCluster/RayJob against its CRD, every built-in kind against Kubernetes."""
    for doc in docs:
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["apiVersion"].startswith("ray.io/"):
            errors = crd_errors(doc)
            assert not errors, f"{where} does not match the KubeRay CRD:\n" + "\n".join(errors)
        elif doc["apiVersion"] in BUILTIN_GROUPS:
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(f"{where} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    """Every pod spec rendered: driver, ray head, ray worker groups."""
    specs = {}
    for doc in docs:
        if doc["kind"] == "Deployment":
            specs[doc["metadata"]["name"]] = doc["spec"]["template"]
        elif doc["kind"] == "RayCluster":
            specs["head"] = doc["spec"]["headGroupSpec"]["template"]
            for group in doc["spec"].get("workerGroupSpecs", []):
                specs[f"worker/{group['groupName']}"] = group["template"]
    return specs


# ----------------------------------------------------------------------------------------
# Variations rendered and checked the same way
# ----------------------------------------------------------------------------------------

SASL_FROM_SECRET = {
    "sourceKafka": {
        "bootstrapServers": "kafka-0.kafka:9093",
        "securityProtocol": "SASL_SSL",
        "saslMechanism": "SCRAM-SHA-512",
        "saslUsername": "replicator",
        "saslPasswordSecret": {"name": "kafka-source-credentials", "key": "password"},
        "tlsSecret": {"name": "kafka-source-tls", "caKey": "ca.crt", "certKey": "tls.crt", "keyKey": "tls.key"},
        "sslKeyPasswordSecret": {"name": "kafka-source-tls", "key": "key-password"},
    },
    "targetKafka": {
        "bootstrapServers": "warehouse:9094",
        "securityProtocol": "SASL_PLAINTEXT",
        "saslMechanism": "PLAIN",
        "saslUsername": "replicator-wh",
        "saslPasswordSecret": {"name": "kafka-target-credentials", "key": "pw"},
    },
}
BOTH_DIRECTIONS = {
    "replication": {
        "targetToSource": {
            "enabled": True,
            "topics": [{"sourceTopicName": "warehouse-events", "targetTopicName": "warehouse-events"}],
        }
    }
}
ONLY_TARGET_TO_SOURCE = {
    "replication": {
        "sourceToTarget": {"enabled": False},
        "targetToSource": {"enabled": True, "topics": [{"sourceTopicName": "warehouse-events"}]},
    }
}

VARIATIONS = {
    "defaults": {},
    "replicaCount-1": {"replicaCount": 1},
    "replicaCount-3": {"replicaCount": 3},
    "replicaCount-5": {"replicaCount": 5},
    "replicaCount-5-both-directions": {"replicaCount": 5, **BOTH_DIRECTIONS},
    "source-to-target-disabled": ONLY_TARGET_TO_SOURCE,
    "sasl-and-tls-from-secrets": {**SASL_FROM_SECRET, **BOTH_DIRECTIONS},
    "custom-resources": {
        "resources": {"requests": {"cpu": "1500m", "memory": "2Gi"}, "limits": {"cpu": 2, "memory": "3Gi"}},
        "worker": {"overhead": {"cpu": "500m", "memory": "768Mi"}},
        "head": {"resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}},
        "driver": {"resources": {"requests": {"cpu": "200m", "memory": "512Mi"}}},
    },
    "no-limits": {"resources": {"limits": None}},
    "production-like": {
        "replicaCount": 3,
        "consumerGroup": {
            "sourceToTarget": {
                "groupId": "kafka-replicator-s2t-prod",
                "sessionTimeoutMs": 45000,
                "heartbeatIntervalMs": 3000,
                "maxPollRecords": 100,
                "maxPollIntervalMs": 600000,
                "autoOffsetReset": "earliest",
                "enableAutoCommit": False,
                "autoCommitIntervalMs": 5000,
            },
        },
        "consumer": {"autoOffsetReset": "latest", "fetchMaxBytes": 10485760},
        "producer": {"lingerMs": 0, "compressionType": "zstd"},
        "shutdownGracePeriodSeconds": 60,
        "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}},
    },
    "group-id-strings": {"consumerGroup": {"sourceToTarget": "kafka-replicator-s2t-v4", "targetToSource": "kafka-replicator-t2s-v4"}},
    "group-per-direction-autoscaling": {
        "replicaCount": 2,
        **BOTH_DIRECTIONS,
        "worker": {"groupPerDirection": True, "autoscaling": {"enabled": True, "maxReplicas": 8}},
    },
    "per-direction-replicaCount": {
        "replicaCount": 4,
        "replication": {
            "sourceToTarget": {"replicaCount": 2},
            "targetToSource": {"enabled": True, "replicaCount": 6, "topics": [{"sourceTopicName": "wh"}]},
        },
    },
    "rayjob-driver": {"driver": {"kind": "RayJob", "extraArgs": ["--log-level", "DEBUG"]}, **BOTH_DIRECTIONS},
    "extras": {
        "imagePullSecrets": ["regcred", {"name": "other-cred"}],
        "image": {"repository": "registry.example.com/kafka-replicator", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "kafka", "effect": "NoSchedule"}],
        "worker": {"nodeSelector": {"pool": "replicators"}, "logSidecar": {"enabled": False}},
        "podAnnotations": {"team": "data"},
        "podLabels": {"cost-center": "42"},
        "serviceAccount": {"annotations": {"iam.example.com/role": "replicator"}},
        "dashboard": {"service": {"type": "LoadBalancer", "annotations": {"lb": "internal"}}},
        "metrics": {"podMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "ray": {"env": [{"name": "RAY_LOG_TO_STDERR", "value": "0"}]},
    },
    "metrics-off": {"metrics": {"enabled": False}, "dashboard": {"service": {"enabled": False}}},
    "alerts-and-dashboard": {"metrics": {"podMonitor": {"enabled": True},
                                         "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
                                         "grafanaDashboard": {"enabled": True}}},
}


@pytest.fixture(scope="module", params=sorted(VARIATIONS))
def variation(request, helm):
    overrides = VARIATIONS[request.param]
    return request.param, overrides, render(helm, overrides)


# ----------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------


def test_helm_lint(helm, tmp_path):
    for name in ("defaults", "sasl-and-tls-from-secrets", "group-per-direction-autoscaling", "rayjob-driver"):
        values = tmp_path / f"{name}.yaml"
        values.write_text(yaml.safe_dump(VARIATIONS[name]))
        result = subprocess.run([helm, "lint", "--strict", str(CHART), "--values", str(values)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"helm lint ({name}):\n{result.stdout}\n{result.stderr}"


def test_default_render_kinds(helm):
    docs = render(helm)
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == [
        "ConfigMap/kafka-replicator-config",
        "ConfigMap/kafka-replicator-scripts",
        "Deployment/kafka-replicator-driver",
        "RayCluster/kafka-replicator",
        "Service/kafka-replicator-dashboard",
        "ServiceAccount/kafka-replicator",
    ]


def test_rendered_resources_validate(variation):
    _, _, docs = variation
    validate_all(docs)


def test_config_loads_and_equals_values(variation, tmp_path):
    name, overrides, docs = variation
    config_file = tmp_path / "config.yaml"
    config_file.write_text(one(docs, "ConfigMap", "-config")["data"]["config.yaml"])
    assert load_config(config_file) == parse_config(expected_config(overrides)), name
    rendered = rendered_config(docs)
    assert not set(rendered) & CHART_ONLY_KEYS
    for side in ("sourceKafka", "targetKafka"):
        assert not {"saslPasswordSecret", "sslKeyPasswordSecret", "tlsSecret", "saslPassword",
                    "sslKeyPassword"} & set(rendered[side])
    assert parse_config(rendered) == parse_config(expected_config(overrides)), name


def test_the_default_values_render_a_config_that_warns_about_nothing(helm):
    assert parse_config(rendered_config(render(helm, {}))).warnings() == []


def test_ray_cluster_is_sized_from_replicas_and_resources(variation):
    name, overrides, docs = variation
    config = parse_config(rendered_config(docs))
    cluster = one(docs, "RayCluster")
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "no replicator actors on the head"
    groups = cluster["spec"]["workerGroupSpecs"]
    values = merge(DEFAULT_VALUES, overrides)
    need = members(config)
    actor_cpu = millicpu(config.resources.requests.cpu or 0.5)
    actor_mem = nbytes(config.resources.requests.memory) if config.resources.requests.memory else 0
    overhead = values["worker"]["overhead"]
    if values["worker"].get("groupPerDirection"):
        assert sorted(g["groupName"] for g in groups) == sorted(
            {"sourceToTarget": "source-to-target", "targetToSource": "target-to-source"}[d] for d in need)
    else:
        assert [g["groupName"] for g in groups] == ["replicators"]
    for group in groups:
        params = group["rayStartParams"]
        slots = ray_resources(params)
        directions = [k.removeprefix("kafka-replicator-") for k in slots]
        assert set(directions) <= set(need)
        # one pod per member of its busiest direction, room for one member of each direction
        assert group["replicas"] == max(need[d] for d in directions)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        if not values["worker"]["autoscaling"]["enabled"]:
            assert group["minReplicas"] == group["maxReplicas"] == group["replicas"]
        assert int(params["num-cpus"]) * 1000 >= actor_cpu * len(directions)
        if actor_mem:
            assert int(params["memory"]) == actor_mem * len(directions)
        container = group["template"]["spec"]["containers"][0]
        requests = container["resources"]["requests"]
        assert millicpu(requests["cpu"]) == actor_cpu * len(directions) + millicpu(overhead["cpu"])
        assert nbytes(requests["memory"]) == actor_mem * len(directions) + nbytes(overhead["memory"])
        limits = container["resources"].get("limits", {})
        if config.resources.limits.cpu:
            assert millicpu(limits["cpu"]) == millicpu(config.resources.limits.cpu) * len(directions) + millicpu(overhead["cpu"])
        else:
            assert "cpu" not in limits
        if config.resources.limits.memory:
            assert nbytes(limits["memory"]) == nbytes(config.resources.limits.memory) * len(directions) + nbytes(overhead["memory"])
        else:
            assert "memory" not in limits
    # capacity for every member of every enabled direction
    for direction, count in need.items():
        pods = sum(g["replicas"] for g in groups if f"kafka-replicator-{direction}" in g["rayStartParams"]["resources"])
        assert pods >= count


def test_pods_are_hardened_and_get_secrets(variation):
    name, overrides, docs = variation
    config = expected_config(overrides)
    secret_envs = {SECRET_ENVS[(side, what)] for side in ("sourceKafka", "targetKafka")
                   for what in ("saslPassword", "sslKeyPassword")
                   if merge(DEFAULT_VALUES, overrides)[side].get(f"{what}Secret")}
    specs = pod_specs(docs)
    expected_pods = {"head"} | ({"kafka-replicator-driver"} if "Deployment" in {d["kind"] for d in docs} else set())
    assert expected_pods <= set(specs)
    grace = merge(DEFAULT_VALUES, overrides)["shutdownGracePeriodSeconds"]
    for pod_name, template in specs.items():
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, pod_name
        assert spec["terminationGracePeriodSeconds"] > grace, pod_name
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{pod_name}/{container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["requests"], where
        assert "helm.sh/chart" not in template["metadata"]["labels"], "a chart bump alone must not restart pods"
        main = spec["containers"][0]
        if pod_name != "kafka-replicator-driver":
            # Ray stays up while the driver stops the actors (uninstall, scale-in).
            sleep = main["lifecycle"]["preStop"]["exec"]["command"]
            assert sleep[0] == "sleep" and int(sleep[1]) >= grace, pod_name
            assert spec["terminationGracePeriodSeconds"] > int(sleep[1]) + grace, pod_name
        mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]], f"{pod_name}: Ray needs a writable /tmp"
        assert volumes[mounts["/etc/kafka-replicator"]["name"]]["configMap"]["name"] == "kafka-replicator-config"
        if pod_name != "kafka-replicator-driver":
            assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory", pod_name
        env = {e["name"]: e for e in main.get("env", [])}
        for name_ in secret_envs:
            assert "secretKeyRef" in env[name_]["valueFrom"], f"{pod_name} lacks {name_}"
        for side, tls_dir in (("sourceKafka", "source"), ("targetKafka", "target")):
            for field in ("sslCaFile", "sslCertFile", "sslKeyFile"):
                path = config[side].get(field)
                if path:
                    mount = mounts[f"/etc/kafka-replicator-tls/{tls_dir}"]
                    assert volumes[mount["name"]]["secret"]["secretName"]
    # The driver's grace period covers the driver's own graceful stop.
    for deployment in by_kind(docs, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] >= grace + 10


def test_no_password_reaches_a_configmap(helm):
    docs = render(helm, {**SASL_FROM_SECRET, **BOTH_DIRECTIONS})
    config = rendered_config(docs)
    assert config["sourceKafka"]["saslPasswordEnv"] == "SOURCE_KAFKA_SASL_PASSWORD"
    assert config["sourceKafka"]["sslKeyPasswordEnv"] == "SOURCE_KAFKA_SSL_KEY_PASSWORD"
    assert config["targetKafka"]["saslPasswordEnv"] == "TARGET_KAFKA_SASL_PASSWORD"
    assert config["sourceKafka"]["sslCaFile"] == "/etc/kafka-replicator-tls/source/ca.crt"
    for cm in by_kind(docs, "ConfigMap"):
        text = json.dumps(cm["data"])
        assert "kafka-source-credentials" not in text and "Secret" not in text


TLS_FROM_SECRETS = {
    "sourceKafka": {
        "bootstrapServers": "kafka-0.kafka:9093",
        "securityProtocol": "SSL",
        "tlsSecret": {"name": "kafka-source-tls", "caKey": "ca.crt", "certKey": "tls.crt", "keyKey": "tls.key"},
        "sslKeyPasswordSecret": {"name": "kafka-source-key", "key": "key-password"},
    },
    "targetKafka": {
        # Only a CA, under the default key (ca.crt) of a Secret that holds other keys too.
        "bootstrapServers": "warehouse:9094",
        "securityProtocol": "SASL_SSL",
        "saslMechanism": "SCRAM-SHA-512",
        "saslUsername": "replicator-wh",
        "saslPasswordSecret": {"name": "kafka-target-credentials", "key": "pw"},
        "tlsSecret": {"name": "warehouse-ca"},
    },
}


def mounted_secret_key(template: dict, container: dict, path: str) -> tuple[str, str]:
    """(Secret name, key) of the file a container finds at `path`, from its mounts and volumes."""
    mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{container['name']}: nothing is mounted where {path} is"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    assert mount.get("readOnly") is True
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == mount["name"])
    assert "secret" in volume, f"{path} is on volume {volume['name']}, not a Secret"
    file_name = path[len(mount["mountPath"].rstrip("/")) + 1:]
    items = {item["path"]: item["key"] for item in volume["secret"].get("items", [])}
    # Without items, a Secret volume holds one file per key, named after the key.
    key = items[file_name] if items else file_name
    # The files are 0440: the non-root replicator reads them through the pods' fsGroup.
    assert volume["secret"]["defaultMode"] & 0o040 and template["spec"]["securityContext"]["fsGroup"]
    return volume["secret"]["secretName"], key


def test_tls_files_in_the_config_are_the_mounted_secret_keys(helm):
    docs = render(helm, {**TLS_FROM_SECRETS, **BOTH_DIRECTIONS})
    config = rendered_config(docs)
    expected = {
        ("sourceKafka", "sslCaFile"): ("kafka-source-tls", "ca.crt"),
        ("sourceKafka", "sslCertFile"): ("kafka-source-tls", "tls.crt"),
        ("sourceKafka", "sslKeyFile"): ("kafka-source-tls", "tls.key"),
        ("targetKafka", "sslCaFile"): ("warehouse-ca", "ca.crt"),
    }
    assert {(side, field) for side in ("sourceKafka", "targetKafka")
            for field in ("sslCaFile", "sslCertFile", "sslKeyFile") if field in config[side]} == set(expected)
    specs = pod_specs(docs)
    assert {"kafka-replicator-driver", "head"} < set(specs) and any(n.startswith("worker/") for n in specs)
    for pod_name, template in specs.items():
        container = template["spec"]["containers"][0]
        for (side, field), secret_key in expected.items():
            assert mounted_secret_key(template, container, config[side][field]) == secret_key, (pod_name, field)


def test_the_key_password_variable_of_the_config_comes_from_its_secret(helm):
    docs = render(helm, {**TLS_FROM_SECRETS, **BOTH_DIRECTIONS})
    variable = rendered_config(docs)["sourceKafka"]["sslKeyPasswordEnv"]
    for pod_name, template in pod_specs(docs).items():
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "kafka-source-key", "key": "key-password"}, pod_name


def test_the_driver_connects_to_the_cluster_head(helm):
    docs = render(helm)
    cluster = one(docs, "RayCluster")
    driver = one(docs, "Deployment", "-driver")
    assert driver["spec"]["replicas"] == 1
    assert driver["spec"]["strategy"]["type"] == "Recreate", "old actors stop before new ones start"
    container = driver["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "cluster.driver", "--config", "/etc/kafka-replicator/config.yaml",
                                    "--health-port", "8081", "--health-host", "0.0.0.0"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    client_port = cluster["spec"]["headGroupSpec"]["rayStartParams"]["ray-client-server-port"]
    assert env["RAY_ADDRESS"] == f"ray://{cluster['metadata']['name']}-head-svc:{client_port}"
    head_ports = {p["name"]: p["containerPort"] for p in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert head_ports["client"] == int(client_port)
    assert head_ports["dashboard"] == 8265 and head_ports["metrics"] == 8080
    dashboard = one(docs, "Service", "-dashboard")
    assert dashboard["spec"]["selector"] == {"ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": "head"}


def test_the_driver_pod_is_probed_on_its_health_port_readiness_for_replicating(helm):
    container = one(render(helm), "Deployment", "-driver")["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "health", "containerPort": 8081}]
    ready, live = container["readinessProbe"], container["livenessProbe"]
    assert ready["httpGet"] == {"path": "/readyz", "port": "health"}
    assert live["httpGet"] == {"path": "/healthz", "port": "health"}
    # A rebalance or a member Ray restarts makes the pod unready, never restarted: liveness
    # gives a stuck loop minutes, readiness reacts within half a minute.
    assert live["periodSeconds"] * live["failureThreshold"] >= 120
    assert ready["periodSeconds"] * ready["failureThreshold"] <= 30


def test_the_driver_probes_follow_the_values_and_can_be_turned_off(helm):
    docs = render(helm, {"driver": {"health": {"port": 9000, "readinessProbe": {"failureThreshold": 5}}}})
    container = one(docs, "Deployment", "-driver")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-4:] == ["--health-port", "9000", "--health-host", "0.0.0.0"]
    assert container["readinessProbe"]["failureThreshold"] == 5
    off = one(render(helm, {"driver": {"health": {"enabled": False}}}), "Deployment", "-driver")
    container = off["spec"]["template"]["spec"]["containers"][0]
    assert "--health-port" not in container["command"]
    assert not {"ports", "readinessProbe", "livenessProbe"} & set(container)


def test_config_change_rolls_only_the_driver(helm):
    before = render(helm)
    after = render(helm, {"replication": {"sourceToTarget": {"topics": [{"sourceTopicName": "other"}]}}})
    checksum = lambda docs: one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]  # noqa: E731
    assert checksum(before) != checksum(after)
    assert one(before, "RayCluster") == one(after, "RayCluster"), "Ray pods must not restart for a topic change"


def test_scaling_changes_only_worker_replicas(helm):
    small, large = render(helm, {"replicaCount": 1}), render(helm, {"replicaCount": 5})
    small_cluster, large_cluster = one(small, "RayCluster"), one(large, "RayCluster")
    assert [g["replicas"] for g in large_cluster["spec"]["workerGroupSpecs"]] == [5]

    def without_replicas(cluster):
        spec = copy.deepcopy(cluster["spec"])
        for group in spec["workerGroupSpecs"]:
            for key in ("replicas", "minReplicas", "maxReplicas"):
                group.pop(key)
        return spec

    # KubeRay's Recreate upgrade hashes the spec without these fields: scaling adds or
    # removes worker pods and never recreates the running ones.
    assert without_replicas(small_cluster) == without_replicas(large_cluster)
    assert one(small, "Deployment") != one(large, "Deployment"), "the driver restarts with more members"


def test_rayjob_mode_targets_the_cluster(helm):
    docs = render(helm, VARIATIONS["rayjob-driver"])
    assert not by_kind(docs, "Deployment")
    job = one(docs, "RayJob")
    cluster = one(docs, "RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert job["spec"]["submissionMode"] == "HTTPMode"
    # KubeRay refuses a backoffLimit above 0 with clusterSelector (ValidationFailed).
    assert job["spec"].get("backoffLimit", 0) == 0
    assert job["spec"]["entrypoint"] == (
        "python -m cluster.driver --config /etc/kafka-replicator/config.yaml '--log-level' 'DEBUG'")
    assert len(job["metadata"]["name"]) <= 47 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])
    other = one(render(helm, {**VARIATIONS["rayjob-driver"], "replicaCount": 2}), "RayJob")
    assert other["metadata"]["name"] != job["metadata"]["name"], "a config change submits a new RayJob"


def test_crd_validation_rejects_unknown_fields(helm):
    cluster = copy.deepcopy(one(render(helm), "RayCluster"))
    assert crd_errors(cluster) == []
    cluster["spec"]["headGroupSpec"]["rayStartParam"] = {"num-cpus": "0"}
    cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    errors = crd_errors(cluster)
    assert any("rayStartParam" in e for e in errors), errors
    assert any("imagePullPolicy" in e for e in errors), errors


def test_long_release_names_fit_kuberay_limits(helm):
    docs = render(helm, release="replication-of-kafka-topics-between-the-two-clusters")
    name = one(docs, "RayCluster")["metadata"]["name"]
    assert len(name) <= 53 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    validate_all(docs)


INVALID = [
    # (values, --set style extra args, text that must be in helm's error, model also rejects it)
    ({"replicaCount": -1}, (), "/replicaCount", True),
    ({"replication": {"sourceToTarget": {"topics": [{"targetTopicName": "x"}]}}}, (), "sourceTopicName", True),
    ({"consumer": {"autoOffsetReset": "newest"}}, (), "/consumer/autoOffsetReset", True),
    ({"consumerGroup": {"sourceToTarget": {"autoOffsetReset": "smallest"}}}, (), "/consumerGroup/sourceToTarget/autoOffsetReset", True),
    ({"consumerGroup": {"targetToSource": {"groupId": "g", "sessionTimeoutMs": 10000, "heartbeatIntervalMs": 10000}}},
     (), "consumerGroup.targetToSource.heartbeatIntervalMs", True),
    ({"replication": {"sourceToTarget": {"enabled": False}}}, (), "replication: no direction is enabled", True),
    ({"replication": {"targetToSource": {"enabled": True, "topics": []}}}, (), "/replication/targetToSource/topics", True),
    ({"replication": {"sourceToTarget": {"topics": [{"sourceTopicName": "a"}, {"sourceTopicName": "a"}]}}},
     (), "listed twice", True),
    ({"sourceKafka": {"bootstrapServer": "kafka:9092"}}, (), "bootstrapServer", True),
    ({"sourceKafka": {"securityProtocol": "SASL_SSL"}}, (), "sourceKafka.saslMechanism", True),
    ({"targetKafka": {"saslMechanism": "PLAIN", "saslUsername": "u"}}, (), "targetKafka.securityProtocol", True),
    ({"producer": {"compressionType": "brotli"}}, (), "/producer/compressionType", True),
    ({"resources": {"requests": {"memory": 536870912}}}, (), "/resources/requests/memory", True),
    ({"replicaCount": "three"}, (), "/replicaCount", True),
    ({"sourceKafka": {"saslPassword": "hunter2"}}, (), "sourceKafka.saslPassword: passwords must not be in values", False),
    ({}, ("--set", "targetKafka.sslKeyPasswordEnv=MY_VAR"), "targetKafka.sslKeyPasswordEnv is set by the chart", False),
    ({"sourceKafka": {"tlsSecret": {"name": "tls", "certKey": "tls.crt"}}}, (), "sourceKafka.tlsSecret", False),
    ({"resources": {"requests": {"cpu": "lots"}}}, (), "/resources/requests/cpu", False),
    ({"resources": {"limits": {"memory": "256Mi"}}}, (), "resources.limits.memory", False),
    ({"terminationGracePeriodSeconds": 20}, (), "terminationGracePeriodSeconds", False),
    ({"driver": {"kind": "Job"}}, (), "/driver/kind", False),
    ({"driver": {"kind": "RayJob", "backoffLimit": 3}}, (), "backoffLimit", False),
    ({"driver": {"resources": {"requests": {"cpu": "2 cores"}}}}, (), "/driver/resources/requests/cpu", False),
    ({"head": {"resources": {"limits": {"memory": "lots"}}}}, (), "/head/resources/limits/memory", False),
    ({"ray": {"upgradeStrategy": "Rolling"}}, (), "/ray/upgradeStrategy", False),
    ({"worker": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}}, (), "worker.autoscaling.minReplicas", False),
    ({"unknownKey": 1}, (), "unknownKey", False),
]


@pytest.mark.parametrize("values, extra, message, model_rejects", INVALID,
                         ids=[case[2] for case in INVALID])
def test_invalid_values_are_rejected(helm, values, extra, message, model_rejects):
    error = render_error(helm, values, *extra)
    assert message in error, error
    if model_rejects:
        # The chart refuses what the replicator itself would refuse at start-up.
        with pytest.raises(ConfigError):
            parse_config(expected_config(values))


# ----------------------------------------------------------------------------------------
# The chart stays in step with the config model, the image and its README
# ----------------------------------------------------------------------------------------

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def _aliases(model) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def _literals(model, alias: str) -> set:
    field = next(f for f in model.model_fields.values() if f.alias == alias)
    found: set = set()

    def walk(annotation):
        if typing.get_origin(annotation) is typing.Literal:
            found.update(typing.get_args(annotation))
        for arg in typing.get_args(annotation):
            walk(arg)
    walk(field.annotation)
    return found


def test_schema_mirrors_the_config_model():
    props = SCHEMA["properties"]
    chart_only_cluster_keys = {"saslPasswordSecret", "sslKeyPasswordSecret", "tlsSecret"}
    sections = [
        (ReplicatorConfig, props, set(CHART_ONLY_KEYS) | {"global"}),
        (ClusterConfig, props["sourceKafka"]["properties"], chart_only_cluster_keys),
        (ClusterConfig, props["targetKafka"]["properties"], chart_only_cluster_keys),
        (GroupConfig, props["consumerGroup"]["properties"]["sourceToTarget"]["properties"], set()),
        (ConsumerConfig, props["consumer"]["properties"], set()),
        (ProducerConfig, props["producer"]["properties"], set()),
        (DirectionConfig, props["replication"]["properties"]["sourceToTarget"]["properties"], set()),
        (Route, props["replication"]["properties"]["sourceToTarget"]["properties"]["topics"]["items"]["properties"], set()),
        (SyncGroupOffsets, props["replication"]["properties"]["targetToSource"]["properties"]["syncGroupOffsets"]["properties"], set()),
        (SyncAcls, props["replication"]["properties"]["sourceToTarget"]["properties"]["syncAcls"]["properties"], set()),
        (ResourceAmounts, props["resources"]["properties"]["requests"]["properties"], set()),
    ]
    for model, schema_props, chart_only in sections:
        in_schema, in_model = set(schema_props) - chart_only, _aliases(model)
        assert in_schema == in_model, (
            f"values.schema.json and replicator.config.{model.__name__} disagree: "
            f"only in the schema {sorted(in_schema - in_model)}, only in the model "
            f"{sorted(in_model - in_schema)}; update the chart's schema (and values.yaml comments)")
        for alias, prop in schema_props.items():
            if alias in chart_only:
                continue
            literals = _literals(model, alias)
            if literals and "enum" in prop:
                assert set(prop["enum"]) - {None} == literals, f"{model.__name__}.{alias}"
    assert set(SCHEMA["properties"]) - _aliases(ReplicatorConfig) <= set(CHART_ONLY_KEYS) | {"global"}
    assert set(DEFAULT_VALUES) - _aliases(ReplicatorConfig) <= set(CHART_ONLY_KEYS)
    assert SCHEMA["properties"]["replicaCount"]["minimum"] == ReplicatorConfig.model_fields["replica_count"].metadata[0].ge


def test_ray_versions_agree():
    """The chart's ray.version, the image's RAY_VERSION and pyproject's Ray pin are one version."""
    chart_version = DEFAULT_VALUES["ray"]["version"]
    dockerfile = (CHART / "image" / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={chart_version}\n" in dockerfile
    assert "FROM rayproject/ray:${RAY_VERSION}-py311" in dockerfile
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["annotations"]["kafka-replicator/ray-version"] == chart_version
    pin = re.search(r'^ray = \["ray\[default\]==([^"]+)"\]$', (REPO / "pyproject.toml").read_text(), re.M)
    assert pin and pin.group(1) == chart_version, "pyproject.toml's ray extra pins the chart's Ray version"


def test_readme_commands_name_rendered_objects(helm):
    """`kubectl ... deploy/X`, `svc/X`, `-l a=b` in the README point at what the chart
    renders for `helm install kafka-replicator ...` (or what KubeRay creates from it)."""
    readme = (CHART / "README.md").read_text()
    docs = render(helm, {**BOTH_DIRECTIONS, "worker": {"groupPerDirection": True}})
    cluster = one(docs, "RayCluster")["metadata"]["name"]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    names |= {("Service", f"{cluster}-head-svc")}  # created by KubeRay
    short = {"deploy": "Deployment", "deployment": "Deployment", "svc": "Service", "service": "Service",
             "configmap": "ConfigMap", "cm": "ConfigMap", "raycluster": "RayCluster"}
    refs = re.findall(r"\b(deploy|deployment|svc|service|configmap|cm|raycluster)/([a-z0-9][-a-z0-9]*)", readme)
    assert refs, "the README shows kubectl commands"
    for kind, name in refs:
        assert (short[kind], name) in names, f"README refers to {kind}/{name}, which the chart does not create"
    labels: dict[str, set[str]] = {}
    for template in pod_specs(docs).values():
        for key, value in template["metadata"]["labels"].items():
            labels.setdefault(key, set()).add(value)
    # labels KubeRay puts on its pods
    labels.setdefault("ray.io/cluster", set()).add(cluster)
    labels.setdefault("ray.io/node-type", set()).update({"head", "worker"})
    labels.setdefault("ray.io/group", set()).update(
        {"headgroup"} | {g["groupName"] for g in one(docs, "RayCluster")["spec"]["workerGroupSpecs"]})
    for selector in re.findall(r"-l ([^\s'\"`)]+)", readme):
        for term in selector.split(","):
            key, _, value = term.partition("=")
            assert value in labels.get(key, set()), f"README selects pods with {term}, which no pod has"


# ----------------------------------------------------------------------------------------
# Alerts and dashboard (metrics.prometheusRule, metrics.grafanaDashboard)
# ----------------------------------------------------------------------------------------

ALERTS = {"KafkaReplicatorHighLag", "KafkaReplicatorHighLagSeconds", "KafkaReplicatorStalled",
          "KafkaReplicatorErrors", "KafkaReplicatorMemberRestarts", "KafkaReplicatorRebalancing",
          "KafkaReplicatorPartitionStopped", "KafkaReplicatorRecordsLostUpstream",
          "KafkaReplicatorPartitionsWithoutOwner", "KafkaReplicatorMembersAbsent", "KafkaReplicatorBacklogAbsent"}


def exported_metrics() -> set[str]:
    """The Prometheus names of the series replicator/export.py defines, as Ray exports them:
    prefixed ray_, counters end in _total, histograms come as _bucket, _sum and _count."""
    from replicator.export import SERIES

    names = set()
    for series in SERIES.values():
        base = f"ray_{series.name}"
        names |= {"counter": {f"{base}_total"}, "gauge": {base},
                  "histogram": {f"{base}_bucket", f"{base}_sum", f"{base}_count"}}[series.kind]
    return names


def alert_rules(docs: list[dict]) -> list[dict]:
    return [rule for group in one(docs, "PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


def dashboard_exprs(docs: list[dict]) -> list[str]:
    dashboard = json.loads(one(docs, "ConfigMap", "-grafana-dashboard")["data"]["kafka-replicator.json"])
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_alerts_and_dashboard_are_off_by_default(helm):
    docs = render(helm)
    assert not by_kind(docs, "PrometheusRule")
    assert not [d for d in docs if d["metadata"]["name"].endswith("-grafana-dashboard")]


def test_alerts_and_dashboard_use_only_the_metrics_the_replicator_exports(helm):
    docs = render(helm, VARIATIONS["alerts-and-dashboard"])
    metrics = exported_metrics()
    assert len(metrics) >= 14, metrics
    rules = alert_rules(docs)
    assert {r["alert"] for r in rules} == ALERTS
    cluster = one(docs, "RayCluster")["metadata"]["name"]
    for rule in rules:
        used = set(re.findall(r"ray_kafka_replicator_\w+", rule["expr"]))
        assert used and used <= metrics, (rule["alert"], used - metrics)
        # Only this release's series: the labels the PodMonitor gives them.
        for selector in re.findall(r"\{([^}]*)\}", rule["expr"]):
            assert selector == f'namespace="{NAMESPACE}",ray_io_cluster="{cluster}"', rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning")
    podmonitor = one(docs, "PodMonitor")
    relabeled = {r["targetLabel"] for r in podmonitor["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    assert "ray_io_cluster" in relabeled
    exprs = dashboard_exprs(docs)
    assert len(exprs) >= 10
    for expr in exprs:
        used = set(re.findall(r"ray_kafka_replicator_\w+", expr))
        assert used and used <= metrics, (expr, used - metrics)
    # Every metric has a panel.
    assert {m.removesuffix("_bucket") for e in exprs for m in re.findall(r"ray_kafka_replicator_\w+", e)} >= {
        m for m in metrics if not m.endswith(("_sum", "_count", "_bucket"))}


def test_lag_alerts_read_the_committed_backlog_and_absent_alerts_series_always_exported(helm):
    """The lag alerts see partitions that no member owns (the controllers' series, not a member's
    position); the absent alerts watch a series every member exports and one every controller does."""
    rules = {r["alert"]: r["expr"] for r in alert_rules(render(helm, VARIATIONS["alerts-and-dashboard"]))}
    for alert in ("KafkaReplicatorHighLag", "KafkaReplicatorStalled"):
        assert "ray_kafka_replicator_committed_lag" in rules[alert] and "consumer_lag" not in rules[alert]
    assert "ray_kafka_replicator_lag_seconds" in rules["KafkaReplicatorHighLagSeconds"]
    assert rules["KafkaReplicatorMembersAbsent"].startswith("absent(ray_kafka_replicator_assigned_partitions{")
    assert rules["KafkaReplicatorBacklogAbsent"].startswith("absent(ray_kafka_replicator_partitions_ownerless{")
    from replicator.export import SERIES
    assert "member" in SERIES["kafka_replicator_assigned_partitions"].labels
    assert "member" not in SERIES["kafka_replicator_partitions_ownerless"].labels


def test_alert_thresholds_come_from_the_values(helm):
    docs = render(helm, {"metrics": {"prometheusRule": {
        "enabled": True, "lagThreshold": 500, "lagFor": "3m", "stalledFor": "20m", "restartsPerHour": 7,
        "errorsPer10m": 2, "rebalancesPerHour": 30, "stoppedFor": "5m", "severity": "page",
        "lagSecondsThreshold": 90, "lagSecondsFor": "2m", "ownerlessFor": "7m", "absentFor": "15m",
        "selector": 'job="ray"'}}})
    rules = {r["alert"]: r for r in alert_rules(docs)}
    assert rules["KafkaReplicatorHighLag"]["expr"].endswith("> 500") and rules["KafkaReplicatorHighLag"]["for"] == "3m"
    assert "[20m]" in rules["KafkaReplicatorStalled"]["expr"]
    assert rules["KafkaReplicatorMemberRestarts"]["expr"].endswith("> 7")
    assert rules["KafkaReplicatorErrors"]["expr"].endswith("> 2")
    assert rules["KafkaReplicatorRebalancing"]["expr"].endswith("> 30")
    assert rules["KafkaReplicatorPartitionStopped"]["for"] == "5m"
    assert rules["KafkaReplicatorHighLagSeconds"]["expr"].endswith("> 90") and rules["KafkaReplicatorHighLagSeconds"]["for"] == "2m"
    assert rules["KafkaReplicatorPartitionsWithoutOwner"]["for"] == "7m"
    assert rules["KafkaReplicatorMembersAbsent"]["for"] == rules["KafkaReplicatorBacklogAbsent"]["for"] == "15m"
    assert rules["KafkaReplicatorPartitionStopped"]["labels"]["severity"] == "page"
    assert rules["KafkaReplicatorHighLag"]["labels"]["severity"] == "page"
    assert all(re.findall(r"\{([^}]*)\}", r["expr"]) and set(re.findall(r"\{([^}]*)\}", r["expr"])) == {'job="ray"'}
               for r in rules.values())
    assert "/metrics/prometheusRule/lagFor" in render_error(helm, {"metrics": {"prometheusRule": {"lagFor": "ten minutes"}}})
