import numpy as np
import pytest
import torch

from bassray.diffusion.schedule import alpha_sigma
from bassray.eval.conditioning import conditioning_losses


class ConditionBlind(torch.nn.Module):
    def forward(self, z, t, cond):
        return 0.5 * z


class CopiesX0FromCondition(torch.nn.Module):
    """Knows x0 = cond[:, :D] exactly, so it predicts the true v when given the true mix."""

    def forward(self, z, t, cond):
        a, s = alpha_sigma(t.reshape(-1, 1, 1))
        x0 = cond[:, : z.shape[1]]
        eps = (z - a * x0) / s.clamp(min=1e-4)
        return a * eps - s * x0


def test_a_model_blind_to_its_condition_scores_the_same_for_all_three():
    mix, target = torch.randn(6, 4, 8), torch.randn(6, 2, 8)
    losses = conditioning_losses(ConditionBlind(), mix, target, repeats=3)
    assert losses["v_loss_true_mix"] == losses["v_loss_null_mix"] == losses["v_loss_mismatched_mix"]


def test_a_model_that_uses_its_condition_scores_best_with_the_true_mix():
    target = torch.randn(6, 2, 8)
    mix = torch.cat([target, torch.randn(6, 2, 8)], dim=1)
    losses = conditioning_losses(CopiesX0FromCondition(), mix, target, repeats=3)
    assert losses["v_loss_true_mix"] < 1e-3
    assert losses["v_loss_null_mix"] > 0.1 and losses["v_loss_mismatched_mix"] > 0.1


def test_one_crop_cannot_be_mismatched():
    with pytest.raises(ValueError, match="two"):
        conditioning_losses(ConditionBlind(), torch.randn(1, 4, 8), torch.randn(1, 2, 8))


class ReadsX0OffCondition(torch.nn.Module):
    """v = -sigma * x0 with x0 read off the condition: its loss is bounded, lowest with the true mix."""

    def forward(self, z, t, cond):
        _, s = alpha_sigma(t.reshape(-1, 1, 1))
        return -s * cond[:, : z.shape[1]]


@pytest.mark.parametrize("sizes", [[4, 4, 4], [1, 5, 2, 3], [2, 2], [3, 1, 1, 1]])
def test_mismatched_order_pairs_every_crop_with_another_track(sizes):
    from bassray.eval.conditioning import mismatched_order
    groups = np.repeat(np.arange(len(sizes)), sizes)
    np.random.default_rng(0).shuffle(groups)
    perm = mismatched_order(groups)
    assert sorted(perm) == list(range(len(groups)))  # a permutation: every crop's mix used once
    assert (groups[perm] != groups).all()


def test_gaps_are_paired_and_measured_in_track_standard_errors():
    target = torch.randn(30, 2, 8, generator=torch.Generator().manual_seed(0))
    mix = torch.cat([target, torch.randn(30, 2, 8)], dim=1)
    groups = np.repeat(np.arange(10), 3)
    losses = conditioning_losses(ReadsX0OffCondition(), mix, target, repeats=8, groups=groups)
    assert losses["gap_null"] == pytest.approx(losses["v_loss_null_mix"] - losses["v_loss_true_mix"])
    assert losses["z_null"] > 3 and losses["z_mismatched"] > 3
    blind = conditioning_losses(ConditionBlind(), mix, target, repeats=2, groups=groups)
    assert blind["gap_null"] == 0.0 and blind["gap_mismatched"] == 0.0
    with pytest.raises(ValueError, match="one track per crop"):
        conditioning_losses(ConditionBlind(), mix, target, groups=groups[:5])


def test_by_time_breakdown_shows_the_condition_matters_more_at_high_noise():
    from bassray.eval.conditioning import BREAKDOWN_TIMES, conditioning_losses_by_time
    target = torch.randn(12, 2, 8, generator=torch.Generator().manual_seed(1))
    mix = torch.cat([target, torch.randn(12, 2, 8)], dim=1)
    groups = np.repeat(np.arange(4), 3)
    by_t = conditioning_losses_by_time(ReadsX0OffCondition(), mix, target, groups=groups)
    gaps = [by_t[f"t{t:.2f}/v_loss_null_mix"] - by_t[f"t{t:.2f}/v_loss_true_mix"] for t in BREAKDOWN_TIMES]
    # The gap is sigma_t^2 x0^2 plus a zero-mean cross term: near 0 at low noise, near var(x0) = 1 at high.
    assert gaps[-1] > 0.5 and gaps[-1] > gaps[0] + 0.5
    blind = conditioning_losses_by_time(ConditionBlind(), mix, target, groups=groups)
    for t in BREAKDOWN_TIMES:
        assert blind[f"t{t:.2f}/v_loss_true_mix"] == blind[f"t{t:.2f}/v_loss_null_mix"]


def test_fixed_time_must_lie_in_the_unit_interval():
    from bassray.diffusion.schedule import v_loss_per_example
    with pytest.raises(ValueError, match="t is a time"):
        v_loss_per_example(ConditionBlind(), torch.randn(2, 2, 8), torch.randn(2, 4, 8), t=1.5)
