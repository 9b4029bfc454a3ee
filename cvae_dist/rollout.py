"""Rollouts: how the networks are composed over the frames of a video.

Shapes: frames and labels are (B, T, 3, H, W) in [0, 1]; latents are (B, T-1, N, H, W), one per
predicted frame t = 1..T-1. Frame 0 is always given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.utils.checkpoint
from torch import nn

# Inference encodes the pose labels of a long video this many frames at a time, bounding memory.
LABEL_CHUNK = 256


@dataclass
class RolloutOutput:
    pred: torch.Tensor
    """Predicted frames 1..T-1, (B, T-1, 3, H, W)."""
    mu: torch.Tensor
    """Posterior means, (B, T-1, N, H, W)."""
    logvar: torch.Tensor
    """Posterior log-variances, (B, T-1, N, H, W)."""


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I) given, so that gradients flow to mu and logvar."""
    return mu + noise * torch.exp(0.5 * logvar)


def latent_noise(seed: int, epoch: int, windows: list[int], frames: torch.Tensor, channels: int) -> torch.Tensor:
    """eps of the reparameterization for a batch of training `windows` of `frames` (B, T, 3, H, W):
    (B, T-1, channels, H, W), drawn per window from (seed, epoch, window index).

    Keying the noise on the window rather than on a global stream makes a run independent of how
    its batches are split across processes or accumulation steps, and of resuming.
    """
    batch, steps, _, height, width = frames.shape
    noise = torch.empty((batch, steps - 1, channels, height, width), device=frames.device)
    generator = torch.Generator(device=frames.device)
    for row, window in enumerate(windows):
        generator.manual_seed((seed << 40) ^ (epoch << 24) ^ window)
        noise[row].normal_(generator=generator)
    return noise


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(0, 1)


def _unflat(x: torch.Tensor, batch: int) -> torch.Tensor:
    return x.unflatten(0, (batch, -1))


def _stack(outputs: list, dim: int = 1):
    """Stack per-frame outputs, each a tensor or a tuple of tensors, along the time dimension."""
    if isinstance(outputs[0], tuple):
        return tuple(torch.stack(parts, dim=dim) for parts in zip(*outputs))
    return torch.stack(outputs, dim=dim)


def _all_frames(fn, *inputs: torch.Tensor):
    """`fn` on every frame of every window in one batch: (B, T, ...) inputs -> (B, T, ...) outputs."""
    batch = inputs[0].shape[0]
    out = fn(*(_flat(x) for x in inputs))
    return tuple(_unflat(o, batch) for o in out) if isinstance(out, tuple) else _unflat(out, batch)


def _recomputed(fn, *inputs):
    # The rollout draws no random numbers inside `fn` (eps is given), so there is no RNG state to
    # stash and restore around each recomputation.
    return torch.utils.checkpoint.checkpoint(fn, *inputs, use_reentrant=False, preserve_rng_state=False)


def _frame_by_frame(fn, *inputs: torch.Tensor):
    """`fn` one frame at a time, each frame's activations recomputed in the backward pass rather than kept."""
    return _stack([_recomputed(fn, *(x[:, t] for x in inputs)) for t in range(inputs[0].shape[1])])


def training_rollout(
    model,
    frames: torch.Tensor,
    labels: torch.Tensor,
    noise: torch.Tensor,
    teacher_forcing: bool | torch.Tensor,
    recompute: bool = False,
) -> RolloutOutput:
    """Predict frames 1..T-1 of a training window, each z drawn from the posterior q(z_t | x_t, P_t).

    The posterior only needs true frames, so it is computed for all frames in one batch. With
    teacher forcing every decoder input is a true frame too, so the whole window is decoded in
    one batch; without it, each prediction feeds the next step, so decoding steps through time.
    `teacher_forcing` may also be a (B, T-1) bool mask, scheduled sampling per frame (Bengio et
    al. 2015): the step that predicts frame t+1 is fed the true frame t where mask[:, t] is set
    and the previous prediction elsewhere (frame 0 is always given); decoding then steps through
    time. `noise` is the eps of the reparameterization, (B, T-1, N, H, W), drawn by the caller so
    that every path sees the same randomness.

    `recompute` (activation checkpointing) keeps only each frame's inputs and outputs for the backward pass and recomputes
    the layers in between, one frame at a time: activation memory then grows with the window by
    a few feature maps per frame instead of every layer's, for about one more forward pass of
    compute. The pose labels are still encoded in one batch and not recomputed, so that batch
    normalisation sees the same batch (and updates its running statistics once) either way.
    """
    run, call = (_frame_by_frame if recompute else _all_frames), model.training_call
    frame_features = run(call("encode_frames"), frames)
    label_features = _all_frames(call("encode_labels"), labels[:, 1:])
    mu, logvar = run(call("posterior"), frame_features[:, 1:], label_features)
    z = reparameterize(mu, logvar, noise)
    if teacher_forcing is True:
        return RolloutOutput(pred=run(call("decode"), frame_features[:, :-1], label_features, z), mu=mu, logvar=logvar)
    forced = (frame_features[:, :-1], teacher_forcing) if isinstance(teacher_forcing, torch.Tensor) else None
    pred = _autoregress(model, frame_features[:, 0], label_features, z, recompute, forced)
    return RolloutOutput(pred=pred, mu=mu, logvar=logvar)


