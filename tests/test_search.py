"""The Optuna search: search files checked against the training flags, the missing-optuna message,
the budget and dead trials in a storage filled here, the summary, and (slow) a search on a real Slurm
with two workers, one preempted and requeued, and a trial pruned."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import pytest

optuna = pytest.importorskip("optuna")  # the search extra: `make test` installs it

from optuna.distributions import FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from cvae_dist import train  # noqa: E402
from cvae_dist.config import parse_args  # noqa: E402
from cvae_dist.errors import UserError  # noqa: E402
from cvae_dist.search import study as search_study  # noqa: E402
from cvae_dist.search import worker  # noqa: E402
from cvae_dist.search.space import load_search  # noqa: E402
from cvae_dist.search.summary import FIGURES, rows, summarise  # noqa: E402
from local_slurm import CPU_RESOURCES, ENDED, scontrol_job, slurm_env  # noqa: E402
from support import REPO, run_env  # noqa: E402

SEARCHES = sorted((REPO / "slurm" / "searches").glob("*.yaml"))
TINY = """\
n_trials: 4
pruner: {name: Median, n_startup_trials: 1}
heartbeat_interval: 1
grace_period: 8
fixed:
  preset: tiny
  train_vi_len: 8
  val_vi_len: 8
  batch_size: 2
  lr_milestones: []
  log_every: 1
  num_epoch: 2
space:
  lr: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
  kl_anneal_cycle: {type: int, low: 1, high: 4}
  kl_anneal_type: {type: categorical, choices: [Cyclical, Monotonic]}
