"""Ray clusters started on this machine stay on 127.0.0.1 (cluster.loopback).

Ray replaces a loopback node address with the machine's network address, even when told
`_node_ip_address="127.0.0.1"` or `ray start --node-ip-address 127.0.0.1`; these tests start
real local Ray clusters, each in a subprocess of its own, and look at what they registered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cluster import driver
from cluster.loopback import is_loopback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NODES = """
import json, ray
nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]]
gcs = ray._private.worker.global_worker.node.gcs_address
print(json.dumps({"nodes": nodes, "gcs": gcs,
                  "driver": ray._private.worker.global_worker.node.node_ip_address}))
ray.shutdown()
"""


def _registered(code: str, env: dict | None = None) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})}
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    out = subprocess.run([sys.executable, "-c", code + NODES], capture_output=True, text=True,
                         timeout=180, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.ray
def test_a_local_ray_started_as_the_demo_and_the_tests_start_it_registers_127_0_0_1():
    seen = _registered(
        "import ray\nfrom cluster.loopback import on_loopback\n"
        "with on_loopback():\n"
        "    ray.init(address='local', num_cpus=1, include_dashboard=False,\n"
        "             object_store_memory=80 * 1024**2, _node_ip_address='127.0.0.1')\n")
    assert seen["nodes"] == ["127.0.0.1"]
    assert seen["driver"] == "127.0.0.1"
    assert seen["gcs"].startswith("127.0.0.1:")


@pytest.mark.ray
def test_the_driver_without_an_address_starts_its_local_ray_on_127_0_0_1(tmp_path):
    """`kafka-replicator run` without --address: the driver's own local cluster."""
    seen = _registered(
        "import ray, ray._private.services as services\nfrom cluster import driver\n"
        "services.find_bootstrap_address = lambda temp_dir: None  # no `ray start` cluster here\n"
        "driver._join(None, 'loopback-test')\n")
    assert seen["nodes"] == ["127.0.0.1"]
    assert seen["gcs"].startswith("127.0.0.1:")


def test_loopback_addresses():
    assert is_loopback("127.0.0.1:6379")
    assert is_loopback("localhost:6379")
    assert is_loopback("ray://127.0.0.1:10001")
    assert not is_loopback("10.0.0.7:6379")
    assert not is_loopback("ray://head.ray.svc:10001")
    assert not is_loopback("auto")
    assert not is_loopback(None)


def test_the_driver_keeps_rays_choice_for_a_cluster_elsewhere(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not driver._on_this_machine("10.0.0.7:6379")
    assert driver._on_this_machine("127.0.0.1:6379")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head.ray.svc:10001")
    assert not driver._on_this_machine(None)
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr("ray._private.services.find_bootstrap_address", lambda temp_dir: None)
    assert driver._on_this_machine(None)
    monkeypatch.setattr("ray._private.services.find_bootstrap_address",
                        lambda temp_dir: "10.0.0.7:6379")
    assert not driver._on_this_machine(None)
