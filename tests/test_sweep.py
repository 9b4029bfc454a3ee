"""Sweep grids: expansion, folder names, and flags that reproduce each point exactly."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from cvae_dist.config import parse_args, resolve
from cvae_dist.errors import UserError
from cvae_dist.sweep import load_grid, point_flags, point_name
from cvae_dist.train import DEMO_CONFIG
from support import REPO, run_env

GRIDS = sorted((REPO / "slurm" / "grids").glob("*.yaml"))


def test_shipped_grids_hold_the_course_comparisons():
    kl = load_grid(REPO / "slurm" / "grids" / "kl_annealing.yaml")
    assert [p["kl_anneal_type"] for p in kl] == [kl for kl in ["Cyclical", "Cyclical", "Monotonic", "Without"] for _ in range(2)]
    tf = load_grid(REPO / "slurm" / "grids" / "teacher_forcing.yaml")
    assert [(p["tfr"], p.get("tfr_coin")) for p in tf[::2]] == [(0.0, None), (1.0, "epoch"), (1.0, "batch"), (1.0, "frame"), (1.0, None), (1.0, None)]
    assert all(p["preset"] == "lab" and p["num_epoch"] == 70 for p in kl + tf)
    assert [p["seed"] for p in kl + tf] == [0, 1] * 10


def test_the_sweep_scripts_own_array_fits_the_grid_it_runs_without_flags():
    """`sbatch slurm/sweep.sh` (the README's command) runs the KL grid with the script's #SBATCH --array."""
    (array,) = re.findall(r"^#SBATCH --array=(\S+)$", (REPO / "slurm" / "sweep.sh").read_text(), re.MULTILINE)
    assert array == f"0-{len(load_grid(REPO / 'slurm' / 'grids' / 'kl_annealing.yaml')) - 1}"


@pytest.mark.parametrize("grid", GRIDS, ids=lambda p: p.name)
def test_flags_of_every_point_give_back_that_point(grid):
    points = load_grid(grid)
    for point in points:
        assert parse_args(point_flags(point)) == resolve({k: (v, "grid") for k, v in point.items()})
    names = [point_name(points, i) for i in range(len(points))]
    assert len(set(names)) == len(points) and all(n[:3].isdigit() for n in names)


@pytest.mark.parametrize("name", ["cpu_kl_annealing.yaml", "cpu_teacher_forcing.yaml"])
def test_cpu_grids_vary_one_method_of_the_demo_recipe_with_two_seeds_per_point(name):
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    points = load_grid(REPO / "slurm" / "grids" / name)
    varied = {k for p in points for k in p if len({repr(q.get(k)) for q in points}) > 1} - {"seed"}
    assert varied <= {"kl_anneal_type", "kl_anneal_unit", "kl_anneal_cycle", "kl_anneal_ratio", "tfr", "tfr_sde", "tfr_d_step", "tfr_coin"}
    for point in points:
        assert {k: point[k] for k in demo.keys() - varied - {"save_root"}} == {k: demo[k] for k in demo.keys() - varied - {"save_root"}}
    seeds = {}
    for point in points:
        seeds.setdefault(repr({k: v for k, v in point.items() if k != "seed"}), set()).add(point["seed"])
    assert all(found == {0, 1} for found in seeds.values())


def test_product_of_a_mapping_and_concatenation_of_a_list(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: {preset: tiny}\ngrid:\n  - {lr: [0.001, 0.002], fast_train: [true, false]}\n  - {freeze_batchnorm: true}\n")
    points = load_grid(grid)
    assert len(points) == 5
    assert points[0] == {"preset": "tiny", "lr": 0.001, "fast_train": True}
    assert point_flags(points[1]) == ["--preset", "tiny", "--lr", "0.001", "--no-fast_train"]
    assert point_name(points, 4) == "004_lr-0.001_fast_train-False_freeze_batchnorm-True"


def test_a_misspelt_setting_fails_when_the_grid_is_read(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("grid:\n  kl_anneal_typ: [Cyclical]\n")
    with pytest.raises(UserError, match=r"point 0: unknown setting 'kl_anneal_typ' \(did you mean 'kl_anneal_type'\?\)"):
        load_grid(grid)


def test_cli_counts_and_rejects_an_index_past_the_end():
    grid = str(REPO / "slurm" / "grids" / "kl_annealing.yaml")
    count = subprocess.run([sys.executable, "-m", "cvae_dist.sweep", grid, "--count"], env=run_env(), capture_output=True, text=True, timeout=300)
    assert count.stdout.strip() == "8"
    past = subprocess.run([sys.executable, "-m", "cvae_dist.sweep", grid, "--index", "8"], env=run_env(), capture_output=True, text=True, timeout=300)
    assert past.returncode == 2 and past.stderr.strip() == f"error: --index 8: {grid} has 8 points (0 to 7)"
