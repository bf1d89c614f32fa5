import pytest
import torch

from bassray.config import load_config
from bassray.diffusion.sampler import (GuidedDenoiser, cfg_combine, cfg_rescale, ddim_sample, dpmpp_2m_sample,
                                       generate_latents, group_weights, pad_to_multiple, style_ground)

SAMPLERS = pytest.mark.parametrize("solve", [ddim_sample, dpmpp_2m_sample], ids=["ddim", "dpmpp-2m"])
from bassray.diffusion.schedule import alpha_sigma
from bassray.models.unet1d import UNet1d


@SAMPLERS
def test_sampler_with_an_oracle_recovers_x0(solve):
    x0 = torch.randn(2, 4, 10)

    def oracle(z, t, cond):  # the true v for a known x0
        a, s = alpha_sigma(t.reshape(-1, 1, 1))
        eps = (z - a * x0[: z.shape[0]]) / s
        return a * eps - s * x0[: z.shape[0]]

    out = solve(oracle, torch.zeros(2, 3, 10), 4, steps=8, cfg_weight=torch.ones(2),
                rescale_phi=torch.zeros(2), seeds=[0, 1])
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


def test_cfg_with_weight_one_is_the_conditional_prediction():
    c, u = torch.randn(3, 5, 7), torch.randn(3, 5, 7)
    assert torch.equal(cfg_combine(c, u, torch.ones(3)), c)
    mixed = cfg_combine(c, u, torch.tensor([1.0, 0.0, 2.0]))
    assert torch.equal(mixed[0], c[0]) and torch.equal(mixed[1], u[1])
    torch.testing.assert_close(mixed[2], u[2] + 2 * (c[2] - u[2]))


def test_learnt_channels_guidance_is_capped_and_the_codes_keep_cfg_weight():
    def model(z, t, cond):  # v that differs between the conditional and null halves
        return z * 0.1 + cond[:, :1].mean(-1, keepdim=True)

    z, cond, t = torch.randn(2, 6, 8), torch.randn(2, 3, 8) + 1.0, torch.tensor(0.5)
    plain = GuidedDenoiser(model, cond, 6, torch.tensor([3.0, 2.0]), 0.0, None, None)
    same = GuidedDenoiser(model, cond, 6, torch.tensor([3.0, 2.0]), 0.0, None, None,
                          learnt_cfg_max=torch.tensor([3.0, 2.0]), learnt_channels=4)
    torch.testing.assert_close(same(z, t), plain(z, t))
    conditional = GuidedDenoiser(model, cond, 6, 1.0, 0.0, None, None)(z, t)
    split = GuidedDenoiser(model, cond, 6, torch.tensor([3.0, 2.0]), 0.0, None, None,
                           learnt_cfg_max=1.0, learnt_channels=4)(z, t)
    torch.testing.assert_close(split[:, :4], conditional[:, :4])    # learnt channels unguided
    torch.testing.assert_close(split[:, 4:], plain(z, t)[:, 4:])    # codes guided as before
    assert not torch.allclose(split[:, :4], plain(z, t)[:, :4])


def test_group_weights_and_their_bad_settings():
    w = group_weights(torch.tensor([3.0, 2.0]), None, 4, 6)
    assert w.shape == (2, 6, 1) and torch.equal(w[0, :, 0], torch.full((6,), 3.0))
    w = group_weights(torch.tensor([3.0, 2.0, 0.0, 1.0]), 1.5, 4, 6)
    assert torch.equal(w[1, :, 0], torch.tensor([1.5, 1.5, 1.5, 1.5, 2.0, 2.0]))
    assert torch.equal(w[2, :, 0], torch.zeros(6))          # unconditional: deaf to the mix everywhere
    assert torch.equal(w[3, :, 0], torch.ones(6))           # plain conditional: unchanged
    with pytest.raises(ValueError, match="learnt_channels"):
        group_weights(torch.tensor([3.0]), 1.5, 7, 6)
    with pytest.raises(ValueError, match="learnt_cfg_max"):
        load_config("tiny", overrides=["sampler.learnt_cfg_max=-1"])