def _autoregress(
    model,
    first_feature: torch.Tensor,
    label_features: torch.Tensor,
    z: torch.Tensor,
    recompute: bool = False,
    forced: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Decode step by step, encoding each predicted frame as the next step's input; `forced`
    (true frames' features and a (B, T-1) mask) swaps in true frames where the mask is set."""
    call = _recomputed if recompute else (lambda fn, *args: fn(*args))
    step, decode = model.training_call("decode_and_encode"), model.training_call("decode")
    # A dense copy of the window's first features, laid out as the step's own output: a compiled
    # step would otherwise be compiled a second time, for the strides of a slice.
    prev_feature, predictions, steps = first_feature.clone(), [], z.shape[1]
    for t in range(steps):
        if t + 1 < steps:
            frame, prev_feature = call(step, prev_feature, label_features[:, t], z[:, t])
            if forced is not None:
                true_features, mask = forced
                prev_feature = torch.where(mask[:, t + 1, None, None, None], true_features[:, t + 1], prev_feature)
        else:
            frame = call(decode, prev_feature, label_features[:, t], z[:, t])
        predictions.append(frame)
    return torch.stack(predictions, dim=1)


def _latents(shape: tuple[int, ...], z: Literal["prior", "mean"], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """z of the given shape: drawn from the prior N(0, I), or its mean 0."""
    if z == "mean":
        return like.new_zeros(shape)
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device).to(like)


@torch.no_grad()
def generate(
    model,
    first_frame: torch.Tensor,
    labels: torch.Tensor,
    z: Literal["prior", "mean"] = "prior",
    generator: torch.Generator | None = None,
    on_frame: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Roll a video out from its first frame and its pose labels, as at test time; `on_frame` is called after each frame.

    first_frame: (B, 3, H, W); labels: (B, T, 3, H, W), label 0 belonging to the given frame.
    Each z is drawn from the prior N(0, I) ('prior') or set to its mean, 0 ('mean').
    Returns (B, T, 3, H, W) with the given frame first.
    """
    batch, steps = labels.shape[:2]
    height, width = first_frame.shape[-2:]
    label_features = torch.cat([_unflat(model.encode_labels(_flat(chunk)), batch) for chunk in labels[:, 1:].split(LABEL_CHUNK, dim=1)], dim=1)
    latent_shape = (batch, model.config.N_dim, height, width)
    frames, prev = [first_frame], first_frame
    for t in range(steps - 1):
        latent = _latents(latent_shape, z, first_frame, generator)
        prev = model.decode(model.encode_frames(prev), label_features[:, t], latent)
        frames.append(prev)
        if on_frame is not None:
            on_frame()
    return torch.stack(frames, dim=1)


@torch.no_grad()
def one_step(
    model,
    frames: torch.Tensor,
    labels: torch.Tensor,
    z: Literal["prior", "mean"] = "prior",
    generator: torch.Generator | None = None,
    on_frame: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Predict every frame t = 1..T-1 from the true frame t-1 and pose t: one step ahead, no drift;
    `on_frame` is called after each batch of frames.

    A diagnostic beside the rollout: a model that uses the previous frame beats copying it here.
    frames, labels: (B, T, 3, H, W). Returns (B, T, 3, H, W) with the given frame 0 first. The
    frames are decoded in batches of about `LABEL_CHUNK` frames, bounding memory.
    """
    batch, steps = frames.shape[:2]
    height, width = frames.shape[-2:]

    def predict(previous, label, latent):
        return model.decode(model.encode_frames(previous), model.encode_labels(label), latent)

    chunk = max(1, LABEL_CHUNK // batch)
    predictions = [frames[:, :1]]
    for start in range(1, steps, chunk):
        stop = min(start + chunk, steps)
        latent = _latents((batch, stop - start, model.config.N_dim, height, width), z, frames, generator)
        predictions.append(_all_frames(predict, frames[:, start - 1 : stop - 1], labels[:, start:stop], latent))
        if on_frame is not None:
            on_frame()
    return torch.cat(predictions, dim=1)


@torch.no_grad()
def recalibrate_batchnorm(model, label_windows: Iterable[torch.Tensor]) -> int:
    """Re-estimate the BatchNorm statistics of the pose-label encoder on the labels of training windows.

    Training normalises each batch of pose features with that batch's own statistics, while the
    running averages trail convolution weights that keep changing; a 630-frame rollout normalised
    with those averages drifts from what training saw. Averaging the statistics of many windows with
    the current weights (momentum None: a plain cumulative mean) makes inference normalise as
    training did: "precise BatchNorm" (Wu & Johnson, 2021). The course's network has its only
    BatchNorm in the label encoder, which sees nothing but the labels, so encoding the labels of a
    batch of windows (labels 1..T-1, as a training rollout does) gives exactly the statistics that
    rolling the windows out would, at a fraction of the cost. Frozen BatchNorms keep their
    statistics. Returns the layers updated.
    """
    was_training = model.training
    model.train()
    layers = [m for m in model.label_transformation.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    try:
        if layers:
            for labels in label_windows:
                _all_frames(model.encode_labels, labels[:, 1:])
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return len(layers)
