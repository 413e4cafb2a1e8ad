"""Loss terms of the DRIT translator and the Trident content-consistency loss.

Every function is pure: tensors in, a tensor out, no state, differentiable. Images are
``(B, C, H, W)`` float tensors (C = 1 for STEM images), normalised to about [0, 1].
Notation: ``E`` is the mean over the batch (and over pixels where a loss is per pixel);
``‖·‖₁`` of an image is its mean absolute value per pixel, so the losses do not grow with
the image size.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F

__all__ = [
    "CONTENT_FORMS",
    "STD_FLOOR",
    "content_consistency",
    "gan_d_loss",
    "gan_g_loss",
    "kl_loss",
    "l1",
    "log_spectrum",
    "lowpass",
    "standardise",
]

Logits = Union[torch.Tensor, Sequence[torch.Tensor]]

#: The forms of :func:`content_consistency`.
CONTENT_FORMS = ("plain", "structure", "correlation")

#: Floor of the per-image std in :func:`standardise` (images on a [0, 1] scale): a flat image
#: (say, an untrained generator's output) is not blown up without bound, while real images,
#: whose low-passed std is some 0.05–0.2, are standardised to within 0.1 % of unit std.
STD_FLOOR = 1e-3


def _as_list(logits: Logits) -> list[torch.Tensor]:
    if isinstance(logits, torch.Tensor):
        return [logits]
    out = list(logits)
    if not out:
        raise ValueError("empty list of logits")
    return out


def gan_d_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Least-squares GAN loss of a discriminator D.

    ``L_D = E[(D(real) − 1)²] + E[D(fake)²]``, the expectation over every logit (every
    patch of a PatchGAN). Given lists (one tensor per scale), the per-scale losses are
    averaged; the two lists must have the same length.
    """
    real, fake = _as_list(real_logits), _as_list(fake_logits)
    if len(real) != len(fake):
        raise ValueError(f"{len(real)} real but {len(fake)} fake logit tensors")
    terms = [((r - 1.0) ** 2).mean() + (f**2).mean() for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def gan_g_loss(fake_logits: Logits) -> torch.Tensor:
    """Least-squares GAN loss of the generator: ``L_G = E[(D(fake) − 1)²]``, averaged over scales."""
    return torch.stack([((f - 1.0) ** 2).mean() for f in _as_list(fake_logits)]).mean()


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) of the attribute posterior, summed over the vector, mean over the batch.

    ``KL = E_batch[ ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²) ]`` with ``logvar = log σ²``; both
    arguments are ``(B, attr_dim)``.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference ``E|a − b|`` over every element."""
    return (a - b).abs().mean()


def _gaussian_kernel(sigma_px: float, radius: int, device, dtype) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    return k / k.sum()


def lowpass(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Gaussian blur of every channel separately (depthwise), reflecting borders; differentiable.

    ``lowpass(x) = G_σ * x`` with the normalised Gaussian ``G_σ(t) ∝ exp(−t²/2σ²)``
    truncated at ``⌈3σ⌉`` pixels (at most one less than the smaller image side, as the
    reflection needs). ``sigma_px ≤ 0`` returns ``x`` unchanged. Output shape = input shape.
    """
    if sigma_px <= 0:
        return x
    if x.dim() != 4:
        raise ValueError(f"lowpass expects (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    radius = min(max(1, int(math.ceil(3.0 * sigma_px))), h - 1, w - 1)
    if radius < 1:
        return x
    k = _gaussian_kernel(float(sigma_px), radius, x.device, x.dtype)
    kx = k.view(1, 1, 1, -1).expand(c, 1, 1, k.numel())
    ky = k.view(1, 1, -1, 1).expand(c, 1, k.numel(), 1)
    out = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kx, groups=c)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), ky, groups=c)


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Each image and channel to zero mean and unit std over (H, W): ``(x − mean) / √(var + STD_FLOOR²)``."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    var = x.var(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + STD_FLOOR**2)