def test_rescale_phi_zero_is_identity_and_one_matches_conditional_std():
    guided, cond = 3 * torch.randn(2, 8, 9) + 1, torch.randn(2, 8, 9)
    assert torch.equal(cfg_rescale(guided, cond, torch.zeros(2)), guided)
    full = cfg_rescale(guided, cond, torch.ones(2))
    torch.testing.assert_close(full.std(dim=1), cond.std(dim=1), atol=1e-5, rtol=1e-4)


def test_grounding_sets_the_time_mean_at_sigma_one_and_is_free_at_zero():
    x0, style = torch.randn(2, 4, 20), torch.randn(2, 4)
    torch.testing.assert_close(style_ground(x0, 1.0, style).mean(-1), style, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(style_ground(x0, 0.0, style), x0, atol=1e-6, rtol=1e-6)
    masked = style_ground(x0, 1.0, style, mask=torch.tensor([False, True]))
    assert torch.equal(masked[0], x0[0])
    # The detail (deviation from the time-mean) is untouched at any sigma.
    out = style_ground(x0, 0.5, style)
    torch.testing.assert_close(out - out.mean(-1, keepdim=True), x0 - x0.mean(-1, keepdim=True),
                               atol=1e-6, rtol=1e-5)


def _model():
    torch.manual_seed(0)
    model = UNet1d(load_config("tiny").unet, 32, 64).eval()
    torch.nn.init.normal_(model.output.weight, std=0.05)
    return model


@SAMPLERS
def test_mixed_batch_equals_samples_run_one_at_a_time(solve):
    model = _model()
    cond = torch.randn(3, 64, 8)
    weights, phis, seeds = torch.tensor([1.0, 3.0, 2.0]), torch.tensor([0.0, 0.7, 1.0]), [5, 6, 7]
    style = torch.randn(3, 32)
    mask = torch.tensor([False, True, True])
    batched = solve(model, cond, 32, 4, weights, phis, seeds, style, mask)
    for i in range(3):
        alone = solve(model, cond[i:i + 1], 32, 4, weights[i:i + 1], phis[i:i + 1], seeds[i:i + 1],
                            style[i:i + 1] if mask[i] else None, mask[i:i + 1] if mask[i] else None)
        torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-5, rtol=1e-4)


def test_seeds_decide_the_sample():
    model, cond = _model(), torch.randn(1, 64, 8)
    run = lambda seed: ddim_sample(model, cond, 32, 3, torch.ones(1), torch.zeros(1), [seed])  # noqa: E731
    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))


@SAMPLERS
def test_temperature_scales_the_starting_noise_and_zero_forgets_the_seed(solve):
    model, cond = _model(), torch.randn(2, 64, 8)
    run = lambda seeds, temperature=1.0: solve(model, cond, 32, 3, torch.ones(2), torch.zeros(2), seeds,  # noqa: E731
                                               temperature=temperature)
    assert torch.equal(run([1, 2]), run([1, 2], torch.ones(2)))           # 1 is the model's own noise
    torch.testing.assert_close(run([1, 2], 0.0), run([3, 4], 0.0))        # no noise: the seed plays no part
    cooler = run([1, 2], torch.tensor([1.0, 0.5]))                         # per sample
    torch.testing.assert_close(cooler[:1], run([1, 2])[:1])
    assert not torch.allclose(cooler[1:], run([1, 2])[1:])
    with pytest.raises(ValueError, match="temperature"):
        run([1, 2], -0.5)


def test_any_length_by_padding():
    model = _model()
    for length in (1, 5, 13):
        cond = torch.randn(2, 64, length)
        out = generate_latents(model, cond, target_dim=32, steps=2, cfg_weight=torch.tensor([1.0, 2.0]),
                               rescale_phi=torch.zeros(2), seeds=[0, 1])
        assert out.shape == (2, 32, length) and torch.isfinite(out).all()
    padded, length = pad_to_multiple(torch.ones(1, 2, 5), 4)
    assert padded.shape[-1] == 8 and length == 5 and padded[..., 5:].abs().sum() == 0


def test_progress_is_reported_every_step():
    calls = []
    ddim_sample(_model(), torch.randn(1, 64, 4), 32, 5, torch.ones(1), torch.zeros(1), [0],
                progress=lambda k, n: calls.append((k, n)))
    assert calls == [(k, 5) for k in range(1, 6)]


