"""A real Slurm on this machine: slurm/sweep.sh as an array job (two points, two seeds each, and a
task that fails), tb_summary and the report over its runs, the HParams dashboard as TensorBoard's own backend serves it, a sweep task preempted by SIGUSR1 that
requeues itself and finishes, and slurm/multinode.sh with two tasks standing in for two nodes
(gloo over loopback)."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.context import RequestContext
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

from cvae_dist import checkpoint as ckpt
from cvae_dist.sweep import load_grid, point_name
from local_slurm import CPU_RESOURCES, ENDED, LocalSlurm, scontrol_job, slurm_env
from support import REPO, run_env

# Real processes end to end: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

TINY_BASE = """\
base:
  preset: tiny
  train_vi_len: 8
  val_vi_len: 8
  batch_size: 2
  lr_milestones: []
  log_every: 1
  num_epoch: 1
"""
# A miniature of the course's comparisons: two points with two seeds each, and a fifth task whose
# training stops on an error before it logs anything (its validation video is too short).
TINY_GRID = (
    TINY_BASE
    + """\
grid:
  - kl_anneal_type: [Monotonic, Without]
    seed: [0, 1]
  - kl_anneal_type: Without
    val_vi_len: 100000
"""
)


def sbatch(slurm: LocalSlurm, args: list[str], cwd: Path, status: int = 0, **extra: str) -> subprocess.CompletedProcess:
    """Submit and wait; `status` is what `sbatch --wait` should exit with: the highest of the job's tasks."""
    result = subprocess.run(["sbatch", "--wait", *args], cwd=cwd, env=slurm_env(slurm, **extra), capture_output=True, text=True, timeout=1200)
    submitted = re.match(r"Submitted batch job (\d+)", result.stdout)
    if submitted and "no longer found and exit code not found" in result.stderr:
        # sbatch --wait sometimes loses the record of a job that has ended (once in eight CI runs, though
        # MinJobAge=0 keeps them); the controller's log still has every task's exit status.
        result.returncode = slurm.exit_status(int(submitted.group(1)))
    outputs = "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(cwd.glob("slurm-*.out")))
    assert result.returncode == status, f"{result.stdout}{result.stderr}\n{outputs}\n{slurm.logs()}"
    return result


