"""The replicator's image, built for real from charts/kafka-replicator/image/Dockerfile.

No Docker engine runs here and no image registry can be reached, so:

* Buildah builds and Podman (with runc) runs, both Debian packages, as root, with storage of
  their own in ~/.cache/kafka-replicator/images ($KAFKA_REPLICATOR_IMAGE_CACHE moves it),
  never the machine's;
* the Dockerfile's base, rayproject/ray:<ray.version>-py311, is a stand-in built here from
  tests/ray-stand-in/Containerfile on a Debian 12 root file system made by mmdebstrap, and
  tagged with the name the Dockerfile's FROM expects;
* the replicator's image is built by the chart README's own build command, word for word,
  with this machine's options added (the storage, the local base, the CA bundle).

Both images are cached by content: the stand-in by its recipe and Ray version, the
replicator's by the files its build reads. A warm run builds nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from workbench.sandbox import cache_root

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "kafka-replicator"
DOCKERFILE = CHART / "image" / "Dockerfile"
STAND_IN = REPO / "tests" / "ray-stand-in" / "Containerfile"
CACHE = Path(os.environ.get("KAFKA_REPLICATOR_IMAGE_CACHE",
                            cache_root() / "images"))
# What the chart's defaults resolve to (image.repository kafka-replicator, tag appVersion).
CHART_IMAGE = "docker.io/library/kafka-replicator"
DEBIAN_SUITE = "bookworm"  # Python 3.11, the minor version of Ray's -py311 images
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates", "wget", "procps")
# A machine whose TLS goes through a proxy trusts it through this bundle; builds see it.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Podman raises the open-files limit by default, which needs CAP_SYS_RESOURCE: keep the caller's.
CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"


class Missing(Exception):
    """What building or running images needs is not on this machine (a reason to skip)."""


class BuildFailed(Exception):
    pass


@dataclass(frozen=True)
class Image:
    name: str  # the chart defaults' reference, e.g. docker.io/library/kafka-replicator:0.1.0
    readme_tag: str  # the tag of the chart README's build command
    size: int  # bytes, the base's layers included
    base_size: int
    built_seconds: float  # 0 when it came from the cache

    def archive(self) -> Path:
        """A docker-archive of the image (for `ctr images import`), written once per build."""
        out = CACHE / f"{self.name.rsplit('/', 1)[-1].replace(':', '-')}-{_image_id(self.name)[:12]}.tar"
        if not out.is_file():
            partial = out.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            _buildah("push", self.name, f"docker-archive:{partial}:{self.name}")
            partial.rename(out)
        return out


def ray_version() -> str:
    return yaml.safe_load((CHART / "values.yaml").read_text())["ray"]["version"]


def app_version() -> str:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def readme_build_command() -> list[str]:
    """The chart README's `buildah build ...` line."""
    readme = (CHART / "README.md").read_text()
    found = re.findall(r"^\s*(buildah build -f charts/kafka-replicator/image/Dockerfile .*)$", readme, re.M)
    if len(found) != 1:
        raise AssertionError(f"the chart README should show one `buildah build` command, found {found}")
    return shlex.split(found[0])


def build_image(report=print) -> Image:
    """The replicator's image in the test storage, built first where the cache lacks it."""
    _require()
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, whoever asks
        base = _stand_in(report)
        command = readme_build_command()
        readme_tag = command[command.index("-t") + 1]
        name = f"{CHART_IMAGE}:{app_version()}"
        key = _digest([DOCKERFILE, *_context_files()], extra=_image_id(base))
        cached = f"localhost/kafka-replicator-build:{key}"
        took = 0.0
        if not _exists(cached):
            report(f"building {readme_tag} with the chart README's command ...")
            started = time.monotonic()
            _buildah(*command[1:2], *_build_options(), *command[2:], cwd=REPO,
                     log=CACHE / "kafka-replicator.build.log")
            took = time.monotonic() - started
            _buildah("tag", readme_tag, cached)
            report(f"built {readme_tag} in {took:.0f} s")
        _buildah("tag", cached, readme_tag, name)
        return Image(name=name, readme_tag=readme_tag, size=_size(name), base_size=_size(base),
                     built_seconds=took)


