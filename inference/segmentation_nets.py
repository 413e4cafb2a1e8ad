"""Segmentation networks: a U-Net and the layer-resolved Gomb-Net.

Inputs ``(B, 1, H, W)``, outputs LOGITS ``(B, C, H, W)``, any ``H, W`` divisible by
``model.size_multiple`` (``2**depth``).

:class:`UNet`
    One encoder, one decoder, ``C = out_channels`` mask channels.
:class:`GombNet`
    One shared encoder and ``n_layers`` decoder branches of ``K`` channels each; branch
    ``b`` fills channels ``[b*K:(b+1)*K]`` (papers/000). Which branch ends up with which
    physical layer is not fixed: a projection cannot tell the layers' order, so the loss
    (:func:`inference.segmentation_losses.gomb_loss`) does not care either.

The layer-blocked channel layout matches the order of the data factory's mask channels
(``L1:...`` first, then ``L2:...``) whenever every layer has the same ``K`` classes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["UNet", "GombNet"]

# ---------------------------------------------------------------------------------------
# Network blocks (shared by UNet and GombNet)
# ---------------------------------------------------------------------------------------


class _DoubleConv(nn.Sequential):
    """Two (3x3 conv, padding 1 -> BatchNorm -> ReLU) stages; keeps the spatial size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def _level_widths(base_width: int, depth: int) -> list[int]:
    """Feature widths of the encoder levels then the bottleneck: ``base_width * 2**k``, k = 0..depth."""
    return [base_width * 2**k for k in range(depth + 1)]


class _Encoder(nn.Module):
    """``depth`` (double conv -> 2x2 max-pool) levels, then a double-conv bottleneck with dropout.

    ``forward`` returns ``(bottleneck, skips)``; ``skips[k]`` is level k's output before pooling.
    """

    def __init__(self, in_channels: int, base_width: int, depth: int, dropout: float):
        super().__init__()
        widths = _level_widths(base_width, depth)
        inputs = [in_channels] + widths[:-1]
        self.levels = nn.ModuleList(_DoubleConv(i, o) for i, o in zip(inputs[:-1], widths[:-1]))
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = _DoubleConv(inputs[-1], widths[-1])
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for level in self.levels:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        return self.dropout(self.bottleneck(x)), skips


class _Decoder(nn.Module):
    """Mirror of :class:`_Encoder`: 2x2 stride-2 transposed conv, concatenate the skip, double conv;
    finally a 1x1 conv to ``out_channels`` logits."""

    def __init__(self, out_channels: int, base_width: int, depth: int):
        super().__init__()
        widths = _level_widths(base_width, depth)
        self.ups = nn.ModuleList()
        self.convs = nn.ModuleList()
        for k in reversed(range(depth)):
            self.ups.append(nn.ConvTranspose2d(widths[k + 1], widths[k], kernel_size=2, stride=2))
            self.convs.append(_DoubleConv(2 * widths[k], widths[k]))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        for up, conv, skip in zip(self.ups, self.convs, reversed(skips)):
            x = conv(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def _check_args(in_channels: int, out_channels: int, base_width: int, depth: int, dropout: float) -> None:
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("base_width", base_width)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if int(depth) != depth or depth < 0:
        raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def _check_input(x: torch.Tensor, in_channels: int, size_multiple: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected input of shape (B, {in_channels}, H, W), got {tuple(x.shape)}")
    height_px, width_px = x.shape[-2:]
    if height_px % size_multiple or width_px % size_multiple:
        raise ValueError(f"H and W must be multiples of {size_multiple}, got {height_px}x{width_px}")


class UNet(nn.Module):
    """U-Net for per-class atom masks; returns logits.

    Parameters
    ----------
    in_channels : int
        Image channels (1 for an ADF image).
    out_channels : int
        Mask channels C; the output is ``(B, C, H, W)`` logits (apply a sigmoid for probabilities).
    base_width : int
        Feature channels of the first level; level k has ``base_width * 2**k``, the bottleneck
        ``base_width * 2**depth``.
    depth : int
        Number of 2x2 poolings; H and W must be multiples of ``size_multiple = 2**depth``.
    dropout : float
        Dropout probability applied to the bottleneck features.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_width: int = 32, depth: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        _check_args(in_channels, out_channels, base_width, depth, dropout)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.size_multiple = 2 ** int(depth)
        self.encoder = _Encoder(in_channels, base_width, depth, dropout)
        self.decoder = _Decoder(out_channels, base_width, depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, in_channels, H, W) -> logits (B, out_channels, H, W)."""
        _check_input(x, self.in_channels, self.size_multiple)
        return self.decoder(*self.encoder(x))


class GombNet(nn.Module):
    """Multi-branch U-Net: one shared encoder, one decoder branch per layer (papers/000).

    Parameters
    ----------
    in_channels : int
        Image channels (1 for an ADF image).
    classes_per_layer : int
        K, the mask channels each branch produces.
    n_layers : int
        Number of decoder branches (one per physical layer).
    base_width, depth : int
        As for :class:`UNet`; every branch mirrors the shared encoder.
    dropout : float
        Dropout on the shared bottleneck features (the paper used 0.2 and 0.423).

    Notes
    -----
    ``forward`` returns ``(B, n_layers*K, H, W)`` logits, branch b in channels ``[b*K:(b+1)*K]``.
    Branch b is not tied to a particular physical layer; train with :func:`gomb_loss`.
    """

    def __init__(self, in_channels: int = 1, classes_per_layer: int = 1, n_layers: int = 2, base_width: int = 32,
                 depth: int = 4, dropout: float = 0.2):
        super().__init__()
        _check_args(in_channels, classes_per_layer, base_width, depth, dropout)
        if int(n_layers) != n_layers or n_layers < 1:
            raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
        self.in_channels = int(in_channels)
        self.classes_per_layer = int(classes_per_layer)
        self.n_layers = int(n_layers)
        self.out_channels = self.n_layers * self.classes_per_layer
        self.size_multiple = 2 ** int(depth)
        self.encoder = _Encoder(in_channels, base_width, depth, dropout)
        self.branches = nn.ModuleList(_Decoder(classes_per_layer, base_width, depth) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, in_channels, H, W) -> logits (B, n_layers*K, H, W), layer-blocked by branch."""
        _check_input(x, self.in_channels, self.size_multiple)
        bottleneck, skips = self.encoder(x)
        return torch.cat([branch(bottleneck, skips) for branch in self.branches], dim=1)
