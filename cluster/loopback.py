"""Local Ray clusters that stay on 127.0.0.1.

Ray turns a loopback node address into the machine's network address: `ray start
--node-ip-address 127.0.0.1` and `ray.init(_node_ip_address="127.0.0.1")` both register
the node under the address of the machine's first interface (services.resolve_ip_for_localhost),
and its processes listen and connect there. The one switch that keeps loopback is
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (on Linux too, despite its name): Ray then takes
127.0.0.1 as this machine's address, in this process and in every process it starts. It
also refuses `ray start --address` (a worker node), which `python -m cluster.loopback
start ...` allows again: `ray start` on loopback, for the soak's two-node cluster.

Only for clusters that live on this machine: a driver joining a real cluster keeps Ray's
own choice (see cluster.driver).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import urlparse

from . import ray_internals

LOOPBACK = "127.0.0.1"
SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def stay_on_loopback() -> None:
    """From now on this process, and whatever it starts, take 127.0.0.1 as the node address."""
    os.environ[SWITCH] = "0"
    if "ray" in sys.modules:  # Ray read the variable when it was imported
        ray_internals.enable_multi_node(False)


@contextmanager
def on_loopback() -> Iterator[None]:
    """stay_on_loopback() for a `ray.init` that starts a local cluster: the processes it starts
    keep the setting; this process and what it starts later go back to Ray's default."""
    saved = os.environ.get(SWITCH), ray_internals.multi_node_enabled()
    stay_on_loopback()
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop(SWITCH, None)
        else:
            os.environ[SWITCH] = saved[0]
        ray_internals.enable_multi_node(saved[1])


def is_loopback(address: str | None) -> bool:
    """Whether a Ray address ("127.0.0.1:6379", "ray://localhost:10001") is on this machine's loopback."""
    if not address or address in ("auto", "local"):
        return False
    host = urlparse(address if "://" in address else f"//{address}").hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def ray_cli(argv: list[str]) -> int:
    """Ray's own CLI (`ray start ...`) with 127.0.0.1 as the node address, worker nodes included."""
    stay_on_loopback()
    # The CLI's refusal of worker nodes reads the flag that keeps loopback: it must not here.
    return ray_internals.ray_cli_with_worker_nodes(argv)


if __name__ == "__main__":
    sys.exit(ray_cli(sys.argv[1:]))
