"""The scale sweep runs end to end on its tiny plan (1 topic × 6 partitions, 3 topics × 20): every point
has its figures and every copy was verified."""

from __future__ import annotations

import json

import pytest

from workbench.bench.harness import main

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


def test_the_scale_sweep_measures_every_point_of_verified_copies(sandbox, tmp_path, capsys):
    out = tmp_path / "scale.json"
    assert main(["--tiny", "--only", "scale", "--source", sandbox.source, "--target", sandbox.target,
                 "--out", str(out), "--work-dir", str(tmp_path / "work")]) == 0

    sweep = json.loads(out.read_text())["scale"]
    points = {(p["replicator"], p["shape"]): p for p in sweep["points"]}
    assert set(points) == {(who, shape) for who in ("ours-batch", "mirrormaker2-tuned") for shape in ("1×6", "3×20")}
    for key, point in points.items():
        assert point["valid"], f"{key}: {point['verification']}"
        assert "content digest match" in point["verification"], key
        assert point["records_per_second"] > 0 and point["cpu_us_per_record"] > 0, key
        assert 0 < point["startup_seconds"] < 120, key
        assert len(point["peak_rss_bytes"]) == len(point["idle_cpu_percent"]) == (
            point["members"] if key[0] == "ours-batch" else 1), key
        assert all(rss > 0 for rss in point["peak_rss_bytes"]), key
        assert all(0 <= cpu < 100 for cpu in point["idle_cpu_percent"]), key
    for shape in ("1×6", "3×20"):
        # Two members: the survivor owned every partition again after the other's SIGKILL.
        assert points[("ours-batch", shape)]["kill_absorbed_seconds"] > 0, shape
    offsets = sweep["offsets"]
    assert offsets["translated"] == offsets["partitions"] == 60 and offsets["exit_code"] == 0, offsets
    # The map topic is compacted (its record count may even shrink during the copy); what
    # translation needs is a span for every partition.
    assert offsets["translate_seconds"] > 0 and offsets["map_after"]["spans"] >= 60, offsets
    assert {t["replicator"] for t in sweep["targets"]} == {"ours-batch", "mirrormaker2-tuned"}
    assert "| ours, batch mode | 3×20 | 2 |" in capsys.readouterr().out
