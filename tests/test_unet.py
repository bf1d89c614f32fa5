import pytest
import torch

from bassray.config import load_config
from bassray.diffusion.schedule import predict_x0_eps, v_loss, v_target
from bassray.models.unet1d import UNet1d
from bassray.train.ema import EMA


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    config = load_config("tiny")
    model = UNet1d(config.unet, 32, 64)
    torch.nn.init.normal_(model.output.weight, std=0.02)  # zero-init output would hide shape bugs
    return model.eval()


@pytest.mark.parametrize("length", [4, 12, 36, 100, 212])
def test_unet_keeps_shape_for_lengths_never_trained_on(length):
    model = tiny_unet()
    z, cond = torch.randn(2, 32, length), torch.randn(2, 64, length)
    with torch.no_grad():
        v = model(z, torch.rand(2), cond)
    assert v.shape == z.shape and torch.isfinite(v).all()


def test_unet_rejects_lengths_it_cannot_downsample():
    model = tiny_unet()
    assert model.total_downsampling == 2 ** (len(model.cfg.channel_mults) - 1)
    with pytest.raises(ValueError, match="multiple of"):
        model(torch.randn(1, 32, 7), torch.rand(1), torch.randn(1, 64, 7))
    with pytest.raises(ValueError, match="cond"):
        model(torch.randn(1, 32, 8), torch.rand(1), torch.randn(1, 63, 8))


def test_unet_rejects_attention_levels_it_does_not_have():
    config = load_config("tiny", ["unet.attention_levels=[3]"])
    with pytest.raises(ValueError, match="attention_levels"):
        UNet1d(config.unet, 32, 64)


def test_dpb_bias_is_relative_and_defined_for_any_length():
    attn = next(m for m in tiny_unet().modules() if m.__class__.__name__ == "DPBAttention")
    for length in (1, 5, 300):
        bias = attn.position_bias(length, torch.device("cpu"), torch.float32)
        assert bias.shape == (attn.heads, length, length)
    bias = attn.position_bias(6, torch.device("cpu"), torch.float32)
    # Toeplitz: the bias depends on i - j only.
    assert torch.allclose(bias[:, 1:, 1:], bias[:, :-1, :-1])


def test_unet_output_is_per_sample():
    model = tiny_unet()
    z, cond, t = torch.randn(3, 32, 16), torch.randn(3, 64, 16), torch.rand(3)
    with torch.no_grad():
        batched = model(z, t, cond)
        single = torch.cat([model(z[i:i + 1], t[i:i + 1], cond[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_paper_unet_size_matches_the_paper():
    config = load_config("paper")
    model = UNet1d(config.unet, config.bass_autoencoder.latent_dim, config.mix_autoencoder.latent_dim)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 42e6) / 42e6 < 0.10, count


def test_v_parameterisation_round_trips():
    x0, eps, t = torch.randn(4, 8, 10), torch.randn(4, 8, 10), torch.rand(4)
    from bassray.diffusion.schedule import alpha_sigma
    a, s = alpha_sigma(t.reshape(-1, 1, 1))
    z = a * x0 + s * eps
    x0_hat, eps_hat = predict_x0_eps(z, v_target(x0, eps, t), t)
    torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps_hat, eps, atol=1e-5, rtol=1e-5)


def test_v_loss_decreases_on_a_fixed_batch():
    model = tiny_unet().train()
    target, cond = torch.randn(4, 32, 8), torch.randn(4, 64, 8)
    optim = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss, _ = v_loss(model, target, cond, generator=torch.Generator().manual_seed(0), cond_dropout=0.15)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_null_condition_dropout_zeroes_whole_examples():
    seen = []
    model = lambda z, t, c: (seen.append(c.clone()), torch.zeros_like(z))[1]  # noqa: E731
    cond = torch.ones(400, 2, 3)
    v_loss(model, torch.zeros(400, 1, 3), cond, generator=torch.Generator().manual_seed(1), cond_dropout=0.15)
    per_example = seen[0].flatten(1)
    zeroed = (per_example == 0).all(1)
    assert ((per_example == 1).all(1) | zeroed).all()
    assert 0.08 < zeroed.float().mean() < 0.22


def test_conditioning_augmentation_perturbs_kept_mixes_and_leaves_null_ones_zero():
    seen = []
    model = lambda z, t, c: (seen.append(c.clone()), torch.zeros_like(z))[1]  # noqa: E731
    cond = torch.ones(400, 2, 3)
    v_loss(model, torch.zeros(400, 1, 3), cond, generator=torch.Generator().manual_seed(1), cond_dropout=0.15,
           cond_noise=0.5)
    per_example = seen[0].flatten(1)
    zeroed = (per_example == 0).all(1)
    kept = per_example[~zeroed]
    assert 0.08 < zeroed.float().mean() < 0.22
    assert (kept != 1).all() and abs(float((kept - 1).std()) - 0.5) < 0.05
    v_loss(model, torch.zeros(4, 1, 3), torch.ones(4, 2, 3), condition="true", cond_noise=0.5)
    assert torch.equal(seen[-1], torch.ones(4, 2, 3))  # evaluation never perturbs a forced condition
    with pytest.raises(ValueError, match="cond_noise"):
        v_loss(model, torch.zeros(4, 1, 3), torch.ones(4, 2, 3), cond_noise=-0.1)


def test_forced_conditions_see_the_same_noise_and_the_chosen_condition():
    seen = []

    def record(z, t, c):
        seen.append((z.clone(), t.clone(), c.clone()))
        return torch.zeros_like(z)

    target, cond, other = torch.randn(3, 2, 5), torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    for condition in ("true", "null", other):
        loss, metrics = v_loss(record, target, cond, generator=torch.Generator().manual_seed(3),
                               cond_dropout=1.0, condition=condition)  # forcing overrides dropout
        assert torch.isfinite(loss)
    (z1, t1, c1), (z2, t2, c2), (z3, t3, c3) = seen
    assert torch.equal(z1, z2) and torch.equal(z1, z3) and torch.equal(t1, t2) and torch.equal(t1, t3)
    assert torch.equal(c1, cond) and not c2.any() and torch.equal(c3, other)
    with pytest.raises(ValueError, match="condition must be"):
        v_loss(record, target, cond, condition="mismatched")
    with pytest.raises(ValueError, match="shaped like"):
        v_loss(record, target, cond, condition=torch.zeros(3, 4, 6))


def test_ema_math_and_state_round_trip():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    ema.num_updates = 100  # past the warm-up
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.5))
    other = torch.nn.Linear(2, 1, bias=False)
    restored = EMA(other, 0.9)
    restored.load_state_dict(ema.state_dict())
    restored.copy_to(other)
    assert torch.allclose(other.weight, torch.full((1, 2), 0.5))


