"""DDIM sampling with classifier-free guidance, CFG rescale and style grounding — pure functions
around any ``model(z_t, t, cond) -> v``; guidance never lives inside the network (docs/design.md §2.3).

Every per-request setting (guidance weight w, rescale phi, style, seed) is per sample, so a batch
of mixed requests gives what each request would give alone.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from bassray.diffusion.schedule import alpha_sigma
from bassray.sampler_names import check_sampler

STD_EPS = 1e-8


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, 1, 1)


def cfg_combine(x0_cond: torch.Tensor, x0_uncond: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x0_u + w (x0_c - x0_u), w per sample [B] (or per sample and channel [B, D, 1]); w = 1 is the
    plain conditional estimate."""
    w = (weight if weight.dim() == 3 else _per_sample(weight)).to(x0_cond.dtype)
    return torch.where(w == 1, x0_cond, x0_uncond + w * (x0_cond - x0_uncond))


def group_weights(cfg_weight: torch.Tensor, learnt_cfg_max: torch.Tensor | float | None,
                  learnt_channels: int, target_dim: int) -> torch.Tensor:
    """Guidance weights per sample and channel ``[B, D, 1]``: ``cfg_weight`` [B] everywhere, except
    that the first ``learnt_channels`` channels (a bass latent's learnt timbre and decay channels,
    before its computed rhythm and pitch codes) take at most ``learnt_cfg_max`` where it is given.
    A cap, not a value, so an unconditional sample (w = 0) stays deaf to the mix in every channel.

    Why: guidance that the notes need (w = 3) turns the learnt channels into noise and clicks; at
    1.5 on them alone the longer recipe's harmonic share rose 0.82 -> 0.90 at the same notes
    (docs/articulation.md)."""
    weight = cfg_weight.reshape(-1, 1, 1).expand(-1, target_dim, 1).clone()
    if learnt_cfg_max is not None and learnt_channels > 0:
        if not 0 < learnt_channels <= target_dim:
            raise ValueError(f"learnt_channels must be in 1..{target_dim}, got {learnt_channels}")
        cap = per_sample_values("learnt_cfg_max", learnt_cfg_max, weight.shape[0], weight.device)
        weight[:, :learnt_channels] = torch.minimum(weight[:, :learnt_channels], cap[:, None, None])
    return weight


def cfg_rescale(x0_cfg: torch.Tensor, x0_cond: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2023): match the guided estimate's std to the conditional one's, blended by phi.
    The std is over channels per latent frame, so it does not depend on the length."""
    std_cond = x0_cond.std(dim=1, keepdim=True)
    std_cfg = x0_cfg.std(dim=1, keepdim=True)
    rescaled = x0_cfg * std_cond / (std_cfg + STD_EPS)
    p = _per_sample(phi).to(x0_cfg.dtype)
    return torch.where(p == 0, x0_cfg, p * rescaled + (1 - p) * x0_cfg)


def style_ground(x0: torch.Tensor, sigma: torch.Tensor | float, style_mean: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pull the time-mean of x0 [B, D, L] towards ``style_mean`` [B, D] with weight sigma²:
    x0 - mean_t(x0) + sigma² mu_style + (1 - sigma²) mean_t(x0). Samples with mask False are untouched."""
    sigma = torch.as_tensor(sigma, dtype=x0.dtype, device=x0.device)
    s2 = (_per_sample(sigma) if sigma.dim() else sigma) ** 2
    mean = x0.mean(dim=-1, keepdim=True)
    grounded = x0 - mean + s2 * style_mean[:, :, None].to(x0.dtype) + (1 - s2) * mean
    if mask is None:
        return grounded
    return torch.where(_per_sample(mask), grounded, x0)


def initial_noise(seeds: Sequence[int | torch.Generator], shape: tuple[int, int],
                  device: torch.device) -> torch.Tensor:
    """One generator per sample (an int seed or a CPU ``torch.Generator``): a sample's noise depends
    on its own seed only, not on its batch or device. Returns [B, *shape] float32."""
    def one(seed: int | torch.Generator) -> torch.Tensor:
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
        return torch.randn(shape, generator=gen)
    return torch.stack([one(s) for s in seeds]).to(device)


def per_sample_values(name: str, value: torch.Tensor | float, batch: int, device: torch.device
                      ) -> torch.Tensor:
    """A setting as one float32 value per sample [B]; a single value applies to every sample."""
    value = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    if value.numel() == 1:
        return value.expand(batch)
    if value.numel() != batch:
        raise ValueError(f"{name} needs one value per sample ({batch}) or a single value, "
                         f"got {value.numel()}")
    return value




