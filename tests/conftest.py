"""Shared fixtures: one real two-cluster Kafka sandbox for the whole session."""

from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path

import pytest

from workbench.sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent

# The files that take minutes, longest first (seconds on this 2-core VM, warm, in two full
# suites of 2026-12-06). pytest-xdist hands out whole files in collection order
# (`--no-loadscope-reorder`); its own order, most tests first, left these, a few slow tests
# each, to the end, where one worker ran them alone while the other had finished.
LONGEST_FIRST = (
    "test_pods.py",  # 440-490: pods on a real node
    "test_bench_smoke.py",  # 340: every bench row, tiny
    "test_cluster.py",  # 265-300: Ray drivers and members
    "test_chaos.py",  # 180-200: a two-minute soak
    "test_exactly_once.py",  # 190-230
    "test_ray_job.py",  # 100-125
    "test_resilience.py",  # 100-110
    "test_sandbox.py",  # 75
    "test_failover.py",  # 60
    "test_demo.py",  # 70
    "test_bench_scale.py",  # 55
)


def pytest_collection_modifyitems(items):
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: other files keep their order


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    """Two single-node KRaft clusters on 127.0.0.1, with SASL, TLS and proxied listeners each.

    TLS costs the start little (its certificates take milliseconds), far less than a
    second sandbox for the TLS tests would; the proxied listener costs a port.
    """
    state_dir = os.environ.get("KAFKA_REPLICATOR_TEST_SANDBOX_DIR")
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # each pytest-xdist worker has its own
    if state_dir and worker:
        state_dir = f"{state_dir}-{worker}"
    sandbox = Sandbox(Path(state_dir) if state_dir else tmp_path_factory.mktemp("sandbox"))
    try:
        yield SandboxHandle(sandbox, sandbox.up(sasl=True, tls=True, proxied=True))
    finally:
        sandbox.down()  # also after a failed start, whose brokers may be running


class SandboxHandle:
    def __init__(self, sandbox: Sandbox, info):
        self.sandbox = sandbox
        self.info = info
        self.source = info.source.bootstrap_servers
        self.target = info.target.bootstrap_servers

    def config(self, **overrides) -> dict:
        """A replicator config dict for the sandbox's two clusters."""
        return {
            "sourceKafka": {"bootstrapServers": self.source},
            "targetKafka": {"bootstrapServers": self.target},
            **overrides,
        }


_counter = itertools.count()


@pytest.fixture
def name(request):
    """A unique prefix for this test's topics and groups."""
    test = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:60]
    return f"{test}-{next(_counter)}-{uuid.uuid4().hex[:6]}"


