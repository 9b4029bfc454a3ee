"""The rollouts against a plain frame-by-frame loop written the way the course's code is."""

from __future__ import annotations

import pytest
import torch

from cvae_dist.config import PRESETS, ModelConfig
from cvae_dist.loss import cvae_loss
from cvae_dist.model import CVAE
from cvae_dist.rollout import generate, reparameterize

B, T, H, W = 2, 6, 32, 64


def course_loop(model, frames, labels, noise, teacher_forcing):
    """One frame at a time: encode, posterior, reparameterize, decode, as students write it.

    `teacher_forcing` is a bool, or a (B, T-1) mask: the true frame t-1 is fed where mask[:, t-1] is set."""
    preds, mus, logvars = [], [], []
    prev = frames[:, 0]
    for t in range(1, frames.shape[1]):
        if isinstance(teacher_forcing, torch.Tensor):
            source = torch.where(teacher_forcing[:, t - 1, None, None, None], frames[:, t - 1], prev)
        else:
            source = frames[:, t - 1] if teacher_forcing else prev
        label_feature = model.encode_labels(labels[:, t])
        mu, logvar = model.posterior(model.encode_frames(frames[:, t]), label_feature)
        z = mu + noise[:, t - 1] * torch.exp(0.5 * logvar)
        prev = model.decode(model.encode_frames(source), label_feature, z)
        preds.append(prev), mus.append(mu), logvars.append(logvar)
    return torch.stack(preds, 1), torch.stack(mus, 1), torch.stack(logvars, 1)


def inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    frames = torch.rand(B, T, 3, H, W, generator=generator)
    labels = torch.rand(B, T, 3, H, W, generator=generator)
    noise = torch.randn(B, T - 1, PRESETS["tiny"]["N_dim"], H, W, generator=generator)
    return frames, labels, noise


# Scheduled sampling per frame: row 0 fed its true frames 2 and 4, row 1 frames 1 and 2 (frame 0 is always given).
PER_FRAME = torch.tensor([[True, False, True, False, True], [True, True, True, False, False]])


@pytest.mark.parametrize("teacher_forcing", [True, False, PER_FRAME], ids=["forced", "free", "per-frame"])
@pytest.mark.parametrize("mode", ["eval", "train-frozen-bn"])
def test_rollout_equals_the_frame_by_frame_loop(teacher_forcing, mode):
    torch.manual_seed(0)
    model = CVAE(ModelConfig(**PRESETS["tiny"], freeze_batchnorm=mode == "train-frozen-bn"))
    model.train(mode != "eval")
    frames, labels, noise = inputs()

    out = model(frames, labels, noise, teacher_forcing)
    loss = cvae_loss(out.pred, frames[:, 1:], out.mu, out.logvar, beta=0.5).total
    grads = torch.autograd.grad(loss, list(model.parameters()))

    pred, mu, logvar = course_loop(model, frames, labels, noise, teacher_forcing)
    reference_loss = cvae_loss(pred, frames[:, 1:], mu, logvar, beta=0.5).total
    reference_grads = torch.autograd.grad(reference_loss, list(model.parameters()))

    torch.testing.assert_close(out.pred, pred, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.mu, mu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logvar, logvar, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, reference_loss, atol=1e-5, rtol=1e-5)
    for grad, reference in zip(grads, reference_grads):
        torch.testing.assert_close(grad, reference, atol=1e-5, rtol=1e-4)


def test_teacher_forcing_changes_the_result():
    """The switch matters: predictions fed back differ from true frames fed in."""
    model = CVAE(ModelConfig(**PRESETS["tiny"])).eval()
    frames, labels, noise = inputs()
    forced, free = model(frames, labels, noise, True), model(frames, labels, noise, False)
    torch.testing.assert_close(forced.pred[:, 0], free.pred[:, 0])  # the first step always sees frame 0
    assert not torch.allclose(forced.pred[:, 1:], free.pred[:, 1:])


def test_per_frame_masks_of_all_or_nothing_are_teacher_forcing_and_autoregression():
    model = CVAE(ModelConfig(**PRESETS["tiny"])).eval()
    frames, labels, noise = inputs()
    everything, nothing = torch.ones(B, T - 1, dtype=torch.bool), torch.zeros(B, T - 1, dtype=torch.bool)
    torch.testing.assert_close(model(frames, labels, noise, everything).pred, model(frames, labels, noise, True).pred)
    torch.testing.assert_close(model(frames, labels, noise, nothing).pred, model(frames, labels, noise, False).pred)


def test_reparameterize_is_differentiable_and_scaled():
    mu = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, 2.0 * torch.log(torch.tensor(3.0)).item()], requires_grad=True)
    z = reparameterize(mu, logvar, torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(z, torch.tensor([1.5, 1.0]))
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(2))
    torch.testing.assert_close(logvar.grad, torch.tensor([0.25, 1.5]))


def generate_loop(model, first_frame, labels, latents):
    frames, prev = [first_frame], first_frame
    for t in range(1, labels.shape[1]):
        prev = model.decode(model.encode_frames(prev), model.encode_labels(labels[:, t]), latents[t - 1])
        frames.append(prev)
    return torch.stack(frames, 1)


