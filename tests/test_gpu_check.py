"""benchmarks/gpu_check.sh: its CPU dry run end to end, and how it stops a step over its budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import REPO, run_env

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402

# Real processes end to end: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA A100-SXM4-80GB", None),
    ],
)
def test_peak_is_read_from_the_gpu_name(name, peak):
    assert gpu_check.peak_tflops(name) == peak


def test_a_command_over_its_budget_is_stopped_with_its_output_kept(tmp_path):
    check = gpu_check.Check(gpu_check.DRY_RUN, tmp_path, tmp_path, None)
    outcome = check.run("sleeper", [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(60)"], budget=2)
    assert outcome.returncode is None
    assert outcome.tail()[-1] == "started"


def test_dry_run_runs_every_step_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run"],
        env={**run_env(), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == list(gpu_check.STEPS)
    for name, step in steps.items():
        assert step["status"] == ("skipped" if name in gpu_check.DRY_RUN.skip else "ok"), (name, step)
        assert step["seconds"] <= step["budget_s"] + 10, name  # +10: the grace a stopped group gets

    assert steps["environment"]["results"]["gpu"] is None
    bench = steps["bench"]["results"]
    assert bench["finished"] and "plain loop (course, re-encodes x_{t-1}), batch 2, fp32, TF on" in [r["name"] for r in bench["rows"]]
    assert json.loads((out / "bench.json").read_text())["rows"] == bench["rows"]

    train = steps["train"]["results"]
    assert train["steps"] >= 1 and train["trained_s"] >= gpu_check.DRY_RUN.train_seconds
    resume = steps["resume"]["results"]
    assert resume["resumed_at_step"] == train["steps"] and resume["steps"] >= 1
    assert math.isfinite(resume["final_psnr"]) and math.isfinite(resume["final_baseline_psnr"])
    fp16 = steps["fp16"]["results"]
    assert fp16["precision"] == "fp16" and fp16["steps"] >= 1 and fp16["losses_finite"]

    markdown = (out / "gpu_check.md").read_text()
    assert markdown.startswith("# cvae_dist GPU check: dry run (CPU)")
    for name in gpu_check.STEPS:
        assert f"\n| {name} | {steps[name]['status']} |" in markdown
    assert "section   what" in markdown  # the bench's table
    assert all((out / step["log"]).is_file() for step in steps.values() if step["status"] != "skipped")
