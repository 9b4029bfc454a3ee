"""benchmarks/gpu_check.sh: its CPU dry run end to end, the bundle it hands back, and how it stops a step over its budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from support import REPO, run_env

sys.path.insert(0, str(REPO / "benchmarks"))
import common  # noqa: E402
import gpu_check  # noqa: E402
from common import Row, table  # noqa: E402

# Real processes end to end: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

# What a machine lent for the check may hand back.
BUNDLE_FILES, BUNDLE_FILE_BYTES, BUNDLE_DEPTH = 8, 16 * 2**20, 2


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


def test_a_step_that_prints_too_much_keeps_its_first_and_last_lines_in_the_log(tmp_path):
    log = tmp_path / "check.log"
    log.write_text("==== earlier step\n")
    printer = [sys.executable, "-c", "for i in range(10_000): print(f'line {i}')"]
    outcome = common.run_logged("printer", printer, log, budget=120, env=run_env(), keep_bytes=4_000)
    assert outcome.returncode == 0
    assert log.read_text() == f"==== earlier step\n==== printer: $ {' '.join(printer)}\n" + outcome.text
    assert outcome.text.startswith("line 0\n") and outcome.text.endswith("line 9999\n") and "bytes cut ..." in outcome.text
    assert len(outcome.text) < 4_100


def test_the_summary_skips_a_batch_too_large_for_the_data_and_estimates_an_epoch_with_teacher_forcing_on_and_off():
    def row(name, frames_per_s, **notes):
        return Row("train", name, frames_per_s, 16 * 15 / frames_per_s, 100.0, {"batch": 16, "window": 16, **notes})

    rows = [
        row("plain loop (course, re-encodes x_{t-1}), batch 2, fp32, TF on", 10.0, teacher_forcing=True),
        row("cvae_dist, batch 16, bf16, TF on", 1000.0, teacher_forcing=True, best=True),
        row("cvae_dist, batch 16, bf16, TF off", 250.0, teacher_forcing=False, best=True),
        Row(
            "train",
            "cvae_dist, batch 64, bf16, TF on",
            notes={"teacher_forcing": True},
            skipped="32 training windows are too few for --batch_size 64",
        ),
    ]
    summary = common.summary(rows, "lab", 16, None)
    epoch_frames = 23_410 // 16 * 15
    assert summary["full_epoch_seconds_tf_on"] == pytest.approx(epoch_frames / 1000)
    assert summary["full_epoch_seconds_tf_off"] == pytest.approx(epoch_frames / 250)
    assert summary["best_speedup_over_course_loop"] == pytest.approx(100)
    assert table(rows).splitlines()[-1].endswith("skipped: 32 training windows are too few for --batch_size 64")


def test_dry_run_runs_every_step_and_hands_back_a_small_bundle(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run"],
        env={**run_env(), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    bundle = [path for path in out.rglob("*") if path.is_file()]
    assert sorted(path.name for path in bundle) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    assert len(bundle) <= BUNDLE_FILES
    assert all(path.stat().st_size < BUNDLE_FILE_BYTES and len(path.relative_to(out).parents) - 1 <= BUNDLE_DEPTH for path in bundle)

    report = json.loads((out / "gpu_check.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == list(gpu_check.STEPS)
    for name, step in steps.items():
        assert step["status"] == ("skipped" if name in gpu_check.DRY_RUN.skip else "ok"), (name, step)
        assert step["seconds"] <= step["budget_s"] + 10, name  # +10: the grace a stopped group gets

    assert steps["environment"]["results"]["gpu"] is None
    bench_rows = {r["name"]: r for r in steps["bench"]["results"]["rows"]}
    assert steps["bench"]["results"]["finished"] and "plain loop (course, re-encodes x_{t-1}), batch 2, fp32, TF on" in bench_rows
    assert bench_rows["cvae_dist, batch 64, fp32, TF on"]["skipped"].endswith("too few for --batch_size 64 on 1 process(es)")
    compiled = steps["compile"]["results"]
    assert [r["name"] for r in compiled["rows"]] == ["cvae_dist, batch 2, fp32, TF on, compiled"]
    assert compiled["summary"]["best_speedup_over_course_loop"] > 0  # the bench's rows and the compiled one, summarised together

    train = steps["train"]["results"]
    assert train["steps"] >= 1 and train["trained_s"] >= gpu_check.DRY_RUN.train_seconds
    resume = steps["resume"]["results"]
    assert resume["resumed_at_step"] == train["steps"] and resume["steps"] >= 1 and resume["first_logged_step"] > train["steps"]
    assert math.isfinite(resume["final_psnr"]) and math.isfinite(resume["final_baseline_psnr"])
    fp16 = steps["fp16"]["results"]
    assert fp16["precision"] == "fp16" and fp16["steps"] >= 1 and fp16["losses_finite"]

    markdown = (out / "gpu_check.md").read_text()
    assert markdown.startswith("# cvae_dist GPU check: dry run (CPU)")
    for name in gpu_check.STEPS:
        assert f"\n| {name} | {steps[name]['status']} |" in markdown
    assert "section   what" in markdown and "TF on, compiled" in markdown  # the bench's table, with the compiled row
    log = (out / "gpu_check.log").read_text()
    assert all(f"==== {name}: $ " in log for name, step in steps.items() if step["status"] != "skipped")
