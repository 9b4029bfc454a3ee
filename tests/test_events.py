"""cvae_dist.events: which folders are runs, and what their event files hold, as tb_summary, the
report and benchmarks/gpu_check.py read them."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from cvae_dist import events
from cvae_dist.comparison import DONE, STATUS_FILE, UNFINISHED
from cvae_dist.errors import UserError
from cvae_dist.tracking import FINAL, TB_PROJECT, TRAIN, write_hparams


def log_run(folder: Path, losses: list[float], final_psnr: float | None = None, seed: int = 0) -> None:
    """Events as training writes them, under <run folder>/tb."""
    writer = SummaryWriter(str(folder / TB_PROJECT))
    write_hparams(writer, {"kl_anneal_type": "Cyclical", "seed": seed})
    for step, loss in enumerate(losses, start=1):
        writer.add_scalar(TRAIN.loss, loss, step)
    if final_psnr is not None:
        writer.add_scalar(FINAL.psnr, final_psnr, len(losses))
    writer.close()


def test_a_sweep_is_each_run_folder_named_by_its_path_with_the_failed_ones(tmp_path):
    log_run(tmp_path / "grid" / "a", [0.5, 0.4], final_psnr=25.0)
    log_run(tmp_path / "grid" / "b", [0.6], seed=1)
    (tmp_path / "grid" / "c").mkdir()
    (tmp_path / "grid" / "c" / STATUS_FILE).write_text("2\n")  # failed before it logged anything

    runs = events.read_runs(tmp_path)
    assert [run.name for run in runs] == ["grid/a", "grid/b", "grid/c"]
    assert [run.status for run in runs] == [DONE, UNFINISHED, "failed (exit 2)"]
    first = runs[0]
    assert first.folder == tmp_path / "grid" / "a"
    assert first.hparams == {"kl_anneal_type": "Cyclical", "seed": 0}
    steps, values = first.series(TRAIN.loss)
    assert steps.tolist() == [1, 2] and values.tolist() == pytest.approx([0.5, 0.4])
    assert first.last(FINAL.psnr) == pytest.approx(25.0) and first.last("val/psnr") is None
    assert first.wall_time_s >= 0
    assert runs[2].scalars == {} and runs[2].hparams == {}


def test_a_run_folder_given_itself_is_one_run_under_its_own_name(tmp_path):
    run = tmp_path / "teacher_forced"
    log_run(run, [0.5])
    (run / STATUS_FILE).write_text("0\n")
    assert [(r.name, r.folder) for r in events.read_runs(run)] == [("teacher_forced", run)]


def test_a_run_resumed_into_the_same_folder_is_read_whole(tmp_path):
    log_run(tmp_path, [0.5, 0.4])
    writer = SummaryWriter(str(tmp_path / TB_PROJECT))  # the resumed process writes a second event file
    writer.add_scalar(TRAIN.loss, 0.3, 3)
    writer.close()
    assert events.read_run(tmp_path).series(TRAIN.loss)[0].tolist() == [1, 2, 3]


def test_a_run_that_logged_nothing_yet_has_no_scalars(tmp_path):
    run = events.read_run(tmp_path / "not-started")
    assert run.scalars == {} and run.last(TRAIN.loss) is None and len(run.series(TRAIN.loss)[0]) == 0


@pytest.mark.parametrize(("make", "message"), [(lambda p: None, "no such folder"), (Path.mkdir, "no TensorBoard event files under it")])
def test_a_folder_without_runs_is_named(tmp_path, make, message):
    make(tmp_path / "runs")
    with pytest.raises(UserError, match=f"{tmp_path / 'runs'}: {message}"):
        events.read_runs(tmp_path / "runs")


def test_a_follower_reads_a_scalar_as_a_running_training_appends_it(tmp_path):
    follower = events.ScalarFollower(tmp_path, TRAIN.loss)
    assert follower.read() == {}  # no event folder yet
    writer = SummaryWriter(str(tmp_path / TB_PROJECT))
    writer.add_scalar(TRAIN.loss, 0.5, 1)
    writer.flush()
    assert follower.read() == {1: 0.5}
    writer.add_scalar(TRAIN.loss, 0.25, 2)
    writer.add_scalar(TRAIN.loss, 0.125, 1)  # a resumed run logging a step again: the latest write counts
    writer.close()
    assert follower.read() == {1: 0.125, 2: 0.25}
