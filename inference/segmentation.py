"""Layer-resolved atom segmentation: train a U-Net or a Gomb-Net on a dataset's masks.

The networks live in :mod:`inference.segmentation_nets`, the losses in
:mod:`inference.segmentation_losses` and the reading of atoms off probability maps in
:mod:`inference.atom_points`; this module reads datasets, trains, and wraps a trained
model as a :class:`Segmenter` (as :mod:`inference.regression` does for a :class:`Regressor`).

Mask channels are named ``L<n>:<content>`` (layer n, column content). A U-Net predicts every
channel as stored. A Gomb-Net has one decoder branch per layer, each predicting the same
contents, and is trained with the groupwise combinatorial loss, which takes the better
assignment of branches to layers: which layer is on top cannot be seen in a projection.
The targets are the masks scaled to [0, 1] (anti-aliased disks stay soft at their rims).
Atoms are read off the probability maps as sub-pixel blob centroids per channel.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datafactory.errors import FactoryError

from .training_augment import Augmentation, Standardise, corrupt, crop_size, random_crops

ARCHS = ("unet", "gombnet")
CLASS_MODES = ("exclusive", "independent")
_LAYER = re.compile(r"^L(\d+):(.+)$")


def layer_groups(channel_names: list[str]) -> tuple[list[int], list[str], list[int]]:
    """(layers, contents, order): the layer numbers, the contents every layer shares, and the
    channel order that blocks the channels by layer (``order[b*K + k]`` is the stored channel of
    layer ``layers[b]`` and content ``contents[k]``). Raises when the layers' contents differ."""
    parsed = []
    for name in channel_names:
        m = _LAYER.match(name)
        if not m:
            raise FactoryError(f"mask channel '{name}' is not named L<layer>:<content>")
        parsed.append((int(m.group(1)), m.group(2)))
    layers = sorted({layer for layer, _ in parsed})
    contents = [c for layer, c in parsed if layer == layers[0]]
    index = {(layer, c): i for i, (layer, c) in enumerate(parsed)}
    order = []
    for layer in layers:
        mine = [c for l2, c in parsed if l2 == layer]
        if sorted(mine) != sorted(contents):
            raise FactoryError(f"gombnet: layer {layer} has columns {mine}, layer {layers[0]} has {contents}; a Gomb-Net needs the same per layer", field="arch")
        order += [index[(layer, c)] for c in contents]
    return layers, contents, order


def build_segmenter(arch: str, n_channels: int, n_layers: int, width: int, depth: int) -> torch.nn.Module:
    from .segmentation_nets import GombNet, UNet

    if arch == "unet":
        net = UNet(in_channels=1, out_channels=n_channels, base_width=width, depth=depth)
    elif arch == "gombnet":
        net = GombNet(in_channels=1, classes_per_layer=n_channels // n_layers, n_layers=n_layers, base_width=width, depth=depth)
    else:
        raise FactoryError(f"must be one of {', '.join(ARCHS)} (got '{arch}')", field="arch")
    model = torch.nn.Sequential(Standardise(), net)
    model.size_multiple = net.size_multiple
    return model


#: Largest foreground weight a rare channel gets (see :func:`balanced_pos_weight`).
MAX_POS_WEIGHT = 10.0


def channel_fractions(dataset, order: list[int], max_value: float, n_samples: int = 64) -> np.ndarray:
    """Foreground share of every channel (in ``order``), from up to ``n_samples`` samples spread over ``dataset``."""
    if len(dataset) == 0:
        return np.zeros(len(order))
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(n_samples, len(dataset))).astype(int))
    total = np.zeros(len(order))
    for k in picks:
        total += (dataset[int(k)]["masks"].numpy()[order] >= max_value / 2).mean(axis=(1, 2))
    return total / len(picks)


def balanced_pos_weight(fractions: np.ndarray) -> torch.Tensor:
    """Per-channel foreground weight ``sqrt(f_max / f_c)``, clipped to [1, MAX_POS_WEIGHT]: the
    largest channel keeps weight 1; a channel absent from the sample gets the maximum."""
    f = np.asarray(fractions, dtype=np.float64)
    top = f.max() if f.size and f.max() > 0 else 1.0
    w = np.sqrt(top / np.maximum(f, top / MAX_POS_WEIGHT**2))
    return torch.tensor(np.clip(w, 1.0, MAX_POS_WEIGHT), dtype=torch.float32)


