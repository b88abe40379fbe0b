"""The image the chart runs, built from its Dockerfile and run as the chart runs it: uid 1000,
a read-only root file system, a writable /tmp and the config mounted read-only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from kafka_support import count, create_topic, essence, produce, read_all, wait_until

from image_support import REPO, BuildFailed, Missing, build_image, podman, podman_command

pytestmark = pytest.mark.image

TOOLING = ("sandbox", "certificates", "bench", "chaos", "demo", "proxy", "traffic", "workbench")


@pytest.fixture(scope="module")
def image():
    try:
        built = build_image(report=lambda line: print(line, flush=True))
    except Missing as exc:
        pytest.skip(str(exc))
    except BuildFailed as exc:
        pytest.fail(str(exc))
    print(f"{built.name}: {built.size / 1e6:.0f} MB, of which the base {built.base_size / 1e6:.0f} MB"
          + (f"; built in {built.built_seconds:.0f} s" if built.built_seconds else "; cached"))
    return built


def run(image, *command: str, mounts: tuple[tuple[Path, str], ...] = (), timeout: float = 120) -> subprocess.CompletedProcess:
    """A command in the image, as the chart's pods run it, on the host's network (the
    sandbox's brokers listen on 127.0.0.1)."""
    volumes = [arg for host, inside in mounts for arg in ("-v", f"{host}:{inside}:ro")]
    return podman("run", "--rm", "--user", "1000:100", "--read-only", "--read-only-tmpfs=false",
                  "--tmpfs", "/tmp", "--network", "host", *volumes, image.name, *command,
                  capture_output=True, text=True, timeout=timeout)


def test_the_image_runs_as_uid_1000_on_a_read_only_root_and_says_its_version(image):
    result = run(image, "sh", "-c", "id -u; id -g; kafka-replicator --version; touch /x")
    lines = result.stdout.splitlines()
    assert lines[:3] == ["1000", "100", "kafka-replicator 0.1.0"], result.stdout + result.stderr
    assert "Read-only file system" in result.stderr


def test_the_image_checks_the_example_config(image):
    result = run(image, "kafka-replicator", "check", "--config", "/etc/kafka-replicator/config.yaml",
                 mounts=((REPO / "configs" / "example.yaml", "/etc/kafka-replicator/config.yaml"),))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid; directions: sourceToTarget" in result.stdout


def test_the_image_holds_the_runtime_and_nothing_else(image):
    """The package's installed files are its two packages' modules; no source tree, wheel,
    tests, benchmark results, virtual environment or compiler is left behind."""
    script = (
        "import pathlib, shutil, sys\n"
        "from importlib import metadata\n"
        "import ray\n"
        "print('ray', ray.__version__, 'python', sys.version.split()[0])\n"
        "for f in metadata.files('kafka-replicator'):\n"
        "    top = f.parts[0]\n"
        "    if not (top.endswith('.dist-info') or f.suffix in ('.py', '.pyc') and top in ('replicator', 'cluster')"
        " or top == '..' and f.name == 'kafka-replicator'):\n"
        "        print('FOUND', f)\n"
        f"    if set(f.with_suffix('').parts) & {set(TOOLING)!r} or f.stem.split('.')[0] in {set(TOOLING)!r}:\n"
        "        print('FOUND tooling', f)\n"
        "for place in ('/opt', '/tmp', '/home/ray'):\n"
        "    for found in pathlib.Path(place).iterdir():\n"
        "        if found.name not in ('anaconda3', '.bashrc', '.profile', '.bash_logout', '.cache'):\n"
        "            print('FOUND', found)\n"
        "for tool in ('gcc', 'cc', 'make', 'git'):\n"
        "    if shutil.which(tool): print('FOUND', tool)\n")
    result = run(image, "python", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "ray 2.60.0 python 3.11.2", result.stdout
    assert "FOUND" not in result.stdout, result.stdout


@pytest.mark.kafka
def test_the_image_replicates_a_sandbox_topic_exactly(image, sandbox, name, tmp_path):
    topic = f"{name}-orders"
    create_topic(sandbox.source, topic, partitions=3)
    records = [(i % 3, f"key-{i}".encode(), f"value-{i}".encode(), [("h", b"1")], None) for i in range(3000)]
    produce(sandbox.source, topic, records)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(sandbox.config(
        consumerGroup={"sourceToTarget": f"{name}-s2t"},
        replication={"sourceToTarget": {"topics": [{"sourceTopicName": topic}]},
                     "targetToSource": {"enabled": False}})))
    container = f"kr-{name}"[:60]
    argv, env = podman_command(
        "run", "--rm", "--name", container, "--user", "1000:100", "--read-only", "--read-only-tmpfs=false",
        "--tmpfs", "/tmp", "--network", "host", "-v", f"{config}:/etc/kafka-replicator/config.yaml:ro",
        image.name, "kafka-replicator", "replicate", "--config", "/etc/kafka-replicator/config.yaml",
        "--direction", "sourceToTarget")
    log = tmp_path / "replicate.log"
    with log.open("w") as out:
        member = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: member.poll() is not None or count(sandbox.target, topic) >= len(records), 120,
                   interval=1, what=f"{len(records)} records on the target")
        assert member.poll() is None, log.read_text()
    finally:
        podman("stop", "--time", "30", container, capture_output=True)
        member.wait(timeout=60)
    target = read_all(sandbox.target, topic)
    source = read_all(sandbox.source, topic)
    assert {p: [essence(r) for r in rs] for p, rs in target.items()} == \
        {p: [essence(r) for r in rs] for p, rs in source.items()}, "lost, duplicated or altered records"
    assert member.returncode == 0, log.read_text()
