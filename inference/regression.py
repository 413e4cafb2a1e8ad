"""Stacking regression: a ResNet reads interlayer slip or twist from one image.

The network is a torchvision ResNet (18 or 50, untrained: weights are never downloaded)
whose first convolution takes one channel, with the reference work's fully connected head
[1000 → 512 → n] (papers/001, Methods). Every image is standardised (zero mean, unit
standard deviation) inside the model, so brightness and contrast carry no label. The
outputs are the circle codes of :mod:`inference.targets` (n = 4 for a bilayer slip, 2 for
a twist, 8 for a trilayer's two slips).

Augmentation keeps every label true: random crops (a translation of the window), Gaussian
noise, a smooth contamination field, blanked rectangles (holes and masks) and dark point
defects. Flips and rotations are left out: mirroring or turning an MX2 image gives the image
of a different crystal orientation, whose slip label is a symmetry image of the original
only for particular orientations, and the slip datasets keep the orientation within a few
degrees on purpose.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from datafactory.errors import FactoryError

from .training_augment import Augmentation, Standardise, augment_batch
from .targets import TARGETS, Target, rotational_order

ARCHS = ("resnet18", "resnet34", "resnet50")


def build_regressor(arch: str, n_outputs: int) -> nn.Module:
    """Standardise → ResNet (1 input channel) → [1000 → 512 → n_outputs]."""
    import torchvision

    if arch not in ARCHS:
        raise FactoryError(f"must be one of {', '.join(ARCHS)} (got '{arch}')", field="arch")
    net = getattr(torchvision.models, arch)(weights=None)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    features = net.fc.in_features
    net.fc = nn.Sequential(nn.Linear(features, 1000), nn.ReLU(inplace=True), nn.Linear(1000, 512), nn.ReLU(inplace=True), nn.Linear(512, n_outputs))
    return nn.Sequential(Standardise(), net)


# ---------------------------------------------------------------------- targets from a dataset


def target_for(kind: str, manifest: dict, base_dir: Path | None = None) -> Target:
    """The :class:`Target` of regressing ``kind`` on the dataset with ``manifest``."""
    import yaml

    from datafactory.simulation.config import validate_config
    from datafactory.simulation.samples import Plan

    if kind not in TARGETS:
        raise FactoryError(f"must be one of {', '.join(TARGETS)} (got '{kind}')", field="target")
    n_interfaces = int(manifest.get("n_interfaces") or 0)
    need = 2 if kind == "slip2" else 1
    if n_interfaces < need:
        layers = n_interfaces + 1
        raise FactoryError(f"{kind} needs {need + 1} or more layers, the dataset has {layers}", field="target")
    plan = Plan.from_config(validate_config(yaml.safe_load(manifest["config"]), "dataset config"), base_dir)
    cell = plan.cell
    if kind != "twist" and any(not np.allclose(c.basis, cell.basis, rtol=0.0, atol=1e-6) for c in plan.cells):
        lattices = ", ".join(f"layer {k} a = {np.linalg.norm(c.basis[:, 0]):.4g} Å" for k, c in enumerate(plan.cells, start=1))
        raise FactoryError(
            f"{kind} is undefined on this hetero-stack: its layers have different lattices ({lattices}), so the registry "
            "drifts across every image (a moiré) and no single slip describes it; regress `target='twist'` instead",
            field="target",
        )
    # A twist of layer k+1 over layer k repeats when either layer turns by one of its own symmetries
    # (the other turn is undone by the stack's random in-plane rotation): period 360° / lcm(N_k, N_k+1).
    order = math.lcm(*(_rotational_order(c) for c in plan.cells[: need + 1]))
    return Target(kind if kind != "slip2" else "slip", need, 360.0 / order, tuple(tuple(float(v) for v in row) for row in cell.basis))


def _rotational_order(cell) -> int:
    """N of the N-fold rotation axis of one layer's projected cell (sites grouped by column content)."""
    contents: dict = {}
    species = np.array([contents.setdefault(tuple(sorted(cell.numbers[cell.column_of_site == t])), len(contents)) for t in range(len(cell.column_anchor_frac))])
    return rotational_order(cell.column_anchor_frac @ cell.basis.T, species, cell.basis)


def label_field(target: Target) -> str:
    return "twist_deg" if target.kind == "twist" else "slip_frac"


def require_variation(dataset, target: Target, kind: str) -> None:
    """Refuse a target the dataset never varies (e.g. the twist of a slip dataset, 0° in every
    sample): a model would learn a constant and report a perfect validation error."""
    import h5py

    values = []
    for path in dataset.shard_paths:
        with h5py.File(path, "r") as f:
            values.append(np.asarray(f["labels"][label_field(target)][:], dtype=np.float64)[:, : target.n_interfaces])
    values = np.concatenate(values)
    period = target.period_deg if target.kind == "twist" else 1.0
    phase = np.exp(2j * np.pi * values / period)  # spread on the circle: a period apart is the same value
    spread = np.abs(phase - phase.mean(axis=0)).max(initial=0.0)
    if spread < 1e-6:
        shown = ", ".join(f"{v:.4g}" for v in np.ravel(values[0]))
        unit = "°" if target.kind == "twist" else " (cell fractions)"
        raise FactoryError(f"the dataset's {label_field(target)} is {shown}{unit} in every sample: there is nothing to learn; "
                           f"regress a target its config draws from a range", field="target")


# ---------------------------------------------------------------------- prediction


