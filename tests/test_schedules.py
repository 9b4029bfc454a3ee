"""KL annealing and teacher forcing, against hand-computed values and Fu et al.'s own code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvae_dist.schedules import KLAnnealer, cyclical_beta, inert_settings, teacher_forcing_coin, teacher_forcing_ratio


def frange_cycle_linear(n_iter, start=0.0, stop=1.0, n_cycle=4, ratio=0.5):
    """Fu et al. (2019), github.com/haofuml/cyclical_annealing, verbatim."""
    L = np.ones(n_iter) * stop
    period = n_iter / n_cycle
    step = (stop - start) / (period * ratio)  # linear schedule
    for c in range(n_cycle):
        v, i = start, 0
        while v <= stop and (int(i + c * period) < n_iter):
            L[int(i + c * period)] = v
            v += step
            i += 1
    return L


def test_course_default_cyclical_by_hand():
    # 70 epochs, 10 cycles of 7 epochs, ratio 1: beta = (epoch mod 7) / 7.
    annealer = KLAnnealer("Cyclical", total=70, n_cycle=10, ratio=1.0)
    assert [annealer.beta(e) for e in range(9)] == pytest.approx([0, 1 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7, 6 / 7, 0, 1 / 7])
    assert annealer.beta(69) == pytest.approx(6 / 7)


def test_cyclical_with_ratio_by_hand():
    # 20 iterations, 2 cycles of 10, rising over the first half: 0, .2, .4, .6, .8, then 1.
    annealer = KLAnnealer("Cyclical", total=20, n_cycle=2, ratio=0.5)
    expected = [0, 0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1, 1] * 2
    assert [annealer.beta(i) for i in range(20)] == pytest.approx(expected)


def test_monotonic_is_one_cycle_and_without_is_one():
    monotonic = KLAnnealer("Monotonic", total=10, n_cycle=10, ratio=0.5)
    assert [monotonic.beta(i) for i in range(10)] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1, 1])
    without = KLAnnealer("Without", total=10, n_cycle=3, ratio=0.5)
    assert {without.beta(i) for i in range(10)} == {1.0}


@pytest.mark.parametrize("kind", ["Cyclical", "Monotonic", "Without"])
def test_stays_zero_says_whether_beta_is_zero_at_every_iteration(kind):
    for total in range(1, 25):
        for n_cycle in range(1, 13):
            for ratio in (0.25, 0.5, 1.0):
                annealer = KLAnnealer(kind, total=total, n_cycle=n_cycle, ratio=ratio)
                assert annealer.stays_zero == all(annealer.beta(i) == 0 for i in range(total)), (total, n_cycle, ratio)
    # The course's 10 cycles in a run of 10 epochs or fewer, or a one-epoch Monotonic run.
    assert KLAnnealer(kind, total=10, n_cycle=10, ratio=1.0).stays_zero == (kind == "Cyclical")
    assert KLAnnealer(kind, total=1, n_cycle=10, ratio=1.0).stays_zero == (kind != "Without")


@pytest.mark.parametrize("n_iter", [5, 7, 10, 70, 100, 333, 1000])
@pytest.mark.parametrize("n_cycle", [1, 2, 3, 4, 10])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.7, 1.0])
def test_cyclical_equals_fu_et_al(n_iter, n_cycle, ratio):
    reference = frange_cycle_linear(n_iter, n_cycle=n_cycle, ratio=ratio)
    ours = [cyclical_beta(i, n_iter, n_cycle, ratio) for i in range(n_iter)]
    np.testing.assert_allclose(ours, reference, atol=1e-9)


def test_course_teacher_forcing_schedule_by_hand():
    # tfr 1.0 for epochs 0-9, then 0.9 at epoch 10, 0.8 at 11, ..., 0 from epoch 19 on.
    ratios = [teacher_forcing_ratio(e, tfr=1.0, tfr_sde=10, tfr_d_step=0.1) for e in range(25)]
    assert ratios[:10] == [1.0] * 10
    assert ratios[10:20] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    assert ratios[20:] == [0.0] * 5
    assert teacher_forcing_ratio(3, tfr=0.5, tfr_sde=0, tfr_d_step=0.2) == pytest.approx(0.0)
    assert teacher_forcing_ratio(0, tfr=0.5, tfr_sde=0, tfr_d_step=0.2) == pytest.approx(0.3)


def test_coin_follows_the_ratio_and_is_reproducible():
    coins = [teacher_forcing_coin(0.3, seed=1, epoch=e) for e in range(2000)]
    assert 0.26 < np.mean(coins) < 0.34
    assert coins == [teacher_forcing_coin(0.3, seed=1, epoch=e) for e in range(2000)]
    assert coins != [teacher_forcing_coin(0.3, seed=2, epoch=e) for e in range(2000)]
    assert all(teacher_forcing_coin(1.0, 0, e, b) for e in range(50) for b in range(5))
    assert not any(teacher_forcing_coin(0.0, 0, e, b) for e in range(50) for b in range(5))
    per_batch = {teacher_forcing_coin(0.5, 0, 0, b) for b in range(50)}
    assert per_batch == {True, False}  # per-batch coins vary within an epoch


def test_per_frame_teacher_forcing_keys_each_window_and_meets_the_ratio():
    from cvae_dist.schedules import teacher_forcing_frames

    together = teacher_forcing_frames(0.3, seed=1, epoch=2, windows=[5, 9, 40], steps=15)
    apart = torch.cat([teacher_forcing_frames(0.3, 1, 2, [w], 15) for w in (5, 9, 40)])
    assert together.shape == (3, 15) and together.dtype == torch.bool
    assert torch.equal(together, apart)  # the same however windows are batched
    assert not torch.equal(together, teacher_forcing_frames(0.3, 1, 3, [5, 9, 40], 15))  # a new draw each epoch
    many = teacher_forcing_frames(0.3, 0, 0, list(range(400)), 15)
    assert abs(many.float().mean().item() - 0.3) < 0.02
    assert teacher_forcing_frames(1.0, 0, 0, [1], 15).all() and not teacher_forcing_frames(0.0, 0, 0, [1], 15).any()


TF_DEFAULTS = {"tfr_sde": 10, "tfr_d_step": 0.1, "tfr_coin": "epoch", "num_epoch": 3, "kl_anneal_type": "Cyclical"}


@pytest.mark.parametrize(
    ("changes", "inert"),
    [
        ({"tfr": 0.0}, {"tfr_sde", "tfr_d_step", "tfr_coin"}),  # never forced: 0, 0, 0
        ({"tfr": 1.0, "tfr_d_step": 0.0}, {"tfr_sde", "tfr_d_step", "tfr_coin"}),  # always forced
        ({"tfr": 1.0}, {"tfr_sde", "tfr_d_step", "tfr_coin"}),  # the decay starts at epoch 10 of 3
        ({"tfr": 1.0, "tfr_sde": 1, "tfr_d_step": 1.0}, {"tfr_coin"}),  # 1, 0, 0: every coin lands the same
        ({"tfr": 0.5, "tfr_sde": 1, "tfr_d_step": 0.5}, set()),  # 0.5, 0, 0: the coin matters
        ({"tfr": 0.5, "tfr_d_step": 0.0}, {"tfr_sde", "tfr_d_step"}),
        ({"tfr": 1.0, "num_epoch": 70}, set()),  # the course's schedule over the course's epochs
    ],
)
def test_teacher_forcing_settings_that_cannot_change_a_run(changes, inert):
    settings = {**TF_DEFAULTS, **changes}
    ratios = {teacher_forcing_ratio(e, settings["tfr"], settings["tfr_sde"], settings["tfr_d_step"]) for e in range(settings["num_epoch"])}
    assert inert_settings(settings) == inert, ratios


def test_kl_settings_that_cannot_change_a_run():
    assert inert_settings({"kl_anneal_type": "Without"}) == {"kl_anneal_unit", "kl_anneal_cycle", "kl_anneal_ratio"}
    assert inert_settings({"kl_anneal_type": "Monotonic"}) == {"kl_anneal_cycle"}
    assert inert_settings({"kl_anneal_type": "Cyclical", "tfr": 1.0}) == set()  # too little is known to rule anything out