"""


def write(tmp_path: Path, text: str, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SEARCHES, ids=lambda p: p.name)
def test_shipped_searches_give_trials_that_training_accepts(path):
    search = load_search(path)
    assert search.n_trials >= 1 and search.space
    for bound in ("low", "high"):
        params = {name: getattr(d, bound, None) if not hasattr(d, "choices") else d.choices[0] for name, d in search.space.items()}
        settings = parse_args(search.trial_flags(params)).flat()
        assert {name: settings[name] for name in params} == params
    for params in search.enqueue:
        parse_args(search.trial_flags(params))


def test_the_kl_lr_search_covers_lr_on_a_log_scale_and_the_kl_schedule():
    search = load_search(REPO / "slurm" / "searches" / "kl_lr.yaml")
    assert search.space["lr"] == FloatDistribution(3e-4, 1e-2, log=True)
    assert set(search.space) == {"lr", "kl_anneal_ratio", "kl_anneal_cycle", "tfr_d_step"}
    assert search.space["kl_anneal_cycle"] == IntDistribution(1, 8)
    assert search.sampler == {"name": "TPE", "seed": 0, "n_startup_trials": 6}
    assert isinstance(search.make_pruner(), optuna.pruners.MedianPruner)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("lr: {", "lrr: {"), r"space: unknown setting 'lrr' \(did you mean 'lr'\?\)"),
        (("low: 1.0e-6", "low: 0"), r"tiny.yaml space: lr must be > 0, got 0.0"),
        (("low: 1, high: 4", "low: 4, high: 1"), r"space: kl_anneal_cycle: .*low.*high"),
        (("{type: int, low: 1", "{type: float, low: 1"), r"kl_anneal_cycle: the setting is int: use type: int"),
        (
            ("choices: [Cyclical, Monotonic]", "choices: [Cyclical, Sometimes]"),
            r"kl_anneal_type must be one of Cyclical, Monotonic, Without, got 'Sometimes'",
        ),
        (("type: categorical", "type: choice"), r"kl_anneal_type: expected \{type: float\|int\|categorical"),
        (("n_trials: 4", "n_trial: 4"), r"unknown key 'n_trial' \(did you mean 'n_trials'\?\)"),
        (("Median", "Medium"), r"pruner 'Medium' is not one of Optuna's: .*Hyperband.*Median"),
        (("  num_epoch: 2", "  num_epoch: 2\n  save_root: x"), r"fixed: save_root is set by the search"),
        (("  num_epoch: 2", "  num_epoch: 2\n  lr: 0.1"), r"lr is both fixed and searched"),
        (("grace_period: 8", "grace_period: 1"), r"grace_period \(1 s\) must be longer than heartbeat_interval"),
    ],
)
def test_a_bad_search_file_is_one_error_naming_what_is_wrong(tmp_path, change, message):
    assert change[0] in TINY
    with pytest.raises(UserError, match=message):
        load_search(write(tmp_path, TINY.replace(*change)))


def test_yaml_numbers_without_a_dot_are_read_as_training_reads_them(tmp_path):
    search = load_search(write(tmp_path, TINY.replace("low: 1.0e-6", "low: 1e-6")))
    assert search.space["lr"].low == 1e-6


def test_training_flags_may_not_set_what_the_search_sets(tmp_path):
    search = load_search(write(tmp_path, TINY))
    worker.check_extra_flags(search, ["--DR", "data", "--seed", "3"])
    with pytest.raises(UserError, match=r"--lr: lr is searched"):
        worker.check_extra_flags(search, ["--lr", "0.1"])
    with pytest.raises(UserError, match=r"--save_root: the search sets save_root"):
        worker.check_extra_flags(search, ["--save_root", "x"])
    with pytest.raises(UserError, match=r"unrecognized arguments: --bogus"):
        worker.check_extra_flags(search, ["--bogus"])


def test_the_worker_reads_the_status_training_writes():
    assert (worker.EXIT_REQUEUE, worker.STATUS_FILE_ENV) == (train.EXIT_REQUEUE, train.STATUS_FILE_ENV)


def test_without_optuna_a_search_is_one_line_saying_how_to_install_it(tmp_path):
    code = "import sys; sys.modules['optuna'] = None; from cvae_dist.search.__main__ import main; raise SystemExit(main())"
    search = str(REPO / "slurm" / "searches" / "kl_lr.yaml")
    result = subprocess.run([sys.executable, "-c", code, search, "--count"], env=run_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr == "error: a search needs optuna, which is not installed: pip install -e '.[search]' (or pip install 'optuna>=4')\n"
    helped = subprocess.run([sys.executable, "-c", code, "--help"], env=run_env(), capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and "--summary" in helped.stdout


def test_cli_counts_and_lists():
    path = str(REPO / "slurm" / "searches" / "kl_lr.yaml")
    count = subprocess.run([sys.executable, "-m", "cvae_dist.search", path, "--count"], env=run_env(), capture_output=True, text=True, timeout=300)
    assert count.stdout == "16\n"
    listed = subprocess.run([sys.executable, "-m", "cvae_dist.search", path, "--list"], env=run_env(), capture_output=True, text=True, timeout=300)
    assert "lr\tFloatDistribution(high=0.01, log=True, low=0.0003, step=None)" in listed.stdout
    assert "--kl_anneal_type Cyclical" in listed.stdout


def journal_study(tmp_path: Path, text: str = TINY):
    search = load_search(write(tmp_path, text))
    storage = search_study.open_storage(tmp_path / "root", None)
    return search, search_study.open_study(search, storage)


def test_a_trial_without_a_heartbeat_is_failed_and_retried_in_its_folder(tmp_path):
    search, study = journal_study(tmp_path)
    params = {"lr": 1e-3, "kl_anneal_cycle": 2, "kl_anneal_type": "Monotonic"}
    for number, (worker_name, awaiting) in enumerate([("1_0", False), ("1_1", True), ("1_2", False)]):
        trial = study.ask()
        for name in params:
            worker.suggest(trial, name, search.space[name])
        attrs = {search_study.RUN: f"trial-{number:03d}", search_study.WORKER: worker_name, search_study.AWAITING_REQUEUE: awaiting}
        for key, value in {**attrs, search_study.HEARTBEAT: time.time() - 60}.items():
            trial.set_user_attr(key, value)
        trial.report(15.0, 1)
    study.ask().set_user_attr(search_study.HEARTBEAT, time.time())  # a fourth trial, alive
    assert search_study.fail_dead(study, search) == [0, 2]
    assert search_study.fail_dead(study, search) == []  # found once
    trials = study.get_trials()
    assert [t.state for t in trials[:4]] == [TrialState.FAIL, TrialState.RUNNING, TrialState.FAIL, TrialState.RUNNING]
    retries = study.get_trials(states=(TrialState.WAITING,))
    assert [search_study.retry_history(t) for t in retries] == [[0], [2]]
    assert retries[0].user_attrs[search_study.RUN] == "trial-000" and retries[0].intermediate_values == {1: 15.0}
    # The dead trials' retries take their places in the budget; the one awaiting its requeue stays its task's.
    assert search_study.spent(study) == 4
    assert search_study.own_trial(study, "1_1").number == 1 and search_study.own_trial(study, "1_0") is None
    retry = study.ask()  # the next worker's ask pops the retry, with the dead trial's settings
    assert retry.number == 4 and worker.suggest(retry, "lr", search.space["lr"]) == trials[0].params["lr"]


def test_a_second_search_file_cannot_join_another_study(tmp_path):
    search, study = journal_study(tmp_path)
    other = load_search(write(tmp_path, TINY.replace("high: 4", "high: 5")))
    with pytest.raises(UserError, match=r"was started with another space; give another --root"):
        search_study.open_study(other, search_study.open_storage(tmp_path / "root", None))
    grown = load_search(write(tmp_path, TINY.replace("n_trials: 4", "n_trials: 8")))
    search_study.open_study(grown, search_study.open_storage(tmp_path / "root", None))  # a larger budget is the same search


def test_summary_lists_trials_best_first_and_writes_optunas_figures(tmp_path):
    search, study = journal_study(tmp_path)
    distributions = search.space
    for lr, cycle, value, state in [(1e-3, 1, 17.0, "COMPLETE"), (3e-3, 2, 18.5, "COMPLETE"), (1e-5, 3, 15.0, "PRUNED"), (5e-3, 4, 17.5, "COMPLETE")]:
        params = {"lr": lr, "kl_anneal_cycle": cycle, "kl_anneal_type": "Cyclical"}
        trial = create_trial(
            params=params,
            distributions=distributions,
            value=value,
            intermediate_values={1: value - 1, 2: value} if state == "COMPLETE" else {1: value},
            state=TrialState[state],
            user_attrs={search_study.RUN: f"trial-{len(study.trials):03d}"},
        )
        study.add_trial(trial)
    table = rows(study, search)
    assert [(r["trial"], r["state"], r["PSNR (dB)"], r["epochs"]) for r in table] == [
        ("1", "complete", "18.50", "2"),
        ("3", "complete", "17.50", "2"),
        ("0", "complete", "17.00", "2"),
        ("2", "pruned", "15.00", "1"),
    ]
    assert table[0]["lr"] == "0.003" and table[0]["run"] == "trial-001"

    def style():  # every setting but the backend, which the summary sets to Agg (files only)
        return {k: v for k, v in matplotlib.rcParams.items() if not k.startswith("backend")}

    before = style()
    text = summarise(study, search, tmp_path / "root")
    # Optuna's plots set matplotlib's ggplot style for the whole process; figures drawn after them keep theirs.
    assert style() == before
    assert text.splitlines()[0] == "study tiny: 4 trials (3 complete) of a budget of 4; best validation PSNR per trial"
    for name in FIGURES:
        assert (tmp_path / "root" / f"{name}.png").stat().st_size > 10_000, name
    assert (tmp_path / "root" / "search_summary.md").read_text() in text


def test_summary_of_a_root_without_a_search_is_one_line(tmp_path):
    path = str(REPO / "slurm" / "searches" / "kl_lr.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "cvae_dist.search", path, "--summary", "--root", str(tmp_path)],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path}: no search there (optuna.journal is missing); give the --root its workers used\n"


# ---- a search on a real Slurm -------------------------------------------------------------------


# A good trial twice (training is deterministic on a CPU, so the median pruner, which stops a trial
# below the finished trials' median, leaves the second be), then a poor learning rate that it stops after
# its first epoch (it starts once a good one has finished), then one of TPE's.
GOOD = "{lr: 0.003, kl_anneal_cycle: 1, kl_anneal_type: Monotonic}"
SLURM_SEARCH = TINY + f"enqueue:\n  - {GOOD}\n  - {GOOD}\n  - {{lr: 1.0e-6}}\n"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_search_on_slurm_with_a_worker_preempted_and_a_trial_pruned(slurm, dataset_root, tmp_path):
    path = write(tmp_path, SLURM_SEARCH)
    root = tmp_path / "runs" / "tiny"
    started = time.perf_counter()
    # As the README submits it, made small by the search file's sizes only.
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--array=0-1", *CPU_RESOURCES, str(REPO / "slurm" / "search.sh"), str(path), "--DR", str(dataset_root)],
        cwd=tmp_path,
        env=slurm_env(slurm, LOG_ROOT=str(root)),
        capture_output=True,
        text=True,
        check=True,
    )
    array = submitted.stdout.strip().split(";")[0]
    tasks = [f"{array}_{task}" for task in (0, 1)]
    logs = {task: tmp_path / f"slurm-{task}.out" for task in tasks}

    # Once a worker's trial trains ("1/16 [" in its progress bar: 8 steps in each of 2 epochs), send its task what Slurm sends before the time limit.
    deadline = time.monotonic() + 300
    while not (stepping := [t for t in tasks if logs[t].exists() and re.search(r"\b[1-9]\d*/16 \[", logs[t].read_text())]):
        assert time.monotonic() < deadline, "\n".join(p.read_text()[-2000:] for p in logs.values() if p.exists())
        time.sleep(0.2)
    preempted = stepping[0]
    trial = int(re.findall(r"^trial (\d+) in ", logs[preempted].read_text(), re.M)[-1])
    subprocess.run(["scancel", "--signal=USR1", "--batch", preempted], env=slurm_env(slurm), check=True)
    while not all((state := scontrol_job(slurm, t))["JobState"] in ENDED for t in tasks):
        assert time.monotonic() < deadline + 300, state
        time.sleep(0.5)
    print(f"slurm search of 4 tiny trials with a requeue: {time.perf_counter() - started:.1f} s")
    outputs = {t: logs[t].read_text() for t in tasks}
    for task in tasks:
        state = scontrol_job(slurm, task)
        assert (state["JobState"], state["ExitCode"]) == ("COMPLETED", "0:0"), outputs[task][-4000:]
        assert state["Restarts"] == ("1" if task == preempted else "0")
    output = outputs[preempted]
    assert "SIGUSR1, asking training to save a checkpoint" in output and "requeueing job" in output
    assert f"going on with its trial {trial} (trial-{trial:03d})" in output
    assert re.search(rf"resumed from {re.escape(str(root / f'trial-{trial:03d}'))}/checkpoints/checkpoint-\d+ at epoch", output)

    result = subprocess.run(
        [sys.executable, "-m", "cvae_dist.search", str(path), "--summary", "--root", str(root)],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="tiny", storage=search_study.open_storage(root, None))
    states = {t.number: t.state for t in study.trials}
    assert len(states) == 4 and states[trial] == TrialState.COMPLETE, result.stdout
    assert states[2] == TrialState.PRUNED and states[3] in (TrialState.COMPLETE, TrialState.PRUNED), result.stdout
    assert study.trials[2].intermediate_values.keys() == {1}
    for number in range(4):
        run = root / f"trial-{number:03d}"
        assert study.trials[number].user_attrs[search_study.RUN] == run.name
        assert list((run / "tb").glob("events.out.tfevents.*")) and (run / "config.yaml").is_file()
    assert (root / "trial-002" / "exit_status").read_text() == "75\n"  # stopped by the pruner, as by a preemption
    assert "| 2 | pruned |" in result.stdout and (root / "param_importances.png").is_file()  # trials 0 and 1 complete
