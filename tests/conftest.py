"""Shared fixtures: one real two-cluster Kafka sandbox for the whole session."""

from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path

import pytest

from workbench.sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent


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


