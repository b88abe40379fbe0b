"""What `pip wheel .` ships, which the image installs: the replicator and its Ray driver, not the
development workbench (dev/)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOLING = ("sandbox", "certificates", "bench", "chaos", "demo", "proxy", "traffic", "workbench")


def test_the_wheel_holds_the_runtime_and_no_tooling(tmp_path):
    # Built from a copy, as the image's build does: setuptools writes build/ beside the sources.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md", "LICENSE", "replicator", "cluster", "dev"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copyfile
        copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("kafka_replicator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = {Path(name).with_suffix("").as_posix() for name in names if name.endswith(".py")}
    assert {"replicator/flow", "replicator/wire", "cluster/driver", "cluster/cli"} <= modules
    assert {name.split("/")[0] for name in names} <= {"replicator", "cluster", wheel.name.split("-")[0]
                                                      + "-" + wheel.name.split("-")[1] + ".dist-info"}
    shipped_tooling = [m for m in modules if any(part in TOOLING for part in Path(m).parts)]
    assert shipped_tooling == []
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License: Apache-2.0" in metadata or "License-Expression: Apache-2.0" in metadata
