"""Label-preserving corruption of training batches, shared by the regression and segmentation trainers.

Every transform here leaves the labels true: random crops (a translation of the window,
applied to the masks alike), Gaussian noise, a smooth contamination field, dark point
defects and blanked rectangles (holes and masks). The last two hide atoms, so they are for
regression only (a segmentation label would then mark atoms that cannot be seen).
Randomness comes from one seeded ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


class Standardise(nn.Module):
    """Per-image zero mean and unit standard deviation (part of every model, so inference
    sees images exactly as training did)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
        return (x - mean) / std


@dataclass
class Augmentation:
    """Strengths and probabilities (per image) of the corruptions."""

    crop_fraction: float = 0.875
    noise_max: float = 0.3  # Gaussian noise σ, up to this fraction of the image's std
    contamination_max: float = 0.5  # amplitude of a smooth field, in image stds
    mask_probability: float = 0.25  # a blanked rectangle of 5-20 % of the area
    defect_probability: float = 0.25  # 1-4 dark dips of column size

    def to_dict(self) -> dict:
        return asdict(self)


def crop_size(side_px: int, fraction: float, multiple: int = 8) -> int:
    """The crop side: ``fraction`` of ``side_px``, rounded down to ``multiple`` (at least one multiple)."""
    return max(multiple, int(side_px * fraction) // multiple * multiple)


def random_crops(tensors: list[torch.Tensor], size: tuple[int, int], g: torch.Generator) -> list[torch.Tensor]:
    """The same random window of ``size`` from every (B, C, H, W) tensor, per sample."""
    b, _, h, w = tensors[0].shape
    ch, cw = size
    rows = torch.randint(0, h - ch + 1, (b,), generator=g).tolist()
    cols = torch.randint(0, w - cw + 1, (b,), generator=g).tolist()
    return [torch.stack([t[i, :, r : r + ch, c : c + cw] for i, (r, c) in enumerate(zip(rows, cols))]) for t in tensors]


def corrupt(x: torch.Tensor, aug: Augmentation, pixel_size_A: float, g: torch.Generator, hide_atoms: bool = True) -> torch.Tensor:
    """Standardise a (B, 1, h, w) batch and add contamination, noise and (``hide_atoms``)
    point defects and blanked rectangles."""
    b, _, ch, cw = x.shape
    x = Standardise()(x.float())
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    field = nn.functional.interpolate(torch.randn(b, 1, 4, 4, generator=g), size=(ch, cw), mode="bicubic", align_corners=False)
    x = x + aug.contamination_max * u(b, 1, 1, 1) * field
    if hide_atoms:
        yy, xx = torch.meshgrid(torch.arange(ch, dtype=torch.float32), torch.arange(cw, dtype=torch.float32), indexing="ij")
        sigma_px = 0.4 / pixel_size_A
        for i in torch.nonzero(u(b) < aug.defect_probability).flatten().tolist():
            for _ in range(int(torch.randint(1, 5, (1,), generator=g))):
                r0, c0 = float(u(1)) * ch, float(u(1)) * cw
                x[i, 0] -= 1.5 * torch.exp(-((yy - r0) ** 2 + (xx - c0) ** 2) / (2 * sigma_px**2))
        for i in torch.nonzero(u(b) < aug.mask_probability).flatten().tolist():
            area = 0.05 + 0.15 * float(u(1))
            aspect = math.exp(float(u(1)) - 0.5)
            mh = min(ch, max(2, int(round(math.sqrt(area * ch * cw * aspect)))))
            mw = min(cw, max(2, int(round(area * ch * cw / mh))))
            r0 = int(torch.randint(0, ch - mh + 1, (1,), generator=g))
            c0 = int(torch.randint(0, cw - mw + 1, (1,), generator=g))
            x[i, 0, r0 : r0 + mh, c0 : c0 + mw] = x[i, 0].mean()
    return x + aug.noise_max * u(b, 1, 1, 1) * torch.randn(x.shape, generator=g)


def augment_batch(images: torch.Tensor, aug: Augmentation, pixel_size_A: float, g: torch.Generator) -> torch.Tensor:
    """Regression: a random crop of every image, standardised and corrupted."""
    _, _, h, w = images.shape
    (x,) = random_crops([images], (crop_size(h, aug.crop_fraction), crop_size(w, aug.crop_fraction)), g)
    return corrupt(x, aug, pixel_size_A, g, hide_atoms=True)