class Regressor:
    """A trained regression MODEL: ``predict(images)`` → (B, n_values) in label units."""

    def __init__(self, model: nn.Module, target: Target, record: dict[str, Any], device: str = "cpu"):
        self.model, self.target, self.record, self.device = model.to(device).eval(), target, record, device
        self.pixel_size_A = float(record["pixel_size_A"])

    @property
    def value_names(self) -> list[str]:
        return self.target.value_names

    def outputs(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        """Raw network outputs (circle codes) for (B, H, W) images, float32 on the CPU."""
        images = np.asarray(images, dtype=np.float32)
        out = []
        with torch.inference_mode():
            for lo in range(0, len(images), batch):
                x = torch.from_numpy(np.ascontiguousarray(images[lo : lo + batch, None])).to(self.device)
                out.append(self.model(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.target.n_outputs), np.float32)

    def predict(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        return self.target.decode(self.outputs(images, batch))


def load_regressor(path: Path, record: dict[str, Any], device: str = "cpu") -> Regressor:
    from .checkpoint import load_weights

    target = Target.from_dict(record["target"])
    model = build_regressor(record["arch"], target.n_outputs)
    return Regressor(load_weights(path, model), target, record, device)


# ---------------------------------------------------------------------- training


def train_regression(
    data: Path,
    target_kind: str,
    out: Path,
    *,
    arch: str = "resnet18",
    settings=None,
    augmentation: Augmentation | None = None,
    mse_weight: float = 1.0,
    l1_weight: float = 0.5,
    val_samples: int = 512,
    progress: bool = True,
) -> tuple[Path, dict, torch.nn.Module]:
    """Train a regressor on dataset ``data`` and save MODEL ``out``; returns (out, record, model)."""
    from .checkpoint import check_output, dataset_hash, save_model, training_directory
    from .data import ShardDataset
    from .training import Checkpointing, TrainSettings, fit, resolve_device, seed_everything, seeded_generator, seeded_loader

    settings = settings or TrainSettings()
    seed_everything(settings.seed)
    augmentation = augmentation or Augmentation()
    if min(mse_weight, l1_weight) < 0 or mse_weight + l1_weight <= 0:
        raise FactoryError(f"loss weights must be >= 0 and not both 0 (got MSE {mse_weight}, L1 {l1_weight})")
    check_output(out)
    train_set = ShardDataset(data, split="train", fields=("image", "slip_frac", "twist_deg"))
    if len(train_set) == 0:
        raise FactoryError(f"'{data}' has no training samples", field="data")
    pixel_size_A = train_set.pixel_size_A
    if not math.isfinite(pixel_size_A):
        raise FactoryError(f"'{data}' mixes pixel sizes; regression needs one (generate it with `resample=True`)", field="data")
    target = target_for(target_kind, train_set.manifest, Path(data))
    field = label_field(target)
    require_variation(train_set, target, target_kind)
    val_set = ShardDataset(data, split="val", fields=("image", field))
    val_items = [val_set[k] for k in np.linspace(0, len(val_set) - 1, min(val_samples, len(val_set))).astype(int)] if len(val_set) else []
    if val_items:
        val_images = np.stack([item["image"][0].numpy() for item in val_items])
        val_labels = np.stack([target.periods(item[field][None])[0].numpy() for item in val_items])
        val_labels = val_labels * target.period_deg if target.kind == "twist" else val_labels

    model = build_regressor(arch, target.n_outputs)
    device = resolve_device(settings.device)
    g = seeded_generator(settings.seed, "augment")
    loader = seeded_loader(train_set, settings)

    def batches(epoch):
        yield from loader

    def loss_fn(net, batch, dev):
        x = augment_batch(batch["image"], augmentation, pixel_size_A, g).to(dev, memory_format=torch.channels_last)
        return target.loss(net(x), batch[field].to(dev), mse_weight, l1_weight)

    def validate(net):
        if not val_items:
            return {}
        errors = target.errors(Regressor(net, target, {"pixel_size_A": pixel_size_A}, device).predict(val_images), val_labels)
        return {"val_mean_error": float(errors.mean()), "val_p95_error": float(np.percentile(errors, 95))}

    checkpointing = Checkpointing(
        training_directory(out),
        {"task": "regress", "arch": arch, "target": target_kind, "dataset": dataset_hash(train_set.manifest), "settings": settings.to_dict(),
         "augmentation": augmentation.to_dict(), "loss": [mse_weight, l1_weight], "val_samples": val_samples},
        epoch_generators={"loader": loader.generator}, step_generators={"augment": g})
    history = fit(model, batches, loss_fn, settings, len(loader), validate=validate, progress=progress, desc=f"train {target_kind}",
                  checkpointing=checkpointing)
    record = {
        "task": "regress",
        "arch": arch,
        "target": target.to_dict(),
        "target_name": target_kind,
        "value_names": target.value_names,
        "error_units": "deg" if target.kind == "twist" else "A",
        "pixel_size_A": pixel_size_A,
        "image_shape": list(train_set.image_shape),
        "dataset": {"path": str(Path(data).resolve()), "sha256": dataset_hash(train_set.manifest), "n_train": len(train_set), "style": train_set.manifest.get("style"),
                    "config": train_set.manifest.get("config"), "channel_names": train_set.channel_names},
        "settings": settings.to_dict(),
        "augmentation": augmentation.to_dict(),
        "loss": {"mse_weight": mse_weight, "l1_weight": l1_weight, "representation": "circle codes, min over layer reversal"},
        "history": history,
    }
    model.to("cpu").to(memory_format=torch.contiguous_format)
    saved = save_model(out, model, record)
    checkpointing.remove()
    return saved, record, model