def podman_command(*args: str) -> tuple[list[str], dict]:
    """(argv, environment) of Podman on the test storage, running containers with runc."""
    conf = CACHE / "containers.conf"
    if not conf.is_file():
        conf.write_text(CONTAINERS_CONF)
    return (["podman", *_storage(), "--runtime", "runc", "--events-backend", "file",
             "--cgroup-manager", "cgroupfs", *args], {**os.environ, "CONTAINERS_CONF": str(conf)})


def podman(*args: str, **kw) -> subprocess.CompletedProcess:
    argv, env = podman_command(*args)
    return subprocess.run(argv, env=env, **kw)


# ----------------------------------------------------------------------------------------


def _require() -> None:
    if os.geteuid() != 0:
        raise Missing("building and running images here needs root (Buildah and Podman, rootful)")
    missing = [tool for tool in ("buildah", "podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        raise Missing(f"{', '.join(missing)} not installed (Debian: apt-get install buildah podman "
                      "runc mmdebstrap)")


def _storage() -> list[str]:
    return ["--root", str(CACHE / "storage"), "--runroot", str(CACHE / "run"), "--storage-driver", "overlay"]


def _build_options() -> list[str]:
    options = ["--pull=never", "--isolation=chroot", "--network=host", "--layers"]
    if CA_BUNDLE.is_file():
        options += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    return options


def _buildah(*args: str, cwd: Path | None = None, log: Path | None = None) -> str:
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("w")) if log else subprocess.PIPE
        result = subprocess.run(["buildah", *_storage(), *args], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, text=True, timeout=1800)
    if result.returncode != 0:
        text = log.read_text() if log else result.stdout
        raise BuildFailed(f"buildah {' '.join(args)} failed ({result.returncode}):\n{text[-4000:]}")
    return result.stdout if not log else ""


def _exists(name: str) -> bool:
    return subprocess.run(["buildah", *_storage(), "inspect", "--type", "image", name],
                          capture_output=True).returncode == 0


def _image_id(name: str) -> str:
    return _buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", name).strip()


def _size(name: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", name,
                      capture_output=True, text=True, check=True).stdout.strip())


def _context_files() -> list[Path]:
    """What the Dockerfile copies: pyproject.toml, requirements.txt, README.md, LICENSE and
    the two packages (bytecode aside)."""
    files = [REPO / name for name in ("pyproject.toml", "requirements.txt", "README.md", "LICENSE")]
    for package in ("replicator", "cluster"):
        files += sorted(p for p in (REPO / package).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return files


def _digest(files: list[Path], extra: str = "") -> str:
    sha = hashlib.sha256(extra.encode())
    for path in files:
        sha.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()[:16]


def _stand_in(report) -> str:
    """rayproject/ray:<version>-py311, the stand-in, tagged; built when its recipe changed."""
    version = ray_version()
    key = _digest([STAND_IN], extra=f"{version} {DEBIAN_SUITE} {' '.join(DEBIAN_PACKAGES)}")
    cached = f"localhost/ray-stand-in:{key}"
    if not _exists(cached):
        report(f"building the stand-in for rayproject/ray:{version}-py311 (Debian {DEBIAN_SUITE}, "
               f"ray[default]=={version}) ...")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=CACHE, prefix=".stand-in-") as work:
            log = CACHE / "ray-stand-in.build.log"
            with log.open("w") as out:
                made = subprocess.run(
                    ["mmdebstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
                     "--format=tar", DEBIAN_SUITE, str(Path(work) / "rootfs.tar")],
                    stdout=out, stderr=subprocess.STDOUT, timeout=1800)
            if made.returncode != 0:
                raise BuildFailed(f"mmdebstrap failed ({made.returncode}), log {log}:\n{log.read_text()[-4000:]}")
            shutil.copyfile(STAND_IN, Path(work) / "Containerfile")
            _buildah("build", *_build_options(), "--build-arg", f"RAY_VERSION={version}",
                     "-t", cached, work, log=CACHE / "ray-stand-in.build.log")
        report(f"built the stand-in in {time.monotonic() - started:.0f} s")
    base = f"docker.io/rayproject/ray:{version}-py311"
    _buildah("tag", cached, base)
    return base
