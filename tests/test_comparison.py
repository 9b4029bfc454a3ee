"""A sweep's runs grouped by grid point: spread over seeds, the differences beyond it, run status."""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from cvae_dist import tb_summary
from cvae_dist.comparison import (
    DONE,
    INERT_NOTE,
    UNFINISHED,
    RunResult,
    comparison_markdown,
    figure_labels,
    figure_styles,
    findings,
    group_points,
    run_status,
    separated_pairs,
)
from cvae_dist.tracking import FINAL, TRAIN, VAL, write_hparams


def result(kl: str, seed: int, psnr: float | None, status: str = DONE) -> RunResult:
    return RunResult(f"{kl}-{seed}", {"kl_anneal_type": kl, "seed": seed, "save_root": f"runs/{kl}-{seed}"}, psnr, 18.0, status)


def test_points_group_seeds_and_only_ranges_that_do_not_overlap_count():
    runs = [
        result("Cyclical", 0, 30.0),
        result("Cyclical", 1, 31.0),
        result("Monotonic", 0, 28.0),
        result("Monotonic", 1, 29.0),
        result("Without", 0, 29.5),
        result("Without", 1, 32.5),
        result("Never", 0, 33.0),
        result("Never", 1, None, "failed (exit 1)"),
    ]
    points = group_points(runs)
    assert [p.settings for p in points] == [{"kl_anneal_type": kl} for kl in ("Cyclical", "Monotonic", "Without", "Never")]
    assert [p.scores for p in points] == [[30.0, 31.0], [28.0, 29.0], [29.5, 32.5], [33.0]]
    # Largest difference first; Cyclical and Without overlap (30-31 within 29.5-32.5).
    assert [(a.settings["kl_anneal_type"], b.settings["kl_anneal_type"]) for a, b in separated_pairs(points)] == [
        ("Without", "Monotonic"),
        ("Cyclical", "Monotonic"),
    ]
    lines = findings(points)
    assert lines[0] == (
        "KL annealing Without beats KL annealing Monotonic by 2.50 dB: every seed of it scores above every seed "
        "of the other (29.50 to 32.50 against 28.00 to 29.00 dB)."
    )
    assert lines[1].startswith("KL annealing Cyclical beats KL annealing Monotonic by 2.00 dB")
    assert lines[2] == "The other 1 of the 3 pairs of points overlap: their differences are within seed noise."
    assert lines[3] == "Not compared, fewer than 2 seeds done: KL annealing Never."


def test_points_within_noise_say_so():
    points = group_points([result("Cyclical", 0, 30.0), result("Cyclical", 1, 31.0), result("Without", 0, 30.5), result("Without", 1, 30.6)])
    assert findings(points) == ["No difference between the 2 points exceeds the spread of their seeds: within noise at this budget."]


def test_settings_that_cannot_change_a_point_are_left_out_of_its_name_and_dashed_in_the_table():
    def tf(tfr: float, d_step: float, coin: str, seed: int, psnr: float) -> RunResult:
        settings = {"tfr": tfr, "tfr_sde": 1, "tfr_d_step": d_step, "tfr_coin": coin, "num_epoch": 3, "seed": seed}
        return RunResult(f"{tfr}-{d_step}-{coin}-{seed}", settings, psnr, 18.0, DONE)

    runs = [tf(0.0, 0.1, "epoch", 0, 26.0), tf(0.0, 0.1, "epoch", 1, 26.5), tf(0.5, 0.5, "frame", 0, 24.0), tf(0.5, 0.5, "frame", 1, 24.5)]
    runs += [tf(1.0, 1.0, "epoch", 0, 22.0), tf(1.0, 1.0, "epoch", 1, 23.0)]
    points = group_points(runs)
    assert [p.label for p in points] == ["tfr 0.0", "tfr 0.5, tfr_d_step 0.5, coin frame", "tfr 1.0, tfr_d_step 1.0"]
    table = comparison_markdown(runs)
    assert "| 0.0 | — | — | 2 of 2 | 26.25 |" in table and "| 1.0 | 1.0 | — | 2 of 2 | 22.50 |" in table and INERT_NOTE in table
    assert figure_labels([run.settings for run in runs], [run.name for run in runs])[:3] == [
        "tfr 0.0, seed 0",
        "tfr 0.0, seed 1",
        "tfr 0.5, tfr_d_step 0.5, coin frame, seed 0",
    ]


def test_status_comes_from_the_final_evaluation_or_the_exit_status_training_wrote(tmp_path):
    assert run_status(tmp_path, evaluated=True) == DONE
    assert run_status(tmp_path, evaluated=False) == UNFINISHED  # running, or killed before writing one
    for written, status in [("1\n", "failed (exit 1)"), ("75\n", UNFINISHED), ("0\n", UNFINISHED)]:
        (tmp_path / "exit_status").write_text(written)
        assert run_status(tmp_path, evaluated=False) == status


def log_run(folder: Path, kl: str, seed: int, final_psnr: float | None) -> None:
    """A run's events as training writes them: its settings, a loss, and its final evaluation if it got that far."""
    writer = SummaryWriter(str(folder / "tb"))
    write_hparams(writer, {"kl_anneal_type": kl, "seed": seed})
    writer.add_scalar(TRAIN.loss, 0.5, 1)
    for epoch, (psnr, one_step) in enumerate([(20.0, 25.0), (21.0, 26.0), (20.5, 27.0)], start=1):
        writer.add_scalar(VAL.psnr, psnr, epoch)
        writer.add_scalar(VAL.one_step_psnr, one_step, epoch)
    if final_psnr is not None:
        writer.add_scalar(FINAL.psnr, final_psnr, 1)
        writer.add_scalar(FINAL.baseline_psnr, 18.0, 1)
    writer.close()


def test_summary_marks_a_run_still_training_and_still_compares_the_rest(tmp_path):
    log_root = tmp_path / "runs"
    log_run(log_root / "000_Cyclical_seed-0", "Cyclical", 0, 30.0)
    log_run(log_root / "001_Cyclical_seed-1", "Cyclical", 1, 31.0)
    log_run(log_root / "002_Without_seed-0", "Without", 0, None)
    runs = tb_summary.summarize(log_root, tmp_path / "summary")
    assert [run.status for run in runs] == [DONE, DONE, UNFINISHED]
    assert [(run.best_val_psnr, run.one_step_psnr) for run in runs] == [(21.0, 26.0)] * 3  # one step ahead of the best weights, epoch 2
    page = (tmp_path / "summary" / "summary.md").read_text()
    assert "| Cyclical | 2 of 2 | 30.50 | 30.00 to 31.00 | seed 0: 30.00; seed 1: 31.00 | 18.00 |" in page
    assert "| Without | 0 of 1 | — | — | seed 0: unfinished | — |" in page
    assert "- Not compared, fewer than 2 seeds done: KL annealing Without." in page


def test_figures_name_runs_by_what_sets_them_apart_and_colour_them_by_point():
    settings = [{"kl_anneal_type": kl, "seed": seed, "lr": 0.002} for kl in ("Cyclical", "Without") for seed in (0, 1)]
    assert figure_labels(settings, ["a", "b", "c", "d"]) == [
        "KL annealing Cyclical, seed 0",
        "KL annealing Cyclical, seed 1",
        "KL annealing Without, seed 0",
        "KL annealing Without, seed 1",
    ]
    styles = figure_styles(settings)
    assert [s["color"] for s in styles] == ["C0", "C0", "C1", "C1"]
    assert [s["linestyle"] for s in styles] == ["-", "--", "-", "--"]
    assert figure_labels([{"lr": 0.002}], ["only"]) == ["only"]