class GuidedDenoiser:
    """The x0 estimate both samplers step with: the model's v turned into x0, guided (CFG), rescaled
    and style-grounded, each per sample. Checks and expands the per-sample settings once.

    A self-conditioning model (``model.self_condition``) sees each branch's own previous x0 estimate,
    so the unconditional half stays deaf to the mix; the first step sees none."""

    def __init__(self, model: Callable, cond: torch.Tensor, target_dim: int,
                 cfg_weight: torch.Tensor | float, rescale_phi: torch.Tensor | float,
                 style_mean: torch.Tensor | None, style_mask: torch.Tensor | None,
                 learnt_cfg_max: torch.Tensor | float | None = None, learnt_channels: int = 0):
        batch = cond.shape[0]
        device = cond.device
        self.model, self.cond, self.batch = model, cond, batch
        self.cfg_weight = per_sample_values("cfg_weight", cfg_weight, batch, device)
        self.rescale_phi = per_sample_values("rescale_phi", rescale_phi, batch, device)
        if style_mean is not None and style_mean.shape != (batch, target_dim):
            raise ValueError(f"style_mean must be [B, D] = [{batch}, {target_dim}], "
                             f"got {tuple(style_mean.shape)}")
        self.style_mean = style_mean.to(device, torch.float32) if style_mean is not None else None
        self.style_mask = (style_mask.to(device=device, dtype=torch.bool).reshape(batch)
                           if style_mask is not None else None)
        self.weights = group_weights(self.cfg_weight, learnt_cfg_max, learnt_channels, target_dim)
        self.guided = bool((self.weights != 1).any())
        self.null = torch.zeros_like(cond)
        self.self_condition = bool(getattr(model, "self_condition", False))
        self.previous: torch.Tensor | None = None   # [B or 2B, D, L]: the last call's branch estimates

    def _v(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.self_condition:
            return self.model(z, t, cond, self.previous).float()
        return self.model(z, t, cond).float()

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a_t, s_t = alpha_sigma(t)
        batch, cond = self.batch, self.cond
        if self.guided:  # one batched call for the conditional and unconditional halves
            zz = torch.cat([z, z])
            x0_both = a_t * zz - s_t * self._v(zz.to(cond.dtype), t.expand(2 * batch), torch.cat([cond, self.null]))
            x_c, x_u = x0_both[:batch], x0_both[batch:]
            x0 = cfg_rescale(cfg_combine(x_c, x_u, self.weights), x_c, self.rescale_phi)
        else:
            x0_both = x0 = a_t * z - s_t * self._v(z.to(cond.dtype), t.expand(batch), cond)
        if self.self_condition:
            self.previous = x0_both.to(cond.dtype)
        if self.style_mean is not None:
            x0 = style_ground(x0, s_t, self.style_mean, self.style_mask)
        return x0


def _start(cond: torch.Tensor, target_dim: int, steps: int, seeds: Sequence[int | torch.Generator],
           temperature: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting latent (each sample's seeded noise times its ``temperature``) and the t grid."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    if len(seeds) != cond.shape[0]:
        raise ValueError(f"give one seed per sample: {cond.shape[0]} samples, {len(seeds)} seeds")
    scale = per_sample_values("temperature", temperature, cond.shape[0], cond.device)
    if bool((scale < 0).any()):
        raise ValueError(f"temperature must be >= 0 (1 = the model's own noise), got {scale.tolist()}")
    z = initial_noise(seeds, (target_dim, cond.shape[-1]), cond.device) * _per_sample(scale)
    return z, torch.linspace(1.0, 0.0, steps + 1, device=cond.device)


@torch.no_grad()
def ddim_sample(model: Callable, cond: torch.Tensor, target_dim: int, steps: int,
                cfg_weight: torch.Tensor | float, rescale_phi: torch.Tensor | float,
                seeds: Sequence[int | torch.Generator], style_mean: torch.Tensor | None = None,
                style_mask: torch.Tensor | None = None,
                progress: Callable[[int, int], None] | None = None,
                temperature: torch.Tensor | float = 1.0, learnt_cfg_max: torch.Tensor | float | None = None,
                learnt_channels: int = 0) -> torch.Tensor:
    """DDIM (eta = 0) with ``steps`` steps on a uniform t grid from 1 to 0.

    ``model(z_t, t [B], cond) -> v``; ``cond`` [B, Dx, L] is the normalised mix latent (L must suit
    the model: see :func:`generate_latents`). Per sample: guidance weight ``cfg_weight`` [B] (1 = plain
    conditional), rescale ``rescale_phi`` [B], style ``style_mean`` [B, Dy] applied where ``style_mask``
    [B] is True (all samples when the mask is None), and a seed. Each step: estimate x0 (conditional
    and null halves in one batched call unless every weight is 1), guide, rescale, ground, then
    eps = (z_t - a_t x0) / s_t and z_s = a_s x0 + s_s eps. Returns the normalised target latent
    [B, Dy, L] in float32."""
    z, times = _start(cond, target_dim, steps, seeds, temperature)
    denoise = GuidedDenoiser(model, cond, target_dim, cfg_weight, rescale_phi, style_mean, style_mask,
                             learnt_cfg_max, learnt_channels)
    for k in range(steps):
        t, s = times[k], times[k + 1]
        x0 = denoise(z, t)
        a_t, s_t = alpha_sigma(t)
        a_s, s_s = alpha_sigma(s)
        eps = (z - a_t * x0) / s_t  # s_t > 0 for every t before the last grid point
        z = a_s * x0 + s_s * eps
        if progress is not None:
            progress(k + 1, steps)
    return z


@torch.no_grad()
def dpmpp_2m_sample(model: Callable, cond: torch.Tensor, target_dim: int, steps: int,
                    cfg_weight: torch.Tensor | float, rescale_phi: torch.Tensor | float,
                    seeds: Sequence[int | torch.Generator], style_mean: torch.Tensor | None = None,
                    style_mask: torch.Tensor | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    temperature: torch.Tensor | float = 1.0,
                    learnt_cfg_max: torch.Tensor | float | None = None, learnt_channels: int = 0) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095), the multistep second-order solver in
    data-prediction form, on the same grid and with the same guided x0 estimate as
    :func:`ddim_sample` (arguments alike). With lambda = log(a / s) and h = lambda_s - lambda_t:
    z_s = (s_s / s_t) z_t - a_s (e^-h - 1) D with D = (1 + 1/2r) x0_t - (1/2r) x0_prev, r = h_prev / h.
    Steps without a finite previous step (the first two: lambda is -inf at t = 1) and the last
    one, to t = 0, are first order, i.e. the DDIM step, as is usual for few steps."""
    z, times = _start(cond, target_dim, steps, seeds, temperature)
    denoise = GuidedDenoiser(model, cond, target_dim, cfg_weight, rescale_phi, style_mean, style_mask,
                             learnt_cfg_max, learnt_channels)
    x0_prev, h_prev = None, None
    for k in range(steps):
        t, s = times[k], times[k + 1]
        x0 = denoise(z, t)
        a_t, s_t = alpha_sigma(t)
        a_s, s_s = alpha_sigma(s)
        # lambda is -inf at t = 1 and +inf at t = 0: those steps have no finite size
        h = torch.log(a_s / s_s) - torch.log(a_t / s_t) if a_t > 0 and s_s > 0 else None
        if h is None or h_prev is None or k == steps - 1:
            z = a_s * x0 + s_s * (z - a_t * x0) / s_t  # first order: the DDIM step
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
            z = (s_s / s_t) * z - a_s * torch.expm1(-h) * d
        h_prev, x0_prev = h, x0
        if progress is not None:
            progress(k + 1, steps)
    return z


def pad_to_multiple(latent: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int]:
    """Zero-pad the end of the time axis to a multiple. Returns the padded latent and the original length.

    Zeros, not reflection: in a normalised latent zero is the training mean and exactly the null
    condition the model learned, i.e. "no mix here". Reflected frames would be music the model
    answers with bass that attention then mixes into the real frames near the end; a short stretch of
    "nothing" (at most multiple - 1 frames) is the neutral choice, and it is cropped off afterwards."""
    length = latent.shape[-1]
    return F.pad(latent, (0, (-length) % multiple)), length


def generate_latents(model: torch.nn.Module, cond: torch.Tensor, *, target_dim: int, steps: int,
                     cfg_weight: torch.Tensor | float, rescale_phi: torch.Tensor | float,
                     seeds: Sequence[int | torch.Generator], style_mean: torch.Tensor | None = None,
                     style_mask: torch.Tensor | None = None,
                     progress: Callable[[int, int], None] | None = None, sampler: str = "ddim",
                     temperature: torch.Tensor | float = 1.0,
                     learnt_cfg_max: torch.Tensor | float | None = None, learnt_channels: int = 0) -> torch.Tensor:
    """Any length: pad the condition to the U-Net's total down-sampling, sample with ``sampler``
    ("ddim" or "dpmpp-2m"), crop back. ``temperature`` (per sample or one value) scales the
    starting noise: below 1 the deterministic solvers land nearer the model's most likely latents.
    ``learnt_cfg_max`` (None: no cap) caps the guidance of the first ``learnt_channels`` target
    channels (:func:`group_weights`)."""
    solve = {"ddim": ddim_sample, "dpmpp-2m": dpmpp_2m_sample}[check_sampler(sampler)]
    padded, length = pad_to_multiple(cond, getattr(model, "total_downsampling", 1))
    out = solve(model, padded, target_dim, steps, cfg_weight, rescale_phi, seeds, style_mean, style_mask, progress,
                temperature, learnt_cfg_max, learnt_channels)
    return out[..., :length]