def test_self_conditioning_unet_reads_its_previous_estimate_and_none_means_zeros():
    torch.manual_seed(0)
    config = load_config("tiny", ["unet.self_condition=true"])
    model = UNet1d(config.unet, 32, 64)
    torch.nn.init.normal_(model.output.weight, std=0.02)
    model.eval()
    z, cond, t = torch.randn(2, 32, 16), torch.randn(2, 64, 16), torch.rand(2)
    with torch.no_grad():
        first = model(z, t, cond)
        torch.testing.assert_close(first, model(z, t, cond, torch.zeros_like(z)))
        assert not torch.allclose(first, model(z, t, cond, torch.randn_like(z)))
    with pytest.raises(ValueError, match="shaped like z_t"):
        model(z, t, cond, torch.zeros(2, 31, 16))
    with pytest.raises(ValueError, match="self-conditioning"):
        tiny_unet()(z, t, cond, torch.zeros_like(z))


class RecordingModel(torch.nn.Module):
    """A self-conditioning stand-in that records what each call saw."""
    self_condition = True

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.seen, self.inputs = [], []

    def forward(self, z, t, cond, x0_self=None):
        self.seen.append(None if x0_self is None else x0_self.detach().clone())
        self.inputs.append((z.detach().clone(), t.detach().clone()))
        return self.scale * z + (0 if x0_self is None else 0.1 * x0_self)


@pytest.mark.parametrize("rate, calls", [(0.0, 1), (1.0, 2)])
def test_v_loss_self_conditions_on_its_own_detached_estimate(rate, calls):
    from bassray.diffusion.schedule import alpha_sigma
    model = RecordingModel()
    target, cond = torch.randn(3, 4, 8), torch.randn(3, 2, 8)
    gen = torch.Generator().manual_seed(0)
    loss, _ = v_loss(model, target, cond, generator=gen, cond_dropout=0.0, self_condition=rate)
    assert len(model.seen) == calls and model.seen[0] is None
    loss.backward()
    assert model.scale.grad is not None
    if calls == 2:  # the second pass sees the first's x0 estimate, which carries no gradient
        x0_self = model.seen[1]
        assert x0_self.shape == target.shape and not x0_self.requires_grad
        z, t = model.inputs[0]
        a, s = alpha_sigma(t.reshape(-1, 1, 1))
        torch.testing.assert_close(x0_self, a * z - s * 0.5 * z)   # x0 = a z - s v with v = 0.5 z
    with pytest.raises(ValueError, match="fraction of batches"):
        v_loss(model, target, cond, self_condition=1.5)
