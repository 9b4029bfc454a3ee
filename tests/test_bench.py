"""The benchmark as users run it: a smoke run of every section."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import REPO, run_env


@pytest.mark.slow
def test_quick_benchmark_prints_and_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--json", str(out), "--data", str(tmp_path / "data")],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=900,  # a smoke run: generous for a loaded machine
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert {r["section"] for r in rows} == {"train", "data", "rollout", "memory"}
    names = [r["name"] for r in rows]
    assert "plain loop (each frame encoded once), batch 2, fp32, TF on" in names
    assert "cvae_dist, batch 2, fp32, TF on" in names
    assert sum(r["notes"].get("best", False) for r in rows) == 2  # cvae_dist's best setting, TF on and off
    assert all(r["frames_per_s"] > 0 and r["seconds"] > 0 for r in rows)
    assert all(r["peak_mib"] > 0 for r in rows if r["section"] in ("train", "memory"))
    assert [r["notes"]["window"] for r in rows if r["section"] == "memory"] == [4, 4, 8, 8]
    assert "cvae_dist, batch 2, fp32, TF on" in result.stdout and "frames/s" in result.stdout
