"""The course's Trainer.py flags that choose a device or a mode: --device, --gpu, --test, --store_visualization."""

from __future__ import annotations

import imageio.v3 as iio
import pytest
import torch

from cvae_dist import evaluate
from cvae_dist.config import parse_args
from cvae_dist.errors import UserError
from cvae_dist.train import main
from cvae_dist.training.precision import check_course_device_flags
from support import TINY_RUN

VAL_FRAMES = 16  # TINY_RUN's --val_vi_len


def test_device_cuda_needs_a_gpu_and_gpu_must_count_the_processes(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as err:
        check_course_device_flags(parse_args(["--device", "cuda"]).train, processes=1)
    assert str(err.value) == "--device cuda: no CUDA GPU is visible here; use --device cpu, or leave --device out to use whatever device there is"
    with pytest.raises(UserError) as err:
        check_course_device_flags(parse_args(["--gpu", "2"]).train, processes=1)
    assert str(err.value) == (
        "--gpu 2: this run has 1 process(es); each process drives one GPU and the launcher starts them: "
        "`accelerate launch --num_processes N` trains on N GPUs, and CUDA_VISIBLE_DEVICES picks which"
    )
    for argv, processes in ((["--gpu", "2"], 2), (["--gpu", "1", "--device", "cpu"], 1), ([], 4)):
        check_course_device_flags(parse_args(argv).train, processes)


def test_test_evaluates_the_weights_instead_of_training(launch, tiny_run, dataset_root, tmp_path):
    save_root, scored = tmp_path / "tested", ["--DR", str(dataset_root), "--val_vi_len", str(VAL_FRAMES)]
    result = launch(["--test", "--ckpt_path", str(tiny_run), "--save_root", str(save_root), *scored], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"average PSNR over frames 1-{VAL_FRAMES - 1}" in result.stdout
    assert sorted(p.name for p in save_root.iterdir()) == ["eval"]  # nothing trained: no config, checkpoint or log
    # It is the evaluate command's evaluation, on the same weights with the same seed.
    assert evaluate.main(["--ckpt", str(tiny_run), "--out", str(tmp_path / "direct"), *scored]) == 0
    for name in ("psnr_per_frame.csv", "rollout.gif"):
        assert (save_root / "eval" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes()


@pytest.mark.parametrize("flag", ["--save_root", "--ckpt_path"])
def test_test_without_weights_names_the_flag_they_were_looked_for_under(flag, tmp_path, capsys):
    missing = tmp_path / "nothing"
    argv = ["--test", "--device", "cpu", "--save_root", str(missing)]
    if flag == "--ckpt_path":
        argv += ["--ckpt_path", str(missing)]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {flag} {missing}: no such file or folder\n"
    assert not missing.exists()


@pytest.mark.slow
def test_store_visualization_writes_each_validation_gif_on_the_device_asked_for(launch, dataset_root, tmp_path):
    save_root = tmp_path / "run"
    course_flags = ["--store_visualization", "--device", "cpu", "--gpu", "1"]
    result = launch(["--DR", str(dataset_root), "--save_root", str(save_root), *TINY_RUN, "--num_epoch", "1", *course_flags], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world size 1 (NO, cpu," in result.stdout
    assert sorted(p.name for p in (save_root / "eval").glob("*.gif")) == ["rollout-epoch-1.gif", "rollout.gif"]
    frames = iio.imread(save_root / "eval" / "rollout-epoch-1.gif", index=None)
    assert frames.shape[0] == VAL_FRAMES and frames.shape[1:3] == (2 * 32, 2 * (3 * 64 + 2))  # prediction | truth | pose, 2x
