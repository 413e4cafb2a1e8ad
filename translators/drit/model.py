"""DRIT networks for single-channel STEM images: encoders and generators (:class:`Drit`),
and discriminators (:class:`Discriminators`).

Domains are ``"sim"`` (clean simulations) and ``"exp"`` (experimental micrographs).
Images are ``(B, 1, H, W)`` float tensors normalised to about [0, 1].

Size constraint
---------------
Every network is fully convolutional: a model trained on 96 px crops translates images of
any size whose height and width are both divisible by ``2 ** cfg.downsamples`` (4 with the
defaults), and :meth:`Drit.generate` returns an image of exactly the input size. Other sizes
are refused by :meth:`Drit.content` (pad or crop to a multiple first). The attribute
encoder and the discriminators end in a global average pool or are patch-wise, so they
take any size from 16 px up (with the default config).

Architecture (``w = cfg.width``, ``C = w · 2**downsamples`` content channels)
-----------------------------------------------------------------------------
Convolutions in the encoders and generators pad by reflection (no artificial dark border).

* Content encoder, one per domain: 7×7 conv (1 → w), then ``downsamples`` stride-2 3×3
  convs doubling the channels, each followed by instance norm and ReLU, then
  ``content_blocks`` residual blocks (conv–IN–ReLU–conv–IN, plus the input). The last
  residual block is a single module shared by both domains, which ties the two content
  spaces together; the content discriminator does the rest.
* Attribute encoder, one per domain: 7×7 conv then four stride-2 3×3 convs (channels
  w, 2w, 4w, 4w, 4w), ReLU and *no* normalisation — instance norm would erase the very
  statistics (mean level, contrast, noise power) the attribute has to carry — then a
  global average pool and two linear heads for μ and log σ².
* Generator, one per domain: ``gen_blocks`` residual blocks at C channels, then
  ``downsamples`` upsampling stages (1×1 conv halving the channels, nearest-neighbour ×2
  upsampling, 3×3 conv), then a 7×7 conv to one channel. The attribute conditions every
  normalised layer (both convs of every residual block and every upsampling stage) by a
  per-channel scale and shift: ``h ← IN(h)·(1 + γ(a)) + β(a)``, γ and β from a small MLP whose output heads start
  at zero (so an untrained generator is a plain instance-normalised decoder). With
  ``cfg.noise_inputs`` every upsampling stage also adds a fresh N(0, 1) map, scaled by a
  learned per-channel weight that starts at zero, before its normalisation: shot and
  readout noise are random, and a deterministic function of (content, attribute) can
  only paint pseudo-noise fixed by the content. Off by default, so that translation is
  deterministic given the attribute code; see :meth:`Drit.generate` for reproducible noise.
  (In a 300-iteration trial on 64 px crops at lr 1e-4 the learned noise weights hardly grew
  from zero, so the benefit, if any, needs long training.)
* Output: without a residual prior, ``lo + (hi − lo)·sigmoid(r)`` with
  ``(lo, hi) = OUTPUT_RANGE = (−0.25, 1.25)``: bounded (no drift to absurd values, smooth
  gradients) yet reaching a little beyond [0, 1], because percentile-normalised images
  have tails outside [0, 1] that a discriminator would miss in a plain sigmoid output.
  With ``cfg.residual_prior`` and a ``base`` image: ``base + RESIDUAL_LIMIT·tanh(r)``, so
  the generator only learns the change from base (the physics prior: the parametric
  model's rendering of the same simulation), limited to ±RESIDUAL_LIMIT. The exp
  generator's last conv then starts at zero, so an untrained model returns base exactly.

Discriminators (LeakyReLU 0.2, spectral norm on every layer, no other normalisation)
------------------------------------------------------------------------------------
* Domain: per domain, ``disc_scales`` PatchGANs on the image at full, 1/2, 1/4 … resolution
  (3×3 average pooling with stride 2 between scales). Each is ``disc_layers`` stride-2 4×4
  convs (channels w, 2w, 4w, … capped at 8w) and a 3×3 conv to one logit per patch.
* Content: two stride-2 and one stride-1 3×3 convs at C channels on the content map, a
  global average pool and a linear layer: one logit per image ("this content code came
  from the sim domain").
* Spectrum (``cfg.spectrum_discriminator``): on :func:`~translators.drit.losses.log_spectrum`
  of the image, with three coordinate channels appended (radial frequency, |f_y| and |f_x|,
  each in units of the Nyquist frequency) so that the convolutions know where in the
  spectrum they look — a spectrum, unlike an image, is not translation invariant — then
  three stride-2 convs, one stride-1 conv, a global average pool and a linear layer. As
  the coordinates are relative to Nyquist, it takes any image size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from datafactory.checks import from_known_fields

from translators.drit.losses import log_spectrum, lowpass

__all__ = [
    "DOMAINS",
    "OUTPUT_RANGE",
    "RESIDUAL_LIMIT",
    "Discriminators",
    "Drit",
    "DritConfig",
    "count_parameters",
    "parameter_counts",
]

DOMAINS = ("sim", "exp")

#: One torch.Generator for the batch, one per image, or None (torch's global generator).
Generators = Union[torch.Generator, Sequence[torch.Generator], None]

#: Range of the generator output without a residual prior: ``lo + (hi − lo)·sigmoid(r)``.
OUTPUT_RANGE = (-0.25, 1.25)

#: Largest change the generator may make to ``base`` with ``cfg.residual_prior``.
RESIDUAL_LIMIT = 1.0

_LEAK = 0.2


@dataclass(frozen=True)
class DritConfig:
    """Sizes and options of the DRIT networks (see the module docstring)."""

    width: int = 32  # channels after the first conv; doubles at each downsample
    downsamples: int = 2  # content map at 1/2**downsamples resolution
    content_blocks: int = 3  # residual blocks per content encoder; the last is shared by both domains
    attr_dim: int = 8  # attribute (style) vector length
    gen_blocks: int = 3  # residual blocks in each generator
    disc_scales: int = 2  # multi-scale domain discriminators (full res, 1/2 res, ...)
    disc_layers: int = 3  # strided conv layers per discriminator scale (PatchGAN)
    spectrum_discriminator: bool = False  # extra discriminator on the log power spectrum (exp domain)
    residual_prior: bool = False  # generators add a bounded residual to a given base image
    noise_inputs: bool = False  # generators add learned-scale per-pixel noise in the upsampling stages
    residual_discriminator: bool = False  # extra PatchGAN on the noise space (image minus its 1 px blur, and the blur)

    def __post_init__(self) -> None:
        for name in ("width", "content_blocks", "attr_dim", "disc_scales", "disc_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DritConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("downsamples", "gen_blocks"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"DritConfig.{name} must be ≥ 0, got {getattr(self, name)}")

    @property
    def content_channels(self) -> int:
        """Channels C of the content map."""
        return self.width * 2**self.downsamples

    @property
    def size_multiple(self) -> int:
        """Image height and width must be multiples of this (``2 ** downsamples``)."""
        return 2**self.downsamples

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DritConfig":
        return from_known_fields(cls, d, "DritConfig")


def _check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain '{domain}' (use 'sim' or 'exp')")
    return domain


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- building blocks


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    """k×k conv, reflect padding to keep 'same' size at stride 1 (halve it at stride 2)."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, padding_mode="reflect")


