"""The sampler benchmark's replay (experiments/bench_search.py) on a stored grid: deterministic per seed, and the
hypervolume of what it has measured never falls as it measures more."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GRID = ROOT / "experiments" / "results" / "search-grid-cnn.json"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import bench_search
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    return bench_search


@pytest.mark.parametrize("sampler,warm", [("tpe", False), ("random", False), ("tpe", True)])
def test_replay_is_deterministic_per_seed_and_monotone(bench, sampler, warm):
    table = json.loads(GRID.read_text())
    a = bench.replay(table, sampler, seed=5, budget=12, warm=warm)
    b = bench.replay(table, sampler, seed=5, budget=12, warm=warm)
    assert a == b and len(a) == 12
    assert all(x <= y + 1e-12 for x, y in zip(a, a[1:])) and 0.0 <= a[0] and a[-1] <= 1.0 + 1e-9


def test_the_whole_grid_has_the_grids_hypervolume(bench):
    table = json.loads(GRID.read_text())
    rows, ref = table["rows"], bench.reference_point(table)
    full = bench.front_hypervolume(bench.feasible_points(rows, rows, table["bound"]), ref)
    assert full > 0
    # a front of one point: the box from it to the reference point
    assert bench.front_hypervolume([(0.0, 0.001)], (1.0, 0.005)) == pytest.approx(1.0 * 0.004)
    # a dominated point adds nothing
    assert bench.front_hypervolume([(0.0, 0.001), (0.5, 0.002)], (1.0, 0.005)) == pytest.approx(0.004)