@pytest.fixture(scope="module")
def sweep(slurm, dataset_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    grid = folder / "grid.yaml"
    grid.write_text(TINY_GRID)
    log_root = folder / "runs"
    started = time.perf_counter()
    sbatch(
        slurm,
        ["--array=0-4", *CPU_RESOURCES, str(REPO / "slurm" / "sweep.sh"), str(grid), "--DR", str(dataset_root)],
        cwd=folder,
        status=2,  # the failing task's
        LOG_ROOT=str(log_root),
    )
    print(f"slurm sweep of 5 tiny runs: {time.perf_counter() - started:.1f} s")
    return folder, log_root


POINTS = [("Monotonic", 0), ("Monotonic", 1), ("Without", 0), ("Without", 1)]


def test_sweep_trains_every_point_in_its_own_run_folder(sweep):
    folder, log_root = sweep
    runs = sorted(p.name for p in log_root.iterdir())
    points = load_grid(folder / "grid.yaml")
    assert runs == [point_name(points, i) for i in range(5)]
    assert runs[0] == "000_val_vi_len-8_kl_anneal_type-Monotonic_seed-0" and "val_vi_len-100000" in runs[-1]
    for run, (kl, seed) in zip(runs, POINTS):
        assert (log_root / run / "checkpoints" / "checkpoint-8" / "model.safetensors").is_file(), run
        assert list((log_root / run / "tb").glob("events.out.tfevents.*")), run
        config = (log_root / run / "config.yaml").read_text()
        assert f"kl_anneal_type: {kl}" in config and f"seed: {seed}" in config
        assert (log_root / run / "exit_status").read_text() == "0\n"
    assert (log_root / runs[-1] / "exit_status").read_text() == "2\n"
    logs = sorted(folder.glob("slurm-*_*.out"))
    assert len(logs) == 5
    ports = {line.split()[-1] for log in logs for line in log.read_text().splitlines() if line.startswith("rendezvous port")}
    assert len(ports) == 5


def last_logged(run: Path, tag: str = "final/psnr") -> float:
    """The last value of a scalar (by default the final average PSNR) as the run's own event file
    holds it, read with TensorBoard's reader."""
    accumulator = EventAccumulator(str(run / "tb"))
    accumulator.Reload()
    return accumulator.Scalars(tag)[-1].value


def table(text: str, first_column: str) -> list[dict[str, str]]:
    """The rows of the Markdown table in `text` whose header starts with `first_column`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_column} |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))))
    return rows


def check_points(rows: list[dict[str, str]], log_root: Path) -> None:
    """Each grid point's row: two seeds done, their mean and range as the event files hold them."""
    runs = sorted(log_root.iterdir())[:4]  # the fifth failed
    assert [row["KL annealing"] for row in rows] == ["Monotonic", "Without"]
    for row, pair in zip(rows, (runs[:2], runs[2:])):
        scores = [last_logged(run) for run in pair]
        assert row["seeds done"] == "2 of 2"
        assert float(row["mean PSNR (dB)"]) == pytest.approx(sum(scores) / 2, abs=0.006)
        assert row["range (dB)"] == f"{min(scores):.2f} to {max(scores):.2f}"
        assert row["per seed"] == f"seed 0: {scores[0]:.2f}; seed 1: {scores[1]:.2f}"


def summarise(module: str, log_root: Path, out: Path) -> subprocess.CompletedProcess:
    """`python -m cvae_dist.<module> LOG_ROOT --out OUT`, as a user runs it after a sweep; it must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", f"cvae_dist.{module}", str(log_root), "--out", str(out)], env=run_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return result


def test_tb_summary_lists_every_run_and_each_grid_point_over_its_seeds(sweep, tmp_path):
    _, log_root = sweep
    result = summarise("tb_summary", log_root, tmp_path)
    with (tmp_path / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["kl_anneal_type"], r["seed"]) for r in rows[:4]] == [(kl, str(seed)) for kl, seed in POINTS]
    assert [r["status"] for r in rows] == ["done"] * 4 + ["failed (exit 2)"]
    for row, run in zip(rows[:4], sorted(log_root.iterdir())):
        assert int(row["steps"]) == 8 and int(row["epochs"]) == 1
        assert float(row["final_val_psnr"]) == pytest.approx(last_logged(run), abs=1e-4)
        assert float(row["one_step_psnr"]) == pytest.approx(last_logged(run, "val/one_step_psnr"), abs=1e-4)  # one validation: the best
        assert float(row["wall_time_s"]) > 0
    summary = (tmp_path / "summary.md").read_text()
    assert summary == result.stdout[: len(summary)]
    assert [row["status"] for row in table(summary, "run")] == ["done"] * 4 + ["failed (exit 2)"]
    check_points(table(summary, "KL annealing"), log_root)
    assert re.search(r"beats .* every seed|within (seed )?noise", summary)
    assert (tmp_path / "psnr_per_frame.png").stat().st_size > 10_000 and (tmp_path / "loss.png").stat().st_size > 10_000


def test_report_of_the_sweep_marks_the_failed_task_and_compares_the_points(sweep, tmp_path):
    _, log_root = sweep
    summarise("report", log_root, tmp_path)
    page = (tmp_path / "report.md").read_text()
    runs = table(page, "run")
    assert [row["run"] for row in runs] == sorted(p.name for p in log_root.iterdir())
    assert [row["status"] for row in runs] == ["done"] * 4 + ["failed (exit 2)"]
    check_points(table(page, "KL annealing"), log_root)
    assert (tmp_path / "val_psnr.png").stat().st_size > 10_000


def test_hparams_dashboard_lists_every_run_with_its_metrics(sweep):
    """Ask TensorBoard's HParams backend what its dashboard would list for `--logdir LOG_ROOT`."""
    _, log_root = sweep
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(log_root))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(log_root))
    context = backend_context.Context(base_plugin.TBContext(logdir=str(log_root), multiplexer=multiplexer, data_provider=provider))
    statuses = [api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING]
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100, include_metrics=True, allowed_statuses=statuses)
    response = list_session_groups.Handler(RequestContext(), context, "", request).run()
    groups = {g.name: g for g in response.session_groups}
    logged = sorted(run for run in log_root.iterdir() if (run / "tb").is_dir())  # the failed task logged nothing
    assert sorted(groups) == [f"{run.name}/tb" for run in logged]
    for run, (kl, seed) in zip(logged, POINTS, strict=True):
        group = groups[f"{run.name}/tb"]
        assert group.hparams["kl_anneal_type"].string_value == kl and group.hparams["seed"].number_value == seed
        metrics = {m.name.tag: m.value for m in group.metric_values}
        assert {"val/psnr", "val/best_psnr", "final/psnr"} <= set(metrics), run.name
        assert metrics["final/psnr"] == pytest.approx(last_logged(run))