def test_generators_and_int_seeds_give_the_same_sample():
    model, cond = _model(), torch.randn(2, 64, 4)
    by_int = ddim_sample(model, cond, 32, 2, 2.0, 0.5, [3, 4])  # single values apply to every sample
    by_gen = ddim_sample(model, cond, 32, 2, torch.tensor([2.0, 2.0]), torch.tensor([0.5, 0.5]),
                         [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)])
    assert torch.equal(by_int, by_gen)


@SAMPLERS
def test_guidance_with_an_oracle_still_recovers_x0(solve):
    """If both halves predict the same x0, guidance and rescale must leave it unchanged."""
    x0 = torch.randn(2, 4, 6)

    def oracle(z, t, cond):
        a, s = alpha_sigma(t.reshape(-1, 1, 1))
        target = x0.repeat(z.shape[0] // 2, 1, 1)
        return a * (z - a * target) / s - s * target

    out = solve(oracle, torch.zeros(2, 3, 6), 4, steps=6, cfg_weight=torch.tensor([3.0, 1.0]),
                rescale_phi=torch.tensor([0.7, 0.0]), seeds=[0, 1])
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)


def test_second_order_solver_is_closer_to_the_ode_solution_at_few_steps():
    """Gaussian data x0 ~ N(mu, tau^2): the exact denoiser is known, and the probability-flow ODE
    maps the starting noise z_1 to mu + tau z_1. Both samplers converge to it; DPM-Solver++(2M)
    gets much closer at few steps (the point of a higher-order solver)."""
    mu, tau = 0.3, 0.5

    def exact(z, t, cond):
        a, s = alpha_sigma(t.reshape(-1, 1, 1))
        x0 = mu + a * tau ** 2 / (a ** 2 * tau ** 2 + s ** 2) * (z - a * mu)
        return (a * z - x0) / s

    cond, seeds = torch.zeros(4, 3, 16), [0, 1, 2, 3]
    target = mu + tau * torch.stack([torch.randn(4, 16, generator=torch.Generator().manual_seed(i)) for i in seeds])
    error = {}
    for name, solve in (("ddim", ddim_sample), ("dpmpp", dpmpp_2m_sample)):
        for steps in (4, 8, 64):
            out = solve(exact, cond, 4, steps, 1.0, 0.0, seeds)
            error[name, steps] = float((out - target).abs().max())
    assert error["ddim", 64] < error["ddim", 8] < error["ddim", 4]
    assert error["dpmpp", 64] < 0.01
    assert error["dpmpp", 8] < 0.5 * error["ddim", 8], error


def test_second_order_solver_equals_ddim_where_all_its_steps_are_first_order():
    """Its first step starts from pure noise (lambda = -inf), its second has no finite previous
    step size, and its last is first order: up to 3 steps it is DDIM exactly; from 4 it is not."""
    model, cond = _model(), torch.randn(2, 64, 8)
    for steps in (1, 2, 3):
        torch.testing.assert_close(dpmpp_2m_sample(model, cond, 32, steps, 2.0, 0.5, [0, 1]),
                                   ddim_sample(model, cond, 32, steps, 2.0, 0.5, [0, 1]), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(dpmpp_2m_sample(model, cond, 32, 4, 2.0, 0.5, [0, 1]),
                              ddim_sample(model, cond, 32, 4, 2.0, 0.5, [0, 1]), atol=1e-4)


def test_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="unknown sampler"):
        generate_latents(_model(), torch.randn(1, 64, 4), target_dim=32, steps=1, cfg_weight=1.0, rescale_phi=0.0,
                         seeds=[0], sampler="euler")


def test_bad_per_sample_settings_are_refused():
    model, cond = _model(), torch.randn(2, 64, 4)
    with pytest.raises(ValueError, match="one seed per sample"):
        ddim_sample(model, cond, 32, 1, 1.0, 0.0, [0])
    with pytest.raises(ValueError, match="cfg_weight"):
        ddim_sample(model, cond, 32, 1, torch.ones(3), 0.0, [0, 1])
    with pytest.raises(ValueError, match="style_mean"):
        ddim_sample(model, cond, 32, 1, 1.0, 0.0, [0, 1], style_mean=torch.zeros(2, 31))


