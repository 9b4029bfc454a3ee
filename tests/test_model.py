"""The network: the course's exact state dict, scalable widths, and the defect switches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cvae_dist.config import PRESETS, ModelConfig, resolve
from cvae_dist.model import CVAE

MANIFEST = Path(__file__).parent / "data" / "template_state_dict.json"


def test_lab_preset_matches_the_course_state_dict_key_for_key():
    expected = json.loads(MANIFEST.read_text())["state_dict"]
    state = CVAE(ModelConfig(**PRESETS["lab"])).state_dict()
    assert list(state) == list(expected)  # same names, in the course's order
    for key, shape in expected.items():
        assert list(state[key].shape) == shape, key
    assert len(state) == 209
    assert sum(t.numel() for k, t in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) == 1_585_620


def forward_flops(model: CVAE) -> int:
    """FLOPs to predict one 32x64 frame: encode previous and current frame, the label, posterior, decode."""
    frames, label = torch.rand(2, 3, 32, 64), torch.rand(1, 3, 32, 64)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        features = model.encode_frames(frames)
        label_feature = model.encode_labels(label)
        mu, _ = model.posterior(features[1:], label_feature)
        model.decode(features[:1], label_feature, mu)
    return counter.get_total_flops()


def test_tiny_preset_costs_at_least_ten_times_fewer_flops():
    lab, tiny = forward_flops(CVAE(ModelConfig(**PRESETS["lab"]))), forward_flops(CVAE(ModelConfig(**PRESETS["tiny"])))
    assert 7.0e9 < lab < 7.5e9  # the 7.2 GFLOP per frame the course's model is known for
    assert lab / tiny >= 10


def leaky_slopes(model: CVAE) -> dict[str, float]:
    return {name: m.negative_slope for name, m in model.named_modules() if isinstance(m, torch.nn.LeakyReLU)}


def test_course_leaky_relu_switch_reproduces_slope_one():
    fixed, course = leaky_slopes(CVAE(ModelConfig())), leaky_slopes(CVAE(ModelConfig(course_leaky_relu=True)))
    changed = {name for name in fixed if fixed[name] != course[name]}
    assert changed == {"label_transformation.3", "Gaussian_Predictor.5"}
    assert all(course[name] == 1.0 and fixed[name] == 0.01 for name in changed)


def test_output_activation_switch():
    torch.manual_seed(0)
    bounded = CVAE(ModelConfig(**PRESETS["tiny"])).eval()
    unbounded = CVAE(ModelConfig(**PRESETS["tiny"], output_activation="none")).eval()
    unbounded.load_state_dict(bounded.state_dict())
    features = bounded.encode_frames(torch.rand(4, 3, 32, 64)) * 50
    labels = bounded.encode_labels(torch.rand(4, 3, 32, 64))
    z = torch.randn(4, 4, 32, 64)
    raw = unbounded.decode(features, labels, z)
    squashed = bounded.decode(features, labels, z)
    assert torch.allclose(squashed, torch.sigmoid(raw))
    assert squashed.min() >= 0 and squashed.max() <= 1


def test_freeze_batchnorm_keeps_running_statistics_in_training():
    model = CVAE(ModelConfig(**PRESETS["tiny"], freeze_batchnorm=True)).train()
    norm = model.label_transformation[2]
    assert model.training and not norm.training
    before = norm.running_mean.clone()
    model.encode_labels(torch.rand(3, 3, 32, 64))
    assert torch.equal(norm.running_mean, before)


@pytest.mark.parametrize("dims", [dict(F_dim=20), dict(D_out_dim=30), dict(F_dim=16, L_dim=8, N_dim=6)])
def test_widths_that_the_architecture_cannot_divide_are_refused(dims):
    from cvae_dist.errors import UserError

    with pytest.raises(UserError):
        resolve({name: (value, "test") for name, value in {"preset": "tiny", **dims}.items()})


def test_zero_init_posterior_starts_at_the_prior():
    from cvae_dist.loss import kl_per_frame

    features, labels = torch.rand(2, 16, 32, 64), torch.rand(2, 8, 32, 64)
    zero = CVAE(ModelConfig(**PRESETS["tiny"]))
    mu, logvar = zero.posterior(features, labels)
    assert torch.equal(mu, torch.zeros_like(mu)) and torch.equal(logvar, torch.zeros_like(logvar))
    assert kl_per_frame(mu[None], logvar[None]).sum().item() == 0
    course = CVAE(ModelConfig(**PRESETS["tiny"], zero_init_posterior=False))
    mu, logvar = course.posterior(features, labels)
    assert kl_per_frame(mu[None], logvar[None]).sum().item() > 1