def batch_pooled(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (1, C, B·H, W): a Dice over the whole batch per channel. A rare column
    class (a vacancy, a dopant) is absent from many single images, where a per-image Dice
    stays near 1 whatever the network does; pooled, it measures how well the class is found."""
    b, c, h, w = x.shape
    return x.transpose(0, 1).reshape(1, c, b * h, w)


class Segmenter:
    """A trained segmentation MODEL: probability maps and atom positions for any image size."""

    def __init__(self, model: torch.nn.Module, record: dict[str, Any], device: str = "cpu"):
        from .columns import layer_groups_of

        self.model, self.record, self.device = model.to(device).eval(), record, device
        self.pixel_size_A = float(record["pixel_size_A"])
        self.channel_names: list[str] = list(record["output_channels"])
        self.size_multiple = int(record["size_multiple"])
        # models trained before the exclusive head have independent sigmoid outputs
        self.exclusive = record.get("loss", {}).get("classes") == "exclusive"
        self.groups = layer_groups_of(self.channel_names)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits → probabilities: one softmax per layer (exclusive classes) or a sigmoid per channel."""
        if self.exclusive:
            from .exclusive import layer_softmax

            return layer_softmax(logits, self.groups)
        return torch.sigmoid(logits)

    def probabilities(self, images: np.ndarray, batch: int = 8) -> np.ndarray:
        """(B, H, W) images → (B, C, H, W) float32 probabilities (reflect-padded to the
        network's size multiple and cropped back)."""
        images = np.asarray(images, dtype=np.float32)
        _, h, w = images.shape
        m = self.size_multiple
        pad = ((0, 0), (0, (-h) % m), (0, (-w) % m))
        padded = np.pad(images, pad, mode="reflect") if any(p[1] for p in pad) else images
        out = []
        with torch.inference_mode():
            for lo in range(0, len(padded), batch):
                x = torch.from_numpy(np.ascontiguousarray(padded[lo : lo + batch, None])).to(self.device)
                out.append(self.activate(self.model(x).float()).cpu().numpy()[:, :, :h, :w])
        return np.concatenate(out) if out else np.zeros((0, len(self.channel_names), h, w), np.float32)

    def columns(self, probabilities: np.ndarray, threshold: float = 0.5):
        """One (C, H, W) probability stack → :class:`inference.columns.ColumnTable`: every column
        found once per layer, with its most probable class and the per-class probabilities."""
        from .columns import decode_columns

        min_area = max(2, int(0.25 * math.pi * (0.3 / self.pixel_size_A) ** 2))
        return decode_columns(probabilities, self.channel_names, threshold=threshold, min_area_px=min_area)

    def atoms(self, probabilities: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
        """One (C, H, W) probability stack → channel name → (N, 2) sub-pixel (row, col) centres
        of the columns decoded as that class (:meth:`columns`)."""
        return self.columns(probabilities, threshold).points()


def load_segmenter(path: Path, record: dict[str, Any], device: str = "cpu") -> Segmenter:
    from .checkpoint import load_weights

    model = build_segmenter(record["arch"], len(record["output_channels"]), int(record["n_layers"]), int(record["width"]), int(record["depth"]))
    return Segmenter(load_weights(path, model), record, device)


def train_segmentation(
    data: Path,
    out: Path,
    *,
    arch: str = "unet",
    width: int = 16,
    depth: int = 3,
    settings=None,
    augmentation: Augmentation | None = None,
    fp_weight: float = 1.0,
    val_samples: int = 64,
    class_balance: bool = True,
    classes: str = "exclusive",
    progress: bool = True,
) -> tuple[Path, dict, torch.nn.Module]:
    """Train a U-Net or Gomb-Net on the masks of dataset ``data``; saves MODEL ``out``; returns (out, record, model).

    ``classes`` (U-Net): ``exclusive`` (default) trains one softmax per layer over "no column"
    and the layer's classes (:mod:`inference.exclusive`), so the classes of a site compete;
    ``independent`` one sigmoid per channel (the Gomb-Net always).

    With ``class_balance`` (U-Net) the cross-entropy weighs each channel's foreground pixels by
    :func:`balanced_pos_weight` of the channel's share of the masks, so a rare class (a vacancy,
    a dopant) pulls on the network as hard as a common one from the first step on. The weight
    also raises the rare classes' probabilities; the probabilities are used as they come out:
    shifting each channel's logit back by ``ln(weight)`` suppressed the single-S vacancies
    entirely (synthetic S1 F1 0.925 without the shift, 0.0 with it, same model).
    """
    from .checkpoint import check_output, dataset_hash, save_model, training_directory
    from .data import ShardDataset
    from .columns import layer_groups_of
    from .exclusive import exclusive_loss, layer_softmax
    from .segmentation_losses import dice_loss, gomb_loss, soft_dice_loss
    from .training import Checkpointing, TrainSettings, fit, seed_everything, seeded_generator, seeded_loader

    settings = settings or TrainSettings(epochs=10, batch=16)
    seed_everything(settings.seed)
    augmentation = augmentation or Augmentation()
    if arch not in ARCHS:
        raise FactoryError(f"must be one of {', '.join(ARCHS)} (got '{arch}')", field="arch")
    if classes not in CLASS_MODES:
        raise FactoryError(f"must be one of {', '.join(CLASS_MODES)} (got '{classes}')", field="classes")
    check_output(out)
    train_set = ShardDataset(data, split="train", fields=("image", "masks"))
    if len(train_set) == 0:
        raise FactoryError(f"'{data}' has no training samples", field="data")
    pixel_size_A = train_set.pixel_size_A
    if not math.isfinite(pixel_size_A):
        raise FactoryError(f"'{data}' mixes pixel sizes; segmentation needs one (generate it with `resample=True`)", field="data")
    names = train_set.channel_names
    max_value = float(train_set.mask_max_value)
    if arch == "gombnet":
        layers, contents, order = layer_groups(names)
        if len(layers) < 2:
            raise FactoryError("gombnet: the dataset has one layer; use `arch='unet'`", field="arch")
    else:
        layers, order = sorted({int(_LAYER.match(n).group(1)) for n in names if _LAYER.match(n)}) or [1], list(range(len(names)))
    output_channels = [names[i] for i in order]
    n_layers = len(layers) if arch == "gombnet" else 1
    model = build_segmenter(arch, len(names), n_layers, width, depth)
    multiple = model.size_multiple
    h, w = train_set.image_shape
    crop = (crop_size(h, augmentation.crop_fraction, multiple), crop_size(w, augmentation.crop_fraction, multiple))
    order_t = torch.tensor(order)
    g = seeded_generator(settings.seed, "augment")
    loader = seeded_loader(train_set, settings)

    def batches(epoch):
        yield from loader

    fractions = channel_fractions(train_set, order, max_value)
    pos_weight = balanced_pos_weight(fractions) if class_balance and arch != "gombnet" else torch.ones(len(order))
    exclusive = arch == "unet" and classes == "exclusive"
    groups = layer_groups_of(output_channels)

    def loss_fn(net, batch, dev):
        x, masks = random_crops([batch["image"], batch["masks"]], crop, g)
        x = corrupt(x, augmentation, pixel_size_A, g, hide_atoms=False).to(dev, memory_format=torch.channels_last)
        target = (masks[:, order_t].float() / max_value).to(dev)
        logits = net(x).float()
        if arch == "gombnet":
            return gomb_loss(logits, target, n_layers, fp_weight=fp_weight)
        if exclusive:
            ce = exclusive_loss(logits, target, groups, pos_weight.to(dev))
            return ce + soft_dice_loss(batch_pooled(layer_softmax(logits, groups)), batch_pooled(target), fp_weight=fp_weight)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight.to(dev)[:, None, None])
        return bce + dice_loss(batch_pooled(logits), batch_pooled(target), fp_weight=fp_weight)

    val_set = ShardDataset(data, split="val", fields=("image", "masks"))
    picks = np.linspace(0, len(val_set) - 1, min(val_samples, len(val_set))).astype(int) if len(val_set) else []
    val_items = [val_set[int(k)] for k in picks]

    def validate(net):
        if not val_items:
            return {}
        from .atom_points import pixel_scores

        seg = Segmenter(net, {"pixel_size_A": pixel_size_A, "output_channels": output_channels, "size_multiple": multiple,
                              "loss": {"classes": "exclusive" if exclusive else "independent"}}, next(net.parameters()).device.type)
        probs = seg.probabilities(np.stack([it["image"][0].numpy() for it in val_items]))
        truth = np.stack([it["masks"].numpy()[order] for it in val_items]) >= max_value / 2
        iou = [pixel_scores(p >= 0.5, t)["mean_iou"] for p, t in zip(probs, truth)]
        return {"val_iou": float(np.mean(iou))}

    checkpointing = Checkpointing(
        training_directory(out),
        {"task": "segment", "arch": arch, "width": width, "depth": depth, "classes": classes, "class_balance": bool(class_balance),
         "fp_weight": fp_weight, "dataset": dataset_hash(train_set.manifest), "settings": settings.to_dict(),
         "augmentation": augmentation.to_dict(), "val_samples": val_samples},
        epoch_generators={"loader": loader.generator}, step_generators={"augment": g})
    history = fit(model, batches, loss_fn, settings, len(loader), validate=validate, progress=progress, desc=f"train {arch}",
                  checkpointing=checkpointing)
    record = {
        "task": "segment",
        "arch": arch,
        "width": width,
        "depth": depth,
        "size_multiple": multiple,
        "n_layers": n_layers,
        "layers": layers,
        "channel_names": names,
        "output_channels": output_channels,
        "mask_max_value": max_value,
        "pixel_size_A": pixel_size_A,
        "image_shape": list(train_set.image_shape),
        "dataset": {"path": str(Path(data).resolve()), "sha256": dataset_hash(train_set.manifest), "n_train": len(train_set), "style": train_set.manifest.get("style"),
                    "config": train_set.manifest.get("config"), "channel_names": train_set.channel_names},
        "settings": settings.to_dict(),
        "augmentation": {**augmentation.to_dict(), "hide_atoms": False},
        "loss": {"fp_weight": fp_weight, "classes": "exclusive" if exclusive else "independent",
                 "form": "groupwise combinatorial Dice" if arch == "gombnet" else
                 ("per-layer softmax cross-entropy + batch-pooled Dice" if exclusive else "BCE + batch-pooled Dice"),
                 "class_balance": bool(class_balance) and arch != "gombnet",
                 "channel_fractions": {output_channels[k]: float(f) for k, f in enumerate(fractions)},
                 "pos_weight": {output_channels[k]: float(w) for k, w in enumerate(pos_weight)} if arch != "gombnet" else None},
        "history": history,
    }
    model.to("cpu").to(memory_format=torch.contiguous_format)
    saved = save_model(out, model, record)
    checkpointing.remove()
    return saved, record, model