def _norm(ch: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(ch, affine=False)


class _ResBlock(nn.Module):
    """conv–IN–ReLU–conv–IN plus the input (encoder residual block)."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(_conv(ch, ch, 3), _norm(ch), nn.ReLU(inplace=True), _conv(ch, ch, 3), _norm(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _ContentEncoder(nn.Module):
    """Domain-specific part of a content encoder (all but the shared last residual block)."""

    def __init__(self, cfg: DritConfig):
        super().__init__()
        w = cfg.width
        layers: list[nn.Module] = [_conv(1, w, 7), _norm(w), nn.ReLU(inplace=True)]
        ch = w
        for _ in range(cfg.downsamples):
            layers += [_conv(ch, 2 * ch, 3, stride=2), _norm(2 * ch), nn.ReLU(inplace=True)]
            ch *= 2
        layers += [_ResBlock(ch) for _ in range(cfg.content_blocks - 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _AttributeEncoder(nn.Module):
    """Conv stack without normalisation, global average pool, heads for μ and log σ²."""

    STAGES = 4

    def __init__(self, cfg: DritConfig):
        super().__init__()
        w = cfg.width
        layers: list[nn.Module] = [_conv(1, w, 7), nn.ReLU(inplace=True)]
        ch = w
        for i in range(self.STAGES):
            out = min(2 * ch, 4 * w)
            layers += [_conv(ch, out, 3, stride=2), nn.ReLU(inplace=True)]
            ch = out
        self.net = nn.Sequential(*layers)
        self.mu = nn.Linear(ch, cfg.attr_dim)
        self.logvar = nn.Linear(ch, cfg.attr_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x).mean(dim=(-2, -1))
        return self.mu(h), self.logvar(h)


class _Modulation(nn.Module):
    """Per-channel scale and shift from the attribute: ``h·(1 + γ) + β``; the head starts at zero."""

    def __init__(self, hidden: int, ch: int):
        super().__init__()
        self.head = nn.Linear(hidden, 2 * ch)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, h: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.head(code)[:, :, None, None].chunk(2, dim=1)
        return h * (1.0 + gamma) + beta


class _Noise(nn.Module):
    """Adds one N(0, 1) map per image, scaled per channel by a learned weight that starts at 0."""

    def __init__(self, ch: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1, ch, 1, 1))

    def forward(self, h: torch.Tensor, generator: Generators) -> torch.Tensor:
        b, _, hh, ww = h.shape
        if generator is None or isinstance(generator, torch.Generator):
            noise = torch.randn((b, 1, hh, ww), generator=generator, device=h.device, dtype=h.dtype)
        else:
            gens = list(generator)
            if len(gens) != b:
                raise ValueError(f"got {len(gens)} generators for a batch of {b}")
            noise = torch.cat([torch.randn((1, 1, hh, ww), generator=g, device=h.device, dtype=h.dtype) for g in gens])
        return h + self.scale * noise


class _GenResBlock(nn.Module):
    """conv–IN–mod–ReLU–conv–IN–mod plus the input; ``mod`` = attribute scale/shift."""

    def __init__(self, ch: int, hidden: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(ch, ch, 3), _conv(ch, ch, 3)
        self.norm1, self.norm2 = _norm(ch), _norm(ch)
        self.mod1, self.mod2 = _Modulation(hidden, ch), _Modulation(hidden, ch)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.mod1(self.norm1(self.conv1(x)), code))
        h = self.mod2(self.norm2(self.conv2(h)), code)
        return x + h


class _UpStage(nn.Module):
    """1×1 conv (cin → cout), ×2 nearest upsampling, 3×3 conv, [noise], IN, attribute scale/shift, ReLU.

    Halving the channels before upsampling rather than after halves the cost of the
    full-resolution 3×3 conv (a 1×1 conv commutes with nearest upsampling).
    """

    def __init__(self, cin: int, cout: int, hidden: int, noise: bool):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 1)
        self.conv = _conv(cout, cout, 3)
        self.noise = _Noise(cout) if noise else None
        self.norm = _norm(cout)
        self.mod = _Modulation(hidden, cout)

    def forward(self, x: torch.Tensor, code: torch.Tensor, noise: bool, generator: Generators) -> torch.Tensor:
        h = self.conv(F.interpolate(self.proj(x), scale_factor=2.0, mode="nearest"))
        if self.noise is not None and noise:
            h = self.noise(h, generator)
        return F.relu(self.mod(self.norm(h), code))


class _Generator(nn.Module):
    MLP_HIDDEN = 128

    def __init__(self, cfg: DritConfig):
        super().__init__()
        ch, hidden = cfg.content_channels, self.MLP_HIDDEN
        self.mlp = nn.Sequential(
            nn.Linear(cfg.attr_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True)
        )
        self.blocks = nn.ModuleList([_GenResBlock(ch, hidden) for _ in range(cfg.gen_blocks)])
        ups = []
        for _ in range(cfg.downsamples):
            ups.append(_UpStage(ch, ch // 2, hidden, cfg.noise_inputs))
            ch //= 2
        self.ups = nn.ModuleList(ups)
        self.out = _conv(ch, 1, 7)

    def forward(self, c: torch.Tensor, a: torch.Tensor, noise: bool, generator: Generators) -> torch.Tensor:
        """Raw (unbounded) one-channel output r at full resolution."""
        code = self.mlp(a)
        h = c
        for block in self.blocks:
            h = block(h, code)
        for up in self.ups:
            h = up(h, code, noise, generator)
        # the output layer runs in float32 even under autocast: the image is the product
        with torch.autocast(h.device.type, enabled=False):
            return self.out(h.float())


# --------------------------------------------------------------------------- generator side


class Drit(nn.Module):
    """Content encoders (last block shared), attribute encoders and generators of both domains."""

    def __init__(self, cfg: DritConfig):
        super().__init__()
        self.cfg = cfg
        self.content_enc = nn.ModuleDict({d: _ContentEncoder(cfg) for d in DOMAINS})
        self.content_shared = _ResBlock(cfg.content_channels)
        self.attr_enc = nn.ModuleDict({d: _AttributeEncoder(cfg) for d in DOMAINS})
        self.gen = nn.ModuleDict({d: _Generator(cfg) for d in DOMAINS})
        if cfg.residual_prior:  # the exp generator starts as the identity on its base image
            nn.init.zeros_(self.gen["exp"].out.weight)
            nn.init.zeros_(self.gen["exp"].out.bias)

    def check_size(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is (B, 1, H, W) with H, W multiples of ``2 ** downsamples``."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(x.shape)}")
        m = self.cfg.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(
                f"image size {x.shape[-2]}×{x.shape[-1]} is not a multiple of {m} (2**downsamples); pad or crop it first"
            )

    def content(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """Content map (B, C, H/2**d, W/2**d): the domain's own layers, then the shared last block."""
        self.check_size(x)
        return self.content_shared(self.content_enc[_check_domain(domain)](x))

    def attribute(self, x: torch.Tensor, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of the attribute posterior, each (B, attr_dim)."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(x.shape)}")
        mu, logvar = self.attr_enc[_check_domain(domain)](x)
        return mu.float(), logvar.float()  # float32 under autocast too: the KL and the codes want it

    @staticmethod
    def sample_attribute(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample ``μ + σ·ε``, ε ~ N(0, I) (log σ² clamped to [−20, 10] for safety)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar.clamp(-20.0, 10.0)) * eps

    def generate(
        self,
        c: torch.Tensor,
        a: torch.Tensor,
        domain: str,
        base: torch.Tensor | None = None,
        *,
        noise: bool = True,
        generator: Generators = None,
    ) -> torch.Tensor:
        """Image (B, 1, H, W) of ``domain`` from content ``c`` and attribute ``a`` (B, attr_dim).

        H, W = 2**downsamples × the content map size, i.e. the size of the image ``c`` was
        encoded from. With ``cfg.residual_prior`` and ``base`` (B, 1, H, W) given, the output
        is ``base + RESIDUAL_LIMIT·tanh(r)``; otherwise ``lo + (hi − lo)·sigmoid(r)`` with
        ``(lo, hi) = OUTPUT_RANGE``.

        Only with ``cfg.noise_inputs`` (off by default) is the output random given (c, a):
        ``noise=False`` then switches the noise inputs off, and ``generator`` (one
        ``torch.Generator`` for the batch, or a sequence of one per image, so that each
        image's noise depends only on its own generator) draws them reproducibly; the
        default ``None`` uses torch's global generator. Without noise inputs both
        arguments are ignored and the output is a deterministic function of (c, a, base).
        """
        _check_domain(domain)
        if c.dim() != 4 or c.shape[1] != self.cfg.content_channels:
            raise ValueError(f"content map must be (B, {self.cfg.content_channels}, h, w), got {tuple(c.shape)}")
        if a.shape != (c.shape[0], self.cfg.attr_dim):
            raise ValueError(f"attribute must be ({c.shape[0]}, {self.cfg.attr_dim}), got {tuple(a.shape)}")
        r = self.gen[domain](c, a, noise, generator)
        if self.cfg.residual_prior and base is not None:
            if base.shape != r.shape:
                raise ValueError(f"base must have the output shape {tuple(r.shape)}, got {tuple(base.shape)}")
            return base + RESIDUAL_LIMIT * torch.tanh(r)
        lo, hi = OUTPUT_RANGE
        return lo + (hi - lo) * torch.sigmoid(r)


# --------------------------------------------------------------------------- discriminator side


def _sn_conv(cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if padding is None else padding))