def test_summary_of_a_folder_without_events_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cvae_dist.tb_summary", str(tmp_path)], env=run_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path}: no TensorBoard event files under it"


def wait_for_job(slurm: LocalSlurm, job: str, log: Path, ready, what: str, timeout: float = 900) -> dict[str, str]:
    """Poll the job until `ready(its scontrol fields)`; returns them."""
    deadline = time.monotonic() + timeout
    while not ready(state := scontrol_job(slurm, job)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {what}: {state}\n{log.read_text()[-3000:] if log.exists() else 'no log'}")
        time.sleep(0.1)
    return state


def test_a_sweep_task_signalled_to_stop_checkpoints_requeues_itself_and_finishes(slurm, dataset_root, tmp_path):
    grid = tmp_path / "grid.yaml"
    # One epoch of 16 windows in batches of 1: 16 steps.
    grid.write_text(TINY_BASE.replace("batch_size: 2", "batch_size: 1") + "grid:\n  kl_anneal_type: [Without]\n")
    run = tmp_path / "runs" / "000"  # a one-point grid has no settings that set its points apart
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--array=0", *CPU_RESOURCES, str(REPO / "slurm" / "sweep.sh"), str(grid), "--DR", str(dataset_root)],
        cwd=tmp_path,
        env=slurm_env(slurm, LOG_ROOT=str(tmp_path / "runs")),
        capture_output=True,
        text=True,
        check=True,
    )
    job = f"{submitted.stdout.strip().split(';')[0]}_0"
    log = tmp_path / f"slurm-{job}.out"

    # What `#SBATCH --signal=B:USR1@120` does before the time limit, once training has taken a step
    # of its 16 (the progress bar shows "1/16"), so that it is well before the end.
    def stepping(state):
        return state["JobState"] in ENDED or (log.exists() and re.search(r"\b[1-9]\d*/16 \[", log.read_text()))

    assert wait_for_job(slurm, job, log, stepping, "the first training step")["JobState"] == "RUNNING", log.read_text()[-3000:]
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=slurm_env(slurm), check=True)
    state = wait_for_job(slurm, job, log, lambda s: s["JobState"] in ENDED, "the end of the job")

    output = log.read_text()  # both runs of the task: the script appends (--open-mode=append)
    assert (state["JobState"], state["Restarts"], state["ExitCode"]) == ("COMPLETED", "1", "0:0"), output[-3000:]
    stopped = re.search(r"stopped by SIGUSR1 after step (\d+): checkpoint (\S+);", output)
    assert stopped and "SIGUSR1, asking training to save a checkpoint" in output, output[-3000:]
    step, folder = int(stopped.group(1)), Path(stopped.group(2))
    assert step < 16 and folder == ckpt.checkpoint_dir(run, step)
    assert f"requeueing job {state['JobId']}" in output
    assert f"resumed from {folder} at epoch 0, step {step}" in output
    assert (run / "checkpoints" / "checkpoint-16" / ckpt.WEIGHTS).is_file() and "done in" in output
    assert (run / "exit_status").read_text() == "0\n"