def content_consistency(
    u: torch.Tensor,
    y: torch.Tensor,
    v: torch.Tensor,
    x: torch.Tensor,
    form: str = "structure",
    sigma_px: float = 2.0,
) -> torch.Tensor:
    """Trident content-consistency loss: the translations must keep the atoms where they were.

    ``x`` is the sim image, ``y`` the exp image, ``u = G_sim(c_exp, a_sim)`` the exp image
    translated to sim, ``v = G_exp(c_sim, a_exp)`` the sim image translated to exp.

    ``form="plain"``: ``L = E[‖u − y‖₁ + ‖v − x‖₁]``, the loss as published.

    ``form="structure"``: ``L = E[‖S(u) − S(y)‖₁ + ‖S(v) − S(x)‖₁]`` with
    ``S(z) = standardise(lowpass(z, sigma_px))``: both images are blurred at the scale of an
    atom column and then each is brought to zero mean and unit std on its own.

    Why the structure form: the plain L1 pulls v back, pixel by pixel, towards the clean
    simulation x. Shot noise, readout noise and the experiment's own contrast and
    background are exactly what v must acquire, and every one of them raises ‖v − x‖₁; so
    the plain loss fights the domain-adversarial loss and teaches the generator to suppress
    noise. White noise averages out under the blur (its std falls by ``2√π·σ``), and the
    standardisation removes any difference of mean level and contrast. What is left is
    where the columns are and how their brightness compares, which is what must not move.
    ``sigma_px`` should be below about a third of the nearest-column spacing, or the blur
    erases the lattice itself.

    The structure form is blind to contrast and background, but only *less* sensitive to
    noise, not blind: the noise that survives the blur is compared relative to the blurred
    image's std, and an L1 grows linearly with it. For a lattice of 12 px spacing,
    ``sigma_px=1.5`` and white noise of std 0.1 on a [0, 1] image, one term costs about
    0.4× what a 1 px shift of the columns costs (the plain form: about 1.2×).

    ``form="correlation"``: ``L = E[½·mean_p (S(u) − S(y))² + ½·mean_p (S(v) − S(x))²]``,
    the squared error of the same standardised images, which equals
    ``(1 − ρ(ū, ȳ)) + (1 − ρ(v̄, x̄))`` with ``z̄ = lowpass(z, sigma_px)`` and ρ the Pearson
    correlation over the pixels of each image (exactly so while the stds exceed
    ``STD_FLOOR``). It is quadratic in the noise-to-signal ratio, so weak noise costs almost
    nothing (about 0.17× a 1 px shift in the example above); the price is that a sub-pixel
    shift costs little too, and its gradient vanishes as the shift goes to zero.
    """
    if form not in CONTENT_FORMS:
        raise ValueError(f"content_consistency: unknown form '{form}' (use one of {', '.join(CONTENT_FORMS)})")
    for name, a, b in (("u/y", u, y), ("v/x", v, x)):
        if a.shape != b.shape:
            raise ValueError(f"content_consistency: shapes of {name} differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if form == "plain":
        return l1(u, y) + l1(v, x)

    def s(z: torch.Tensor) -> torch.Tensor:
        return standardise(lowpass(z, sigma_px))

    if form == "structure":
        return l1(s(u), s(y)) + l1(s(v), s(x))
    return 0.5 * (((s(u) - s(y)) ** 2).mean() + ((s(v) - s(x)) ** 2).mean())


def log_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Normalised log power spectrum, the input of the spectrum discriminator.

    ``(B, C, H, W) → (B, C, H, W//2 + 1)``: with ``F = rfft2(x − mean(x))`` (orthonormal),
    ``P = |F|² / mean_f(|F|²)`` (the mean power is 1 for every image, so only the shape of
    the spectrum counts, not the image's contrast or size) and the result is
    ``log(1 + P)``, fftshifted along H so that row H//2 is zero vertical frequency; column 0
    is zero horizontal frequency and the last column the Nyquist frequency.

    White noise gives a flat spectrum of about log 2 ≈ 0.7; lattice reflections stand out
    as bright spots at many times that.
    """
    if x.dim() != 4:
        raise ValueError(f"log_spectrum expects (B, C, H, W), got shape {tuple(x.shape)}")
    z = x - x.mean(dim=(-2, -1), keepdim=True)
    f = torch.fft.rfft2(z.float(), norm="ortho")
    power = f.real**2 + f.imag**2
    power = power / (power.mean(dim=(-2, -1), keepdim=True) + 1e-12)
    return torch.fft.fftshift(torch.log1p(power), dim=-2).to(x.dtype)
