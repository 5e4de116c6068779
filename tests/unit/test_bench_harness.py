"""The bench harness's own bookkeeping (no servers): a figure's ratio and whether it meets its
target, the quick sizes, a bad size named, and results.json holding every figure."""

import json
from pathlib import Path

import pytest

from tests.bench._figures import BenchSizes, Figure, table, write
from tests.bench._profile import top_frames


def test_ratio_against_reference_decides_the_target() -> None:
    fast = Figure("b", "steps/s", 400.0, "steps/s", "raw", 10_000.0, target=">= 0.03")
    slow = Figure("b", "steps/s", 100.0, "steps/s", "raw", 10_000.0, target=">= 0.03")
    assert fast.ratio == pytest.approx(0.04)
    assert fast.met is True
    assert slow.ratio == pytest.approx(0.01)
    assert slow.met is False
    # Without a reference the target bounds the value itself.
    assert Figure("b", "decision", 60.0, "ms", target="<= 50").met is False
    assert Figure("b", "decision", 40.0, "ms", target="<= 50").met is True


def test_small_sizes_keep_explicit_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWATER_BENCH_SIZE", "small")
    monkeypatch.setenv("HEADWATER_BENCH_FLIGHTS_DAYS", "7")
    sizes = BenchSizes.load()
    assert sizes.flights_days == 7  # named explicitly: kept
    assert sizes.held_large < BenchSizes().held_large  # the rest shrinks


def test_unknown_size_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWATER_BENCH_SIZE", "huge")
    with pytest.raises(ValueError, match="HEADWATER_BENCH_SIZE: 'huge'"):
        BenchSizes.load()


def test_results_json_and_table_hold_every_figure(tmp_path: Path) -> None:
    figures = [
        Figure("hashing", "data SHA", 300.0, "MB/s", "numpy", 20_000.0, target=">= 0.3"),
        Figure("scale", "plan", 120.0, "s", target="<= 2", note="did not finish", met=False),
    ]
    write(figures, BenchSizes(), tmp_path / "bench" / "results.json", 1.0)
    doc = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert [f["figure"] for f in doc["figures"]] == ["data SHA", "plan"]
    assert doc["figures"][0]["ratio"] == pytest.approx(0.015)
    assert [f["met"] for f in doc["figures"]] == [False, False]
    assert doc["sizes"]["held_large"] == 100_000
    shown = table(figures)
    assert "numpy = 20,000" in shown
    assert "NO" in shown


def test_profile_summary_counts_inclusive_samples(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text("main (a.py:1);decide (r.py:2);sorted (m.py:3) 3\nmain (a.py:1);io (s.py:9) 1\n")
    summary = top_frames(raw, 3)
    assert "4 samples" in summary
    assert summary.splitlines()[1].endswith("main (a.py:1)")
    assert " 75.0%  decide (r.py:2)" in summary
