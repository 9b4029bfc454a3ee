"""The course's way of training and generating, written out as the benchmark's baseline: frame by
frame in a plain loop, and a dataset that decodes its PNGs on every access."""

from __future__ import annotations


def plain_step(model, optimizer, frames, labels, teacher_forcing: bool, beta: float, reencode: bool) -> float:
    """One training step the way the course writes it: frame by frame, the loss summed, one backward.

    With `reencode` the previous frame is encoded again at every step, as the course's code does;
    without it each true frame is encoded once, the same computation as cvae_dist's rollout.
    """
    import torch

    from cvae_dist.loss import cvae_loss
    from cvae_dist.rollout import reparameterize

    preds, mus, logvars = [], [], []
    prev_frame, prev_feature = frames[:, 0], None if reencode else model.encode_frames(frames[:, 0])
    for t in range(1, frames.shape[1]):
        label_feature = model.encode_labels(labels[:, t])
        frame_feature = model.encode_frames(frames[:, t])
        mu, logvar = model.posterior(frame_feature, label_feature)
        z = reparameterize(mu, logvar, torch.randn_like(mu))
        source = frames[:, t - 1] if teacher_forcing else prev_frame
        if reencode or (not teacher_forcing and t > 1):
            prev_feature = model.encode_frames(source)
        prev_frame = model.decode(prev_feature, label_feature, z)
        prev_feature = frame_feature
        preds.append(prev_frame), mus.append(mu), logvars.append(logvar)
    terms = cvae_loss(torch.stack(preds, 1), frames[:, 1:], torch.stack(mus, 1), torch.stack(logvars, 1), beta)
    optimizer.zero_grad()
    terms.total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return terms.total.item()  # the course logs every step's loss


def plain_generate(model, first_frame, labels):
    """The course's test loop: one sequence at a time, one frame at a time, each label encoded as it comes."""
    import torch

    frames, prev = [first_frame], first_frame
    for t in range(1, labels.shape[0]):
        z = torch.randn((1, model.config.N_dim, *first_frame.shape[-2:]), device=first_frame.device)
        prev = model.decode(model.encode_frames(prev), model.encode_labels(labels[t : t + 1]), z)
        frames.append(prev)
    return torch.cat(frames)


class PngWindows:
    """Training windows decoded from their PNGs on every access, as the course's dataset does."""

    def __init__(self, images, labels, window: int, height: int, width: int):
        self.images, self.labels, self.window, self.size = images, labels, window, (height, width)

    def __len__(self) -> int:
        return len(self.images) // self.window

    def __getitem__(self, index: int):
        import numpy as np
        import torch

        from cvae_dist.data.images import read_rgb

        span = range(index * self.window, (index + 1) * self.window)
        frames = np.stack([read_rgb(self.images[i], *self.size) for i in span])
        labels = np.stack([read_rgb(self.labels[i], *self.size) for i in span])
        return torch.from_numpy(frames), torch.from_numpy(labels)
