"""A Ray cluster such as a user submits jobs to: its head runs from a Python that has Ray of
the chart's version and nothing of ours (no kafka-python, no replicator), on 127.0.0.1, with
token authentication, its dashboard (the job server) on loopback too.

The Python is a virtual environment with `ray[default]==<ray.version>` from PyPI, cached in
~/.cache/kafka-replicator/ray-node/ (about 40 s the first time).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.chaos import free_port, kill_session
from workbench.sandbox import cache_root
from cluster.loopback import LOOPBACK, SWITCH
from image_support import ray_version

REPO = Path(__file__).resolve().parent.parent
CACHE = cache_root() / "ray-node"


def ray_cli() -> str:
    """The user's `ray` command: the one the README's virtual environment installs."""
    return str(Path(sys.executable).parent / "ray")


def node_python() -> Path:
    """The python of a virtual environment that has Ray and nothing of the replicator's."""
    version = ray_version()
    venv = CACHE / f"ray-{version}-py{sys.version_info.major}.{sys.version_info.minor}"
    python = venv / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").is_file():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", f"ray[default]=={version}"],
                           check=True, timeout=900)
            (venv / ".complete").touch()
    return python


@dataclass
class Head:
    process: subprocess.Popen
    dashboard: str  # http://127.0.0.1:PORT, the job server
    token: str
    temp_dir: Path
    log: Path

    def client_env(self, token: bool = True) -> dict:
        """The environment of `ray job ...` on the user's side, as the README sets it."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("RAY_") and key != "PYTHONPATH"}
        env["RAY_ADDRESS"] = self.dashboard
        if token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        return env

    def uploads(self) -> list[Path]:
        """The working directories the jobs uploaded, as unpacked on the node."""
        found = (self.temp_dir / "session_latest" / "runtime_resources" / "working_dir_files").glob("_ray_pkg_*")
        return sorted(path for path in found if path.is_dir())

    def stop(self) -> None:
        """`ray start --block` stops what it started on SIGTERM; whatever is left is killed."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        kill_session(self.process.pid)
        self.process.wait(timeout=30)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_head(python: Path, log: Path, cpus: int = 4) -> Head:
    """`ray start --head --block` from that Python, in a session of its own (stop() ends it all)."""
    token = secrets.token_hex(16)
    dashboard_port = free_port()
    # Short: Ray's socket paths must stay under 108 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="krjob-", dir="/tmp"))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("RAY_") and key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({SWITCH: "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "PATH": f"{python.parent}:{env.get('PATH', '')}"})
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(python.parent / "ray"), "start", "--head", "--block", "--node-ip-address", LOOPBACK,
             "--port", str(free_port()), "--dashboard-host", LOOPBACK, "--dashboard-port", str(dashboard_port),
             "--ray-client-server-port", str(free_port()), "--num-cpus", str(cpus),
             # Not Ray's fixed default (52365): another Ray node on this machine, or one left behind,
             # would hold it, and this node's job agent would not start ("No available agent").
             "--dashboard-agent-listen-port", str(free_port()),
             "--object-store-memory", str(100 * 1024**2), "--disable-usage-stats",
             "--temp-dir", str(temp_dir)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=temp_dir, start_new_session=True)
    head = Head(process, f"http://{LOOPBACK}:{dashboard_port}", token, temp_dir, log)
    # Ready once a job runs: the job server answers before its agent is there to start one.
    deadline = time.monotonic() + 180
    while True:
        probe = subprocess.run([ray_cli(), "job", "submit", "--", "true"], env=head.client_env(),
                               capture_output=True, text=True, cwd=temp_dir)
        if probe.returncode == 0:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            head.stop()
            raise AssertionError(f"the Ray head does not run jobs:\n{(probe.stdout + probe.stderr)[-2000:]}"
                                 f"\n{log.read_text()[-2000:]}")
        time.sleep(2)
    return head
