"""Three bench runs summed up as BENCHMARKS.md publishes them: medians with their range, and
ratios taken within each run before their median."""

from __future__ import annotations

from workbench.bench.summary import ratios, spread, summary, throughput


def run(ours: float, mm2: float, valid: bool = True) -> dict:
    def row(name, rate):
        return {"name": name, "size": "100B", "records_per_second": rate, "records_per_cpu_second": rate / 2,
                "valid": valid if name == "ours-batch" else True, "details": {}}
    return {"throughput": [row("ours-batch", ours), row("mirrormaker2-tuned", mm2)], "latency": [],
            "source": {"commit": "abc123"}}


def test_a_figure_is_the_median_of_the_runs_with_their_range():
    assert spread([300.0, 100.0, 200.0]) == "200 (100–300)"


def test_ratios_are_taken_within_each_run_before_their_median():
    # Medians of each row would give 200/200 = 1.00×; within the runs: 3.00×, 0.50×, 1.00×.
    runs = [run(300, 100), run(100, 200), run(200, 200)]
    line = next(line for line in ratios(runs) if "ours, batch mode / MirrorMaker 2 tuned" in line)
    assert "**1.00× (0.50×–3.00×)**" in line and "3.00×, 0.50×, 1.00×" in line


def test_an_unverified_copy_gives_no_figure_and_the_runs_that_did_are_counted():
    runs = [run(300, 100), run(900, 100, valid=False), run(200, 100)]
    line = next(line for line in throughput(runs) if "ours, batch mode" in line)
    assert "250 (200–300) [2 of 3 runs]" in line and "900" not in line


def test_the_summary_names_the_commit_the_runs_ran():
    assert summary([run(300, 100)] * 3).startswith("3 runs of commit abc123")