def test_the_shipped_kl_grid_runs_as_the_readme_submits_it(slurm, dataset_root, tmp_path):
    """`sbatch slurm/sweep.sh slurm/grids/kl_annealing.yaml --DR ...`: the script's array over the shipped
    grid with its defaults (the loader's workers included), made small by size flags and by running its
    first and last points of eight (test_sweep.py checks that the script's own array covers all eight and
    that every point's flags parse). The script finds the grid in the repository (CVAE_DIST_DIR), so it
    is submitted from a scratch folder."""
    size = ["--preset", "tiny", "--num_epoch", "1", "--train_vi_len", "8", "--val_vi_len", "8"]
    points = load_grid(REPO / "slurm" / "grids" / "kl_annealing.yaml")
    first_and_last = [0, len(points) - 1]
    started = time.perf_counter()
    sbatch(
        slurm,
        [
            *CPU_RESOURCES,
            f"--array={','.join(map(str, first_and_last))}",
            str(REPO / "slurm" / "sweep.sh"),
            "slurm/grids/kl_annealing.yaml",
            "--DR",
            str(dataset_root),
            *size,
        ],
        cwd=tmp_path,
        LOG_ROOT=str(tmp_path / "runs"),
    )
    print(f"the shipped KL grid, 2 tiny runs: {time.perf_counter() - started:.1f} s")
    runs = sorted((tmp_path / "runs").iterdir())
    assert [run.name for run in runs] == [point_name(points, index) for index in first_and_last]
    for run in runs:
        assert (run / "exit_status").read_text() == "0\n", run
        assert (run / "eval" / "rollout.gif").is_file() and not (run / ".run.lock").exists(), run
    # The script says when an array does not cover its grid, once (from the first task).
    logs = "".join(log.read_text() for log in tmp_path.glob("slurm-*.out"))
    assert logs.count(f"has {len(points)} points but this array has 2 tasks") == 1, logs[-3000:]


def test_multinode_script_runs_one_training_over_two_tasks(slurm, dataset_root, tmp_path):
    save_root = tmp_path / "run"
    flags = [
        "--DR",
        str(dataset_root),
        "--preset",
        "tiny",
        "--train_vi_len",
        "8",
        "--val_vi_len",
        "8",
        "--lr_milestones",
        "--num_epoch",
        "1",
        "--log_every",
        "1",
        "--mixed_precision",
        "no",
    ]
    # Two tasks on this one node stand in for two nodes with one process each.
    sbatch(
        slurm,
        ["--nodes=1", "--ntasks=2", "--ntasks-per-node=2", *CPU_RESOURCES, str(REPO / "slurm" / "multinode.sh"), *flags],
        cwd=tmp_path,
        SAVE_ROOT=str(save_root),
        HEAD_ADDR="127.0.0.1",
    )
    (log,) = tmp_path.glob("slurm-*.out")
    output = log.read_text()
    assert "2 nodes x 1 processes, head 127.0.0.1" in output
    assert "world size 2 (MULTI_CPU" in output
    # 16 windows in batches of 2 on each of 2 processes: 4 optimizer steps per epoch, not 8.
    assert [p.name for p in (save_root / "checkpoints").iterdir()] == ["checkpoint-4"]
    assert (save_root / "checkpoints" / "checkpoint-4" / "random_states_1.pkl").is_file()
