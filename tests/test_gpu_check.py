"""benchmarks/gpu_check.sh: its CPU dry run end to end, the bundle it hands back, how it stops a
step over its budget, the summary it prints, and the GPU plan's budgets against the lent machine's time."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, run_env

sys.path.insert(0, str(REPO / "benchmarks"))
import common  # noqa: E402
import gpu_check  # noqa: E402
from common import Row, table  # noqa: E402

# What a machine lent for the check may hand back.
BUNDLE_FILES, BUNDLE_FILE_BYTES, BUNDLE_DEPTH = 8, 16 * 2**20, 2
# The lent machine is held 15 minutes, its start (a few minutes) and a retry included: the check
# must end within 7, every compile included.
CHECK_WALL_S = 420
# A Plan's steps that run no process here: only the steps a test names run.
NO_ENVIRONMENT = {"environment": "not needed by this test"}


def test_the_gpu_plans_budgets_fit_in_7_minutes_with_the_grace_and_start_up_reserve():
    plan, reserve = gpu_check.GPU, gpu_check.GRACE_S + gpu_check.START_RESERVE_S
    assert set(plan.budgets) == set(gpu_check.STEPS) and gpu_check.STEPS[-1] == "compile"
    # Every step that runs on the lent machine gets its whole budget...
    runs_there = {name: budget for name, budget in plan.budgets.items() if name not in gpu_check.LENT_MACHINE_LACKS}
    assert sum(runs_there.values()) + reserve <= CHECK_WALL_S, runs_there
    # ... and whatever runs, the check stops within the 7 minutes: no step gets more than what is left of total_s.
    assert plan.total_s + reserve <= CHECK_WALL_S
    assert gpu_check.GRACE_S >= 10  # common.stop_group: SIGTERM, 5 s, SIGKILL, 5 s
    # The trainer trains train_seconds after it starts, unless the stop reserve comes first.
    assert plan.train_seconds + gpu_check.STOP_RESERVE_S < plan.budgets["train"]
    assert plan.bench_row_s < plan.budgets["bench"] / 2


def test_steps_asked_for_run_with_those_they_need_in_the_checks_order():
    assert gpu_check.with_needs(["resume"]) == ["environment", "data", "train", "resume"]
    assert gpu_check.with_needs(["compile", "data"]) == ["environment", "data", "bench", "compile"]
    assert gpu_check.with_needs(["bench"]) == ["environment", "bench"]
    assert gpu_check.with_needs(list(gpu_check.STEPS)) == list(gpu_check.STEPS)
    assert gpu_check.step_names("fp16,data") == ["data", "fp16"]
    with pytest.raises(Exception, match="subset of environment,data"):
        gpu_check.step_names("data,warp")


def test_the_work_folder_prefers_dev_shm_and_is_never_under_out(tmp_path):
    shm, temp, out = tmp_path / "shm", tmp_path / "tmp", tmp_path / "out"
    shm.mkdir()
    temp.mkdir()
    assert gpu_check.work_parent(out, 1, shm, str(temp))[0] == shm
    assert gpu_check.work_parent(out, 2**60, shm, str(temp))[0] == temp  # too little room in memory
    assert gpu_check.work_parent(out, 1, tmp_path / "missing", str(temp))[0] == temp
    assert gpu_check.work_parent(shm, 1, shm, str(temp))[0] == temp  # OUT is /dev/shm itself
    with pytest.raises(SystemExit, match="set TMPDIR"):
        gpu_check.work_parent(tmp_path, 1, tmp_path / "missing", str(temp))  # OUT holds the temporary folder


def test_the_compile_step_takes_the_fastest_measured_row_of_a_bench_stopped_before_it_marked_its_best():
    def row(name, frames_per_s, **notes):
        return dataclasses.asdict(Row("train", name, frames_per_s, 1.0, 1.0, notes))

    rows = [
        row("plain loop (course, re-encodes x_{t-1}), batch 2, fp32, TF on", 500.0, teacher_forcing=True),
        row("cvae_dist, batch 2, fp32, TF on", 100.0, batch=2, precision="no", teacher_forcing=True),
        row("cvae_dist, batch 16, bf16, TF on", 300.0, batch=16, precision="bf16", teacher_forcing=True),
        row("cvae_dist, batch 2, fp32, TF off", 900.0, batch=2, precision="no", teacher_forcing=False),
    ]
    assert gpu_check.best_setting({"rows": rows}).name == "cvae_dist, batch 16, bf16, TF on"
    rows[1]["notes"]["best"] = True  # a finished bench's own choice stands
    assert gpu_check.best_setting({"rows": rows}).name == "cvae_dist, batch 2, fp32, TF on"
    assert gpu_check.best_setting({"rows": rows[:1]}) is None and gpu_check.best_setting({}) is None


@pytest.mark.slow
def test_a_bench_row_over_its_limit_stops_the_bench_which_keeps_the_rows_it_measured(tmp_path):
    plan = dataclasses.replace(gpu_check.DRY_RUN, bench_row_s=0.1)  # each row takes seconds on a CPU
    check = gpu_check.Check(plan, tmp_path / "out", tmp_path / "work", None)
    check.run_step("bench")
    step = check.step("bench")
    assert step["status"] == "timed out" and step["reason"].startswith("stopped: row ") and "the limit of a row" in step["reason"]
    assert len(step["results"]["rows"]) >= 1 and not step["results"]["finished"] and "stopped early" in step["headline"]
    assert any(line.startswith("by hand: `python benchmarks/bench.py --device cpu --quick") for line in step["next"])


@pytest.mark.slow
def test_the_printed_summary_is_the_markdown_report_and_says_what_to_run_after_a_failed_step(tmp_path, capsys):
    # --batches 0: bench.py refuses it (exit status 2) before it imports torch.
    plan = dataclasses.replace(gpu_check.DRY_RUN, bench=[*gpu_check.DRY_RUN.bench, "--batches", "0"], skip=NO_ENVIRONMENT)
    out = tmp_path / "out"
    check = gpu_check.run_check(plan, out, None, ["bench"])
    printed = capsys.readouterr().out
    markdown = (out / "gpu_check.md").read_text()
    assert markdown in printed and "\n| bench | failed | " in markdown and " | 180 | no rows (exit status 2) |\n" in markdown
    assert "2 of 8 steps (--steps bench; environment added: needed)" in markdown
    next_step = markdown.split("What to run next", 1)[1].splitlines()[-1]
    assert next_step.startswith(f"- bench (failed): `benchmarks/gpu_check.sh {out}-bench --steps bench --dry-run` reruns it alone; by hand: ")
    assert next_step.endswith(" --batches 0 --data $WORK/bench-data --json $WORK/bench.json`")
    assert [(s["step"], s["status"]) for s in check.steps] == [("environment", "skipped"), ("bench", "failed")]


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


@pytest.mark.slow
def test_a_command_over_its_budget_is_stopped_with_its_output_kept(tmp_path):
    check = gpu_check.Check(gpu_check.DRY_RUN, tmp_path, tmp_path, None)
    outcome = check.run("sleeper", [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(60)"], budget=2)
    assert outcome.returncode is None
    assert outcome.tail()[-1] == "started"


@pytest.mark.slow
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
        row("cvae_dist, batch 16, bf16, TF on", 1000.0, teacher_forcing=True, best=True, precision="bf16"),
        row("cvae_dist, batch 16, bf16, TF off", 250.0, teacher_forcing=False, best=True, precision="bf16"),
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


@pytest.mark.slow
@pytest.mark.timeout(gpu_check.DRY_RUN.total_s + 120)
def test_dry_run_runs_every_step_and_hands_back_a_small_bundle(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out), "--dry-run"],
        env={**run_env(), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=gpu_check.DRY_RUN.total_s + 60,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    bundle = [path for path in out.rglob("*") if path.is_file()]
    assert sorted(path.name for path in bundle) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    assert len(bundle) <= BUNDLE_FILES
    assert all(path.stat().st_size < BUNDLE_FILE_BYTES and len(path.relative_to(out).parents) - 1 <= BUNDLE_DEPTH for path in bundle)

    report = json.loads((out / "gpu_check.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    work = Path(report["work"]["folder"])
    assert out.resolve() not in work.resolve().parents and not work.exists()  # datasets and runs: elsewhere, and gone
    assert report["work"]["where"].startswith(str(work.parent))
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
    assert markdown in result.stdout  # the summary printed at the end is the report
    assert markdown.startswith("# cvae_dist GPU check: dry run (CPU)") and "What to run next" not in markdown
    assert f"With time left on the GPU: {gpu_check.AFTER_THE_CHECK}." in markdown
    for name in gpu_check.STEPS:
        assert f"\n| {name} | {steps[name]['status']} |" in markdown
    assert "section   what" in markdown and "TF on, compiled" in markdown  # the bench's table, with the compiled row
    log = (out / "gpu_check.log").read_text()
    assert all(f"==== {name}: $ " in log for name, step in steps.items() if step["status"] != "skipped")