def test_channel_weight_scales_each_target_channel_of_the_v_loss():
    """Weights of one equal the plain loss; a weight only on the pitch-code channels counts only
    their error; the weights stress exactly the bass latent's pitch-code and rhythm-code channels."""
    from bassray.diffusion.schedule import v_loss_per_example
    from bassray.train.diffusion_step import code_channel_weight
    model = lambda z, t, c: torch.zeros_like(z)  # noqa: E731  predicts v = 0: the error is v itself
    target, cond = torch.randn(3, 32, 8), torch.randn(3, 64, 8)
    plain, _ = v_loss_per_example(model, target, cond, torch.Generator().manual_seed(0), cond_dropout=0.0)
    ones, _ = v_loss_per_example(model, target, cond, torch.Generator().manual_seed(0), cond_dropout=0.0,
                                 channel_weight=torch.ones(32))
    assert torch.allclose(plain, ones)
    from bassray.models.latent_layout import LatentLayout
    config = load_config("tiny", ["diffusion_training.rhythm_loss_weight=7", "bass_autoencoder.rhythm_parts=4",
                                  "bass_autoencoder.latent_dim=40"])
    weight, layout = code_channel_weight(config), LatentLayout.of(config.bass_autoencoder)
    assert weight.shape == (40,) and torch.all(weight[layout.learnt_slice] == 1)
    assert torch.all(weight[layout.pitch_slice] == config.diffusion_training.pitch_loss_weight)
    assert torch.all(weight[layout.rhythm_slice] == 7) and layout.rhythm == 12
    pitch = layout.pitch
    only_pitch = torch.zeros(32)
    only_pitch[-pitch:] = 1.0
    part, _ = v_loss_per_example(model, target, cond, torch.Generator().manual_seed(0), cond_dropout=0.0,
                                 channel_weight=only_pitch)
    assert torch.all(part < plain) and torch.all(part > 0)


def test_every_named_sampler_has_a_solver_and_a_default_step_field():
    import dataclasses

    from bassray.config import SamplerConfig
    from bassray.sampler_names import SAMPLERS, STEP_FIELDS, default_steps
    fields = {f.name for f in dataclasses.fields(SamplerConfig)}
    assert set(STEP_FIELDS.values()) <= fields
    config = SamplerConfig(steps=7, dpmpp_steps=3)
    assert [config.steps_for(name) for name in SAMPLERS] == [7, 3]
    assert default_steps({"steps": 5}, "dpmpp-2m") == 5          # a bundle from before dpmpp_steps
    model = lambda z, t, c: torch.zeros_like(z)                    # noqa: E731
    for name in SAMPLERS:
        out = generate_latents(model, torch.zeros(1, 2, 8), target_dim=3, steps=2, cfg_weight=1.0,
                               rescale_phi=0.0, seeds=[0], sampler=name)
        assert out.shape == (1, 3, 8)


class SelfConditioningOracle(torch.nn.Module):
    """Returns the v that points at a fixed x0 and records the estimates it is fed."""
    self_condition = True

    def __init__(self, x0_cond, x0_null):
        super().__init__()
        self.x0_cond, self.x0_null, self.seen = x0_cond, x0_null, []

    def forward(self, z, t, cond, x0_self=None):
        self.seen.append(None if x0_self is None else x0_self.clone())
        a, s = alpha_sigma(t.reshape(-1, 1, 1))
        is_null = (cond.abs().sum(dim=(1, 2)) == 0).reshape(-1, 1, 1)
        x0 = torch.where(is_null, self.x0_null.expand_as(z), self.x0_cond.expand_as(z))
        return (a * z - x0) / s.clamp(min=1e-6)   # v with x0 = a z - s v


@SAMPLERS
def test_self_conditioning_feeds_each_branch_its_own_previous_estimate(solve):
    x0_cond, x0_null = torch.full((1, 3, 8), 2.0), torch.full((1, 3, 8), -1.0)
    model = SelfConditioningOracle(x0_cond, x0_null)
    cond = torch.randn(2, 5, 8)
    solve(model, cond, 3, 4, cfg_weight=3.0, rescale_phi=0.0, seeds=[0, 1])
    assert model.seen[0] is None and len(model.seen) == 4
    for seen in model.seen[1:]:   # the conditional half saw its own estimate, the null half its own
        torch.testing.assert_close(seen[:2], x0_cond.expand(2, -1, -1), atol=1e-4, rtol=0)
        torch.testing.assert_close(seen[2:], x0_null.expand(2, -1, -1), atol=1e-4, rtol=0)
