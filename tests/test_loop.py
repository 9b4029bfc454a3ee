"""The training loop in this process, on a few tiny frames held in memory: each test takes seconds."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import signal

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cvae_dist import checkpoint as ckpt
from cvae_dist.tracking import BatchScalars
from cvae_dist.training import Loop, Preempted
from cvae_dist.training.ema import UPDATES
from cvae_dist.training.preemption import StopSignal
from cvae_dist.training.profiling import TABLE, TRACE
from cvae_dist.training.validation import Validation, validate
from support import SIDE, STEPS_PER_EPOCH, VAL_FRAMES, make_loop


def weights(loop: Loop) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in loop.accelerator.unwrap_model(loop.model).state_dict().items()}


def test_a_step_reports_finite_scalars_and_steps_lower_the_loss_on_a_fixed_batch(tmp_path):
    loop = make_loop(tmp_path)
    frames, labels, windows = next(iter(loop.parts.loader))
    reports = [loop.train_batch(frames, labels, windows) for _ in range(8)]
    first = reports[0]
    assert isinstance(first, BatchScalars)
    assert all(value.ndim == 0 and math.isfinite(value) for report in reports for value in report.values())
    assert float(first.teacher_forcing) == 1.0  # --tfr 1 to start with
    assert float(first.grad_norm) > 0
    assert float(reports[-1].loss) < 0.9 * float(first.loss)  # each report is the loss before its step


def test_validation_recalibrates_batchnorm_and_scores_the_rollout(tmp_path):
    loop = make_loop(tmp_path)
    model = loop.accelerator.unwrap_model(loop.model)
    means = [m.running_mean.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    result = validate(loop.parts)
    assert isinstance(result, Validation)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.psnr = 0.0
    after = [m.running_mean for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert any(not torch.equal(before, now) for before, now in zip(means, after))
    assert result.rollout.shape == (VAL_FRAMES, 3, SIDE, SIDE) and result.rollout.device.type == "cpu"
    scores = (result.psnr, result.baseline_psnr, result.one_step_psnr, result.copy_previous_psnr)
    assert all(math.isfinite(score) and score > 0 for score in scores)
    # The prior's noise is seeded: the same weights score the same.
    again = validate(loop.parts)
    assert (again.psnr, again.one_step_psnr) == (result.psnr, result.one_step_psnr)
    assert torch.equal(again.rollout, result.rollout)


def test_a_run_keeps_its_best_weights_and_a_second_start_finds_it_finished(tmp_path, capsys):
    first = make_loop(tmp_path)
    evaluation = first.fit()
    assert first.state.epoch == 2 and first.state.step == 2 * STEPS_PER_EPOCH and not first.state.validation_due
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4"]
    assert ckpt.verify(tmp_path / ckpt.BEST) is None and not (tmp_path / ckpt.PROFILE).exists()  # the profiler is off unless asked
    assert evaluation.average == pytest.approx(first.state.best_psnr, abs=1e-4)
    # What evaluation and best/ use is the module Accelerate trains, as its own unwrapping finds it.
    assert first.parts.network is first.accelerator.unwrap_model(first.model)
    # best/ holds the weights Accelerate checkpointed at the end of the best epoch, key for key and bit for bit.
    best = load_file(tmp_path / ckpt.BEST / ckpt.WEIGHTS)
    saved = load_file(tmp_path / "checkpoints" / f"checkpoint-{first.state.best_epoch * STEPS_PER_EPOCH}" / ckpt.WEIGHTS)
    assert best.keys() == saved.keys() and all(torch.equal(best[k], saved[k]) for k in best)
    output = capsys.readouterr().out
    assert "epoch 1: validation PSNR" in output and "epoch 2: validation PSNR" in output

    again = make_loop(tmp_path)
    assert again.fit().average == evaluation.average
    assert again.state == first.state
    assert "all 2 epochs were already trained" in capsys.readouterr().out


def test_windows_on_the_device_give_the_loaders_batches_and_weights_bit_for_bit(tmp_path, capsys):
    loaded, resident = make_loop(tmp_path / "loaded", "--data_on_device", "off"), make_loop(tmp_path / "resident", "--data_on_device", "on")
    assert (loaded.parts.data_on_device, resident.parts.data_on_device) == (False, True)
    for epoch in range(2):
        loaded.parts.loader.set_epoch(epoch)
        resident.parts.loader.set_epoch(epoch)
        batches = list(zip(loaded.parts.loader, resident.parts.loader, strict=True))
        assert len(batches) == STEPS_PER_EPOCH
        for (frames, labels, windows), (frames_there, labels_there, windows_there) in batches:
            assert windows == windows_there
            assert frames_there.dtype == torch.uint8 and torch.equal(frames, frames_there) and torch.equal(labels, labels_there)
    capsys.readouterr()
    loaded.fit()
    assert "training windows on the device" not in capsys.readouterr().out
    resident.fit()
    assert "training windows on the device)" in capsys.readouterr().out
    assert resident.state == loaded.state
    expected, actual = weights(loaded), weights(resident)
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_auto_keeps_the_windows_on_the_host_of_a_cpu_run(tmp_path):
    assert not make_loop(tmp_path).parts.data_on_device


@pytest.mark.parametrize("flags", [[], ["--use_ema"], ["--data_on_device", "on"]], ids=["plain", "ema", "data-on-device"])
def test_a_preempted_run_resumed_ends_with_the_weights_of_an_uninterrupted_one(flags, tmp_path):
    reference = make_loop(tmp_path / "reference", *flags)
    reference.fit()
    with StopSignal() as stop:
        loop = make_loop(tmp_path / "run", *flags, stop=stop)
        with stop.deferred():
            signal.raise_signal(signal.SIGTERM)  # flagged; the loop stops at the next step boundary
        with pytest.raises(Preempted) as preempted:
            loop.fit()
    assert preempted.value.checkpoint == ckpt.checkpoint_dir(tmp_path / "run", 1)
    resumed = make_loop(tmp_path / "run", *flags)
    resumed.fit()
    assert resumed.state == reference.state
    expected, actual = weights(reference), weights(resumed)
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    if "--use_ema" in flags:  # the average goes on from the checkpoint's with the same bits
        assert resumed.average.updates == reference.average.updates == 2 * STEPS_PER_EPOCH
        expected, actual = reference.average.module.state_dict(), resumed.average.module.state_dict()
        assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_a_stop_during_validation_checkpoints_with_it_due_and_the_resumed_run_validates_first(tmp_path, capsys):
    with StopSignal() as stop:
        loop = make_loop(tmp_path, stop=stop)
        loop.folder.start()
        loop.state.validation_due = True  # as after an epoch whose validation is due
        with stop.deferred():
            signal.raise_signal(signal.SIGTERM)
            with pytest.raises(Preempted) as preempted:
                loop.validate()  # stops after its first frame
        loop.folder.release()
    saved = torch.load(preempted.value.checkpoint / "custom_checkpoint_0.pkl", weights_only=True)
    assert saved["validation_due"] and not (tmp_path / ckpt.BEST).exists()
    capsys.readouterr()

    resumed = make_loop(tmp_path)
    resumed.fit()
    output = capsys.readouterr().out
    assert output.index("epoch 0: validation PSNR") < output.index("epoch 1: validation PSNR")
    assert not resumed.state.validation_due


def test_profile_steps_write_a_trace_and_the_top_operators_after_the_wait(tmp_path, capsys):
    make_loop(tmp_path, "--profile_steps", "2", "--profile_wait", "1").fit()
    with gzip.open(tmp_path / ckpt.PROFILE / TRACE, "rt") as handle:
        events = json.load(handle)["traceEvents"]
    # Two recorded steps: the profiler marks each; the wait and warm-up steps are not in the trace.
    assert sorted({e["name"] for e in events if e["name"].startswith("ProfilerStep#")}) == ["ProfilerStep#2", "ProfilerStep#3"]
    assert any(e["name"] == "aten::conv2d" for e in events)
    table = (tmp_path / ckpt.PROFILE / TABLE).read_text()
    assert "Self CPU" in table and "aten::" in table
    printed = capsys.readouterr().out
    assert f"trace {tmp_path / ckpt.PROFILE / TRACE}" in printed and table.splitlines()[1] in printed


def test_a_run_shorter_than_the_profilers_wait_says_so_and_writes_nothing(tmp_path, capsys):
    make_loop(tmp_path, "--profile_steps", "2", "--profile_wait", "10").fit()
    assert not (tmp_path / ckpt.PROFILE).exists()
    assert "before profiling began (--profile_wait 10)" in capsys.readouterr().out


def test_the_weight_average_warms_up_its_decay_and_moves_by_one_minus_it(tmp_path):
    loop = make_loop(tmp_path, "--use_ema", "--ema_decay", "0.9", "--ema_warmup_power", "0.75")
    average, model = loop.average, loop.accelerator.unwrap_model(loop.model)
    assert average.decay() == 0  # the first update copies the weights
    average.updates = 10
    assert average.decay() == pytest.approx(1 - 11**-0.75)
    average.updates = 1000
    assert average.decay() == 0.9  # capped at --ema_decay
    before = [p.clone() for p in average.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(model)
    assert average.updates == 1001
    for old, new, current in zip(before, average.module.parameters(), model.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * current)
    average.warmup_power = 0  # no warm-up: --ema_decay from the first update
    average.updates = 0
    assert average.decay() == 0.9


def test_with_use_ema_the_average_is_validated_kept_as_best_and_evaluated(tmp_path):
    loop = make_loop(tmp_path, "--use_ema")
    evaluation = loop.fit()
    assert loop.average.updates == loop.state.step == 2 * STEPS_PER_EPOCH
    best_checkpoint = ckpt.checkpoint_dir(tmp_path, loop.state.best_epoch * STEPS_PER_EPOCH)
    # best/ holds the average as validated (BatchNorm recalibrated for it), which the checkpoint of that epoch also carries.
    best, average = load_file(tmp_path / ckpt.BEST / ckpt.WEIGHTS), load_file(best_checkpoint / ckpt.EMA_WEIGHTS)
    raw = load_file(best_checkpoint / ckpt.WEIGHTS)
    assert best.keys() == average.keys() == raw.keys()
    assert all(torch.equal(best[key], average[key]) for key in best)
    assert not all(torch.equal(best[key], raw[key]) for key in best)
    with safe_open(str(best_checkpoint / ckpt.EMA_WEIGHTS), framework="pt") as file:
        assert int(file.metadata()[UPDATES]) == loop.state.best_epoch * STEPS_PER_EPOCH
    assert ckpt.verify(best_checkpoint) is None  # the manifest vouches for the average too
    # Evaluation, generation, export and --ckpt_path take a checkpoint's average.
    assert ckpt.find_weights(best_checkpoint).file == best_checkpoint / ckpt.EMA_WEIGHTS
    assert evaluation.average == pytest.approx(loop.state.best_psnr, abs=1e-4)


def test_a_run_resumed_with_use_ema_from_a_checkpoint_without_it_starts_the_average_from_its_weights(tmp_path, capsys):
    make_loop(tmp_path, "--num_epoch", "1").fit()
    resumed = make_loop(tmp_path, "--num_epoch", "2", "--use_ema", "--resume_from_checkpoint", "latest")
    resumed.fit()
    assert "has no ema.safetensors (written without --use_ema): the average starts from its weights" in capsys.readouterr().err
    assert resumed.average.updates == STEPS_PER_EPOCH


def test_a_resume_names_the_settings_that_differ_and_says_nothing_when_only_the_digest_does(tmp_path, capsys):
    make_loop(tmp_path).fit()
    # As a checkpoint written before a setting was added: its digest differs, none of its values do.
    manifest = ckpt.list_checkpoints(tmp_path)[-1] / ckpt.MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "config_digest": "0123456789abcdef"}))
    capsys.readouterr()
    make_loop(tmp_path, "--resume_from_checkpoint", "latest").fit()
    assert "settings that differ" not in capsys.readouterr().err
    make_loop(tmp_path, "--resume_from_checkpoint", "latest", "--lr", "0.002").fit()
    assert "note: resuming with settings that differ from the checkpoint's: lr 0.001 -> 0.002" in capsys.readouterr().err
