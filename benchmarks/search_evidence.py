"""The evidence of docs/experiments.md's "A search against the demo's recipe", with one command.

    python benchmarks/search_evidence.py [--fresh]

1. makes a small set of the independent test-side generator (`tests/independent_dataset.py`, seed 1,
   1,024 training frames), and the validation video of another seed (2) as a held-out check;
2. starts a one-node Slurm on this machine (`tests/local_slurm.py`, 2 CPUs; needs root, slurm-wlm
   and munge) and submits the search `slurm/searches/cpu_kl_lr.yaml` as the README does, with two
   workers of one CPU each: `sbatch --array=0-1 --gres=none --cpus-per-task=1 slurm/search.sh ...`;
3. once both workers are done, runs `python -m cvae_dist.search ... --summary` and copies Optuna's
   figures to `docs/figures/search-*.png`;
4. trains the demo's recipe (`cvae_dist/configs/demo.yaml`) and the best trial's settings on the same
   data, sizes and step budget with seeds 0, 1 and 2 (two runs at a time, one thread each), and
   evaluates every run's best weights on the held-out validation video;
5. prints the tables (also written to `runs/search-evidence/results.md` and `results.json`).

A search already finished under `runs/cpu_kl_lr` is reused (its summary and comparison are redone);
`--fresh` deletes it and `runs/search-evidence` first. Measured on 2 CPU cores: about 20 minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, accelerate_launch, markdown_table, repo_env

sys.path.insert(0, str(REPO / "tests"))

SEARCH = "slurm/searches/cpu_kl_lr.yaml"
DATA = "data/search-evidence/independent-1024-seed1"
HELD_OUT = "data/search-evidence/independent-seed2"
ROOT = Path("runs/cpu_kl_lr")  # the search's default root: runs/<search file's stem>
OUT = Path("runs/search-evidence")
RECIPE = ["--config", "cvae_dist/configs/demo.yaml", "--val_vi_len", "100"]
SEEDS = (0, 1, 2)
FIGURES = {
    "optimization_history": "search-history.png",
    "param_importances": "search-importances.png",
    "parallel_coordinate": "search-parallel.png",
}
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", shlex.join(command), flush=True)
    return subprocess.run(command, check=True, cwd=REPO, env=kwargs.pop("env", repo_env()), **kwargs)


def make_data() -> None:
    for root, frames, seed in ((DATA, 1024, 1), (HELD_OUT, 32, 2)):
        if not (REPO / root).is_dir():
            run([sys.executable, "tests/independent_dataset.py", "--root", root, "--train-frames", str(frames), "--seed", str(seed)])


def search_done() -> bool:
    import optuna
    from optuna.trial import TrialState

    from cvae_dist.search.space import load_search
    from cvae_dist.search.study import open_storage, spent

    if not (REPO / ROOT / "optuna.journal").is_file():
        return False
    search = load_search(REPO / SEARCH)
    study = optuna.load_study(study_name=search.name, storage=open_storage(REPO / ROOT, None))
    busy = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    return spent(study) >= search.n_trials and not busy


def run_search() -> dict:
    """The search on a local Slurm of 2 CPUs; returns its job and wall time."""
    from local_slurm import LocalSlurm, unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"error: {reason}")
    with tempfile.TemporaryDirectory(prefix="cvae-search-slurm-") as folder, LocalSlurm(Path(folder), cpus=2) as slurm:
        env = slurm.env(repo_env(ACCELERATE_CONFIG="accelerate_configs/cpu.yaml"))
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
        began = time.time()
        submitted = run(
            ["sbatch", "--parsable", "--array=0-1", "--gres=none", "--cpus-per-task=1", "slurm/search.sh", SEARCH, "--DR", DATA],
            env=env,
            capture_output=True,
            text=True,
        )
        array = submitted.stdout.strip().split(";")[0]
        tasks = [f"{array}_{task}" for task in (0, 1)]
        states = {}
        while True:
            for task in tasks:
                shown = subprocess.run(["scontrol", "-o", "show", "job", task], env=env, capture_output=True, text=True)
                states[task] = dict(part.split("=", 1) for part in shown.stdout.split() if "=" in part)
            if all(s.get("JobState") in ENDED for s in states.values()):
                break
            time.sleep(5)
        wall = time.time() - began
    for task, state in states.items():
        print(f"task {task}: {state.get('JobState')} exit {state.get('ExitCode')} restarts {state.get('Restarts')}", flush=True)
    return {"array_job": array, "wall_s": wall, "tasks": {t: {k: s.get(k) for k in ("JobState", "ExitCode", "Restarts")} for t, s in states.items()}}


def summarise() -> tuple[str, dict]:
    """`--summary`'s table, the figures copied to docs/figures, and the study's facts."""
    import optuna
    from optuna.trial import TrialState

    from cvae_dist.search.space import load_search
    from cvae_dist.search.study import open_storage

    text = run([sys.executable, "-m", "cvae_dist.search", SEARCH, "--summary"], capture_output=True, text=True).stdout
    print(text, flush=True)
    for name, target in FIGURES.items():
        shutil.copyfile(REPO / ROOT / f"{name}.png", REPO / "docs" / "figures" / target)
    search = load_search(REPO / SEARCH)
    study = optuna.load_study(study_name=search.name, storage=open_storage(REPO / ROOT, None))
    trials = study.get_trials(deepcopy=False)
    times = [(t.datetime_start, t.datetime_complete) for t in trials if t.datetime_start and t.datetime_complete]
    facts = {
        "states": {state.name: sum(1 for t in trials if t.state == state) for state in TrialState},
        "pruned_after": {t.number: max(t.intermediate_values) for t in trials if t.state == TrialState.PRUNED},
        "trial_seconds": {t.number: (t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete},
        "first_start_to_last_end_s": (max(e for _, e in times) - min(s for s, _ in times)).total_seconds(),
        "best": {"number": study.best_trial.number, "value": study.best_value, "params": study.best_params},
        "best_flags": search.trial_flags(study.best_params),
    }
    return text, facts


def train_all(best_flags: list[str]) -> dict[str, float]:
    """Recipe and best settings, seeds 0-2, two runs at a time with one thread each; returns minutes per run."""
    jobs = [(f"{name}-seed{seed}", flags, seed) for name, flags in (("recipe", RECIPE), ("best", best_flags)) for seed in SEEDS]
    minutes, running = {}, []
    (REPO / OUT).mkdir(parents=True, exist_ok=True)
    env = repo_env(OMP_NUM_THREADS="1")
    while jobs or running:
        while jobs and len(running) < 2:
            name, flags, seed = jobs.pop(0)
            train = [*flags, "--DR", DATA, "--seed", str(seed), "--save_root", str(OUT / name), "--overwrite"]
            command = accelerate_launch("cpu.yaml", ["--num_cpu_threads_per_process", "1", "--quiet"], train)
            print("+", shlex.join(command), flush=True)
            log = (REPO / OUT / f"{name}.log").open("w")
            running.append((name, subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), time.time()))
        time.sleep(2)
        for entry in list(running):
            name, process, began = entry
            if process.poll() is not None:
                if process.returncode != 0:
                    raise SystemExit(f"error: {name} failed with exit status {process.returncode}; see {OUT / name}.log")
                minutes[name] = (time.time() - began) / 60
                running.remove(entry)
    return minutes


def averages(csv_path: Path) -> tuple[float, float]:
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    return statistics.fmean(float(r["psnr"]) for r in rows), statistics.fmean(float(r["baseline_psnr"]) for r in rows)


def best_val_psnr(run_folder: Path) -> float:
    from cvae_dist.search.worker import EpochReader

    return max(EpochReader(run_folder, set()).read().values())


def compare(minutes: dict[str, float]) -> tuple[str, dict]:
    results = {}
    for name in minutes:
        folder = REPO / OUT / name
        run(
            [sys.executable, "-m", "cvae_dist.evaluate", "--ckpt", str(OUT / name), "--DR", HELD_OUT, "--out", str(OUT / name / "held_out")]
            + ["--val_vi_len", "100", "--device", "cpu"],
            env=repo_env(OMP_NUM_THREADS="2"),
            stdout=subprocess.DEVNULL,
        )
        rollout, copy_first = averages(folder / "eval" / "psnr_per_frame.csv")
        held, held_copy = averages(folder / "held_out" / "psnr_per_frame.csv")
        results[name] = {"val_best": best_val_psnr(folder), "rollout": rollout, "copy_first": copy_first, "held_out": held}
        results[name] |= {"held_out_copy_first": held_copy, "minutes": minutes[name]}
    per_run = [
        [
            name,
            f"{r['val_best']:.2f}",
            f"{r['rollout']:.2f}",
            f"{r['copy_first']:.2f}",
            f"{r['held_out']:.2f}",
            f"{r['held_out_copy_first']:.2f}",
            f"{r['minutes']:.1f}",
        ]
        for name, r in results.items()
    ]
    table = markdown_table(
        ["run", "best val/psnr", "rollout, seed-1 video", "copy first", "rollout, held-out seed-2 video", "copy first", "minutes"], per_run
    )
    means = []
    for recipe in ("recipe", "best"):
        row = [recipe]
        for key in ("val_best", "rollout", "held_out"):
            values = [results[f"{recipe}-seed{s}"][key] for s in SEEDS]
            row.append(f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}")
        means.append(row)
    summary = markdown_table(["settings", "best val/psnr (dB)", "rollout, seed-1 video (dB)", "rollout, held-out seed-2 video (dB)"], means)
    return table + "\n\n" + summary + "\n", results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("--fresh", action="store_true", help="delete runs/cpu_kl_lr and runs/search-evidence first")
    args = parser.parse_args(argv)
    if args.fresh:
        shutil.rmtree(REPO / ROOT, ignore_errors=True)
        shutil.rmtree(REPO / OUT, ignore_errors=True)
    began = time.time()
    make_data()
    facts = {"data_s": time.time() - began}
    if search_done():
        print(f"{ROOT}: the search is done; reusing it", flush=True)
    else:
        facts["search"] = run_search()
    text, facts["study"] = summarise()
    print("best trial's flags:", shlex.join(facts["study"]["best_flags"]), flush=True)
    began_training = time.time()
    minutes = train_all(facts["study"]["best_flags"])
    facts["comparison_s"] = time.time() - began_training
    tables, facts["runs"] = compare(minutes)
    facts["total_s"] = time.time() - began
    (REPO / OUT / "results.json").write_text(json.dumps(facts, indent=2, default=str))
    (REPO / OUT / "results.md").write_text(text + "\n" + tables)
    print(tables)
    print(json.dumps({k: v for k, v in facts.items() if k != "runs"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