class _PatchGAN(nn.Module):
    def __init__(self, cin: int, width: int, layers: int):
        super().__init__()
        mods: list[nn.Module] = []
        ch = cin
        for i in range(layers):
            out = min(width * 2**i, 8 * width)
            mods += [_sn_conv(ch, out, 4, stride=2, padding=1), nn.LeakyReLU(_LEAK, inplace=True)]
            ch = out
        mods.append(_sn_conv(ch, 1, 3))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _MultiScale(nn.Module):
    def __init__(self, cfg: DritConfig):
        super().__init__()
        self.scales = nn.ModuleList([_PatchGAN(1, cfg.width, cfg.disc_layers) for _ in range(cfg.disc_scales)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


class _PooledCritic(nn.Module):
    """Strided SN convs, LeakyReLU, global average pool, linear → one logit per image."""

    def __init__(self, channels: list[int], strides: list[int]):
        super().__init__()
        mods: list[nn.Module] = []
        for cin, cout, s in zip(channels[:-1], channels[1:], strides):
            mods += [_sn_conv(cin, cout, 3, stride=s), nn.LeakyReLU(_LEAK, inplace=True)]
        self.net = nn.Sequential(*mods)
        self.head = spectral_norm(nn.Linear(channels[-1], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x).mean(dim=(-2, -1))).squeeze(1)


def _frequency_coordinates(h: int, w_half: int, device, dtype) -> torch.Tensor:
    """(1, 3, h, w_half): |f| / f_Nyq, |f_y| / f_Nyq, |f_x| / f_Nyq on the fftshifted rfft grid."""
    fy = torch.fft.fftshift(torch.fft.fftfreq(h, device=device, dtype=dtype)).abs() * 2.0
    fx = torch.arange(w_half, device=device, dtype=dtype) / max(2 * (w_half - 1), 1) * 2.0
    gy, gx = torch.meshgrid(fy, fx, indexing="ij")
    return torch.stack([torch.sqrt(gy**2 + gx**2), gy, gx])[None]


class Discriminators(nn.Module):
    """Multi-scale domain discriminators for both domains, the content discriminator and the
    optional spectrum discriminator (see the module docstring)."""

    def __init__(self, cfg: DritConfig):
        super().__init__()
        self.cfg = cfg
        self.domain_d = nn.ModuleDict({d: _MultiScale(cfg) for d in DOMAINS})
        ch = cfg.content_channels
        self.content_d = _PooledCritic([ch, ch, ch, ch], [2, 2, 1])
        w = cfg.width
        self.spectrum_d = _PooledCritic([4, w, 2 * w, 4 * w, 4 * w], [2, 2, 2, 1]) if cfg.spectrum_discriminator else None
        self.residual_d = _PatchGAN(2, w, cfg.disc_layers) if cfg.residual_discriminator else None

    def domain(self, x: torch.Tensor, domain: str) -> list[torch.Tensor]:
        """PatchGAN logits of a ``domain`` image at each scale: [(B, 1, h0, w0), (B, 1, h1, w1), …]."""
        return [logits.float() for logits in self.domain_d[_check_domain(domain)](x)]

    def content(self, c: torch.Tensor) -> torch.Tensor:
        """(B,) logits: is the content map ``c`` from the sim domain?"""
        return self.content_d(c).float()

    def spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) logits: is the log power spectrum of ``x`` that of a real exp-domain image?"""
        if self.spectrum_d is None:
            raise RuntimeError("spectrum discriminator is off (DritConfig.spectrum_discriminator=False)")
        s = log_spectrum(x)
        coords = _frequency_coordinates(s.shape[-2], s.shape[-1], s.device, s.dtype).expand(s.shape[0], -1, -1, -1)
        return self.spectrum_d(torch.cat([s, coords], dim=1)).float()


    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """PatchGAN logits (B, 1, h, w) on the noise space of ``x``: is this a real exp-domain image's noise?"""
        if self.residual_d is None:
            raise RuntimeError("residual discriminator is off (DritConfig.residual_discriminator=False)")
        return self.residual_d(noise_space(x)).float()


def noise_space(x: torch.Tensor, sigma_px: float = 1.0) -> torch.Tensor:
    """(B, 2, H, W): ``x − G_σ * x`` (noise and the finest structure) and ``G_σ * x`` (the local level)."""
    smooth = lowpass(x, sigma_px)
    return torch.cat([x - smooth, smooth], dim=1)


def parameter_counts(cfg: DritConfig | None = None) -> dict[str, int]:
    """Trainable parameters by part, for a config (default: ``DritConfig()``)."""
    cfg = cfg or DritConfig()
    g, d = Drit(cfg), Discriminators(cfg)
    counts = {
        "content_encoders": count_parameters(g.content_enc) + count_parameters(g.content_shared),
        "content_shared_block": count_parameters(g.content_shared),
        "attribute_encoders": count_parameters(g.attr_enc),
        "generators": count_parameters(g.gen),
        "drit_total": count_parameters(g),
        "domain_discriminators": count_parameters(d.domain_d),
        "content_discriminator": count_parameters(d.content_d),
    }
    if d.spectrum_d is not None:
        counts["spectrum_discriminator"] = count_parameters(d.spectrum_d)
    if d.residual_d is not None:
        counts["residual_discriminator"] = count_parameters(d.residual_d)
    counts["discriminators_total"] = count_parameters(d)
    return counts