def test_generate_matches_a_step_by_step_loop_with_prior_samples():
    torch.manual_seed(0)
    model = CVAE(ModelConfig(**PRESETS["tiny"])).eval()
    frames, labels, _ = inputs(1)
    video = generate(model, frames[:, 0], labels, z="prior", generator=torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)
    latents = [torch.randn(B, 4, H, W, generator=replay) for _ in range(T - 1)]
    with torch.no_grad():
        reference = generate_loop(model, frames[:, 0], labels, latents)
    assert video.shape == (B, T, 3, H, W)
    torch.testing.assert_close(video, reference, atol=1e-5, rtol=1e-5)
    mean = generate(model, frames[:, 0], labels, z="mean")
    with torch.no_grad():
        torch.testing.assert_close(mean, generate_loop(model, frames[:, 0], labels, [torch.zeros(B, 4, H, W)] * (T - 1)), atol=1e-5, rtol=1e-5)


def _batchnorms(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_recalibrated_batchnorm_normalises_inference_as_training_did():
    from cvae_dist.rollout import recalibrate_batchnorm, training_rollout

    torch.manual_seed(0)
    model = CVAE(ModelConfig(**PRESETS["tiny"]))
    frames, labels = torch.rand(B, 2, 3, H, W), torch.rand(B, 2, 3, H, W)
    zeros = torch.zeros(B, 1, model.config.N_dim, H, W)
    with torch.no_grad():
        as_trained = training_rollout(model.train(), frames, labels, zeros, teacher_forcing=False).pred
        for layer in _batchnorms(model):  # stale statistics, as after many optimizer steps
            layer.running_mean.fill_(1.0)
            layer.running_var.fill_(9.0)
        stale = training_rollout(model.eval(), frames, labels, zeros, teacher_forcing=False).pred
        assert (stale - as_trained).abs().max() > 2e-3
        assert recalibrate_batchnorm(model, [labels]) == len(_batchnorms(model))
        assert not model.training
        assert all(layer.momentum == 0.1 for layer in _batchnorms(model))
        recalibrated = training_rollout(model, frames, labels, zeros, teacher_forcing=False).pred
        # The pose encoder's BatchNorm saw one batch: the pose images after its padded convolution.
        normalised = torch.nn.Sequential(*list(model.label_transformation)[:2])(labels[:, 1:].flatten(0, 1))
    norm = model.label_transformation[2]
    torch.testing.assert_close(norm.running_mean, normalised.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(norm.running_var, normalised.var(dim=(0, 2, 3), unbiased=True))
    # So inference now normalises as training did, up to the unbiased variance's n / (n - 1).
    torch.testing.assert_close(recalibrated, as_trained, atol=2e-4, rtol=0)


def test_recalibrating_on_labels_gives_the_statistics_of_autoregressive_rollouts():
    """Encoding the labels only sees what the pose encoder's BatchNorm saw in rollouts of the whole windows."""
    from cvae_dist.rollout import recalibrate_batchnorm, training_rollout

    torch.manual_seed(0)
    model = CVAE(ModelConfig(**PRESETS["tiny"]))
    windows = [(torch.rand(B, 4, 3, H, W), torch.rand(B, 4, 3, H, W)) for _ in range(3)]
    layers = _batchnorms(model)
    for layer in layers:  # what the re-estimation did before: autoregressive rollouts, z = the posterior mean
        layer.reset_running_stats()
        layer.momentum = None
    with torch.no_grad():
        for frames, labels in windows:
            training_rollout(model.train(), frames, labels, torch.zeros(B, 3, model.config.N_dim, H, W), teacher_forcing=False)
    rolled_out = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in layers]
    for layer in layers:
        layer.momentum = 0.1
        layer.running_mean.fill_(1.0)

    assert recalibrate_batchnorm(model.eval(), [labels for _, labels in windows]) == len(layers) == 1
    for layer, expected in zip(layers, rolled_out):
        for key, tensor in layer.state_dict().items():
            assert torch.equal(tensor, expected[key]), key
    assert int(layers[0].num_batches_tracked) == len(windows)


def test_recalibration_leaves_frozen_batchnorm_alone():
    from cvae_dist.rollout import recalibrate_batchnorm

    model = CVAE(ModelConfig(**PRESETS["tiny"], freeze_batchnorm=True))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recalibrate_batchnorm(model, [torch.rand(B, 3, 3, H, W)]) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("teacher_forcing", [True, False])
def test_activation_checkpointing_changes_memory_not_results(teacher_forcing):
    """Recomputing each frame in the backward pass gives the same outputs and gradients, BN statistics included."""
    torch.manual_seed(0)
    model = CVAE(ModelConfig(**PRESETS["tiny"])).train()
    frames, labels, noise = inputs(2)
    results = []
    for checkpoint in (False, True):
        stats = {k: v.clone() for k, v in model.state_dict().items()}
        out = model(frames, labels, noise, teacher_forcing, recompute=checkpoint)
        loss = cvae_loss(out.pred, frames[:, 1:], out.mu, out.logvar, beta=0.5).total
        results.append((out.pred, loss, torch.autograd.grad(loss, list(model.parameters())), {k: v.clone() for k, v in model.state_dict().items()}))
        model.load_state_dict(stats)
    (pred, loss, grads, state), (pred_ck, loss_ck, grads_ck, state_ck) = results
    torch.testing.assert_close(pred_ck, pred)
    torch.testing.assert_close(loss_ck, loss)
    for grad, reference in zip(grads_ck, grads):
        torch.testing.assert_close(grad, reference, atol=1e-6, rtol=1e-5)
    for key in state:
        torch.testing.assert_close(state_ck[key], state[key])  # running statistics updated once, not once per recompute
