"""``factory evaluate``: score a trained MODEL on a dataset split, write metrics.json and plots.

Regression
    Errors are distances to the nearest equivalent of the label (:mod:`inference.targets`):
    the slip error ΔD in Å through the cell's metric (every interface together), the twist
    error in degrees. Reported: mean, median, 95th percentile and maximum.

Segmentation
    Pixel accuracy and IoU per channel (masks thresholded at half their full value), and
    atom-level precision, recall and F1: predicted blob centroids matched one-to-one to the
    true column centres within 0.5 Å. True centres are the centroids of the true masks'
    anti-aliased disks (exact to ~1e-3 px). Columns whose disk touches the image edge are
    left out on both sides, since a clipped disk moves its centroid. In a multilayer sample
    the network's layer blocks are matched to the true layers in whichever order scores more
    true positives (the order of the layers cannot be seen in a projection), for the U-Net
    and the Gomb-Net alike, and per-layer scores use that order. Columns are decoded one per
    site and layer, with the most probable class (:mod:`inference.columns`). Per class: F1 and
    the class's share of the true columns; ``class_f1_min`` is the lowest F1 of the classes
    with at least 1 % of the columns, so a class that is never found cannot hide behind the
    pooled score.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from datafactory.outputs import write_json_atomic
from datafactory.errors import FactoryError

from .checkpoint import read_record

#: Classes holding at least this share of the true columns count in ``class_f1_min``.
COMMON_CLASS_FRACTION = 0.01


def load_model(path: Path, device: str = "cpu"):
    """(record, Regressor or Segmenter) of MODEL ``path``."""
    record = read_record(path)
    if record.get("task") == "regress":
        from .regression import load_regressor

        return record, load_regressor(path, record, device)
    if record.get("task") == "segment":
        from .segmentation import load_segmenter

        return record, load_segmenter(path, record, device)
    raise FactoryError(f"'{path}' has an unknown task {record.get('task')!r}", field="model")


def _check_dataset(record: dict, dataset) -> None:
    from datafactory.grid import same_pixel_size

    if not same_pixel_size(dataset.pixel_size_A, record["pixel_size_A"]):
        raise FactoryError(
            f"pixel size {dataset.pixel_size_A:.5g} Å/px differs from the model's {record['pixel_size_A']:.5g} Å/px; "
            "generate the test data at the model's pixel size", field="data"
        )


def evaluate_regression(regressor, data: Path, split: str, batch: int = 64, progress: bool = True) -> tuple[dict, dict]:
    """(metrics, arrays) of a regressor on ``split`` of ``data``."""
    from tqdm import tqdm

    from .data import ShardDataset
    from .regression import label_field

    target = regressor.target
    field = label_field(target)
    ds = ShardDataset(data, split=split, fields=("image", field))
    if len(ds) == 0:
        raise FactoryError(f"{split}: '{data}' has no samples in it", field="split")
    _check_dataset(regressor.record, ds)
    have = int(ds.manifest.get("n_interfaces") or 0)
    if have < target.n_interfaces:
        raise FactoryError(f"'{data}' has {have + 1} layer(s); the model reads {target.n_interfaces} interface(s) ({regressor.record.get('target_name', target.kind)})", field="data")
    predicted, true = [], []
    for lo in tqdm(range(0, len(ds), batch), desc="evaluate", unit="batch", disable=not progress):
        items = [ds[k] for k in range(lo, min(lo + batch, len(ds)))]
        predicted.append(regressor.predict(np.stack([it["image"][0].numpy() for it in items])))
        labels = np.stack([target.periods(it[field][None])[0].numpy() for it in items])
        true.append(target.canonical(labels * target.period_deg if target.kind == "twist" else labels))
    predicted, true = np.concatenate(predicted), np.concatenate(true)
    errors = target.errors(predicted, true)
    unit = "deg" if target.kind == "twist" else "A"
    name = "twist_error_deg" if target.kind == "twist" else "slip_error_A"
    metrics = {
        "task": "regress",
        "target": regressor.record.get("target_name", target.kind),
        "n": int(len(errors)),
        "units": unit,
        f"mean_{name}": float(errors.mean()),
        f"median_{name}": float(np.median(errors)),
        f"p95_{name}": float(np.percentile(errors, 95)),
        f"max_{name}": float(errors.max()),
    }
    return metrics, {"predicted": predicted, "true": true, "errors": errors}


def true_points(mask: np.ndarray, max_value: float) -> np.ndarray:
    from .atom_points import blob_centroids

    return blob_centroids(mask.astype(np.float32) / max_value, threshold=0.5, min_area_px=1)


def _inside(points: np.ndarray, shape: tuple[int, int], border_px: float) -> np.ndarray:
    if len(points) == 0:
        return points
    keep = (points[:, 0] >= border_px) & (points[:, 1] >= border_px) & (points[:, 0] <= shape[0] - 1 - border_px) & (points[:, 1] <= shape[1] - 1 - border_px)
    return points[keep]


def evaluate_segmentation(segmenter, data: Path, split: str, match_radius_A: float = 0.5, batch: int = 8, progress: bool = True, keep_examples: int = 3) -> tuple[dict, dict]:
    """(metrics, examples) of a segmenter on ``split`` of ``data``."""
    from tqdm import tqdm

    from .data import ShardDataset
    from .atom_points import atom_scores, match_points

    record = segmenter.record
    ds = ShardDataset(data, split=split, fields=("image", "masks"))
    if len(ds) == 0:
        raise FactoryError(f"{split}: '{data}' has no samples in it", field="split")
    _check_dataset(record, ds)
    names = record["output_channels"]
    if sorted(ds.channel_names) != sorted(names):
        raise FactoryError(f"mask channels {ds.channel_names} differ from the model's {names}", field="data")
    order = [ds.channel_names.index(n) for n in names]
    max_value = float(ds.mask_max_value)
    n_layers = max(1, int(record.get("n_layers", 1)))
    if n_layers == 1 and len(record.get("layers", [1])) > 1:  # a U-Net on a multilayer dataset: still match layers
        n_layers = len(record["layers"])
        layers = record["layers"]
        by_layer = [[i for i, n in enumerate(names) if n.startswith(f"L{layer}:")] for layer in layers]
        if len({len(b) for b in by_layer}) != 1:
            n_layers, blocks = 1, [list(range(len(names)))]
        else:
            blocks = by_layer
    else:
        k = len(names) // n_layers
        blocks = [list(range(b * k, (b + 1) * k)) for b in range(n_layers)]
    border_px = 0.5 / segmenter.pixel_size_A + 1.5 + match_radius_A / segmenter.pixel_size_A
    radius_px = match_radius_A / segmenter.pixel_size_A
    counts = np.zeros((n_layers, 3), np.int64)  # tp, fp, fn per true layer
    channel_counts = np.zeros((len(names), 3), np.int64)
    inter = np.zeros(len(names))
    union = np.zeros(len(names))
    correct = total = 0
    examples = []
    for lo in tqdm(range(0, len(ds), batch), desc="evaluate", unit="batch", disable=not progress):
        items = [ds[k] for k in range(lo, min(lo + batch, len(ds)))]
        images = np.stack([it["image"][0].numpy() for it in items])
        probs = segmenter.probabilities(images)
        for image, item, p in zip(images, items, probs):
            masks = item["masks"].numpy()[order]
            truth_pts = [_inside(true_points(m, max_value), image.shape, border_px) for m in masks]
            pred_all = segmenter.atoms(p)
            pred_pts = [_inside(pred_all[n], image.shape, border_px) for n in names]
            best = None
            for perm in itertools.permutations(range(n_layers)):
                # network block b is read as true layer perm[b]
                chan = np.empty(len(names), int)
                for b, t in enumerate(perm):
                    chan[blocks[t]] = blocks[b]
                scores = [match_points(pred_pts[chan[c]] * 1.0, truth_pts[c] * 1.0, radius_px) for c in range(len(names))]
                tp = sum(s[0] for s in scores)
                if best is None or tp > best[0]:
                    best = (tp, chan, scores)
            _, chan, scores = best
            for c, s in enumerate(scores):
                channel_counts[c] += s
                layer = next(b for b, blk in enumerate(blocks) if c in blk)
                counts[layer] += s
            pred_bin = p[chan] >= 0.5
            true_bin = masks >= max_value / 2
            inter += (pred_bin & true_bin).sum((1, 2))
            union += (pred_bin | true_bin).sum((1, 2))
            correct += int((pred_bin == true_bin).sum())
            total += pred_bin.size
            if len(examples) < keep_examples:
                examples.append({"image": image, "truth": truth_pts, "pred": [pred_pts[chan[c]] for c in range(len(names))]})
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    overall = atom_scores(*counts.sum(0))
    metrics: dict[str, Any] = {
        "task": "segment",
        "arch": record["arch"],
        "n": len(ds),
        "match_radius_A": match_radius_A,
        "pixel_accuracy": correct / max(total, 1),
        "mean_iou": float(iou.mean()),
        "iou": {n: float(v) for n, v in zip(names, iou)},
        "atom_precision": overall["precision"],
        "atom_recall": overall["recall"],
        "atom_f1": overall["f1"],
        "per_channel": {n: atom_scores(*channel_counts[c]) for c, n in enumerate(names)},
    }
    n_true = channel_counts[:, 0] + channel_counts[:, 2]
    for c, n in enumerate(names):
        metrics["per_channel"][n]["fraction"] = float(n_true[c] / max(1, n_true.sum()))
    common = [n for c, n in enumerate(names) if n_true[c] >= COMMON_CLASS_FRACTION * n_true.sum()]
    metrics["class_f1_min"] = min((metrics["per_channel"][n]["f1"] for n in common), default=float("nan"))
    metrics["class_f1_min_of"] = common
    if n_layers > 1:
        metrics["per_layer"] = {f"layer{b + 1}": atom_scores(*counts[b]) for b in range(n_layers)}
        metrics["layer_f1_min"] = min(v["f1"] for v in metrics["per_layer"].values())
    return metrics, {"examples": examples, "names": names}


def _regression_plot(path: Path, arrays: dict, record: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = record["value_names"]
    unit = "°" if record["error_units"] == "deg" else "Å"
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4 * (len(names) + 1), 3.8))
    for k, name in enumerate(names):
        ax = axes[k]
        ax.scatter(arrays["true"][:, k], arrays["predicted"][:, k], s=4, alpha=0.5)
        lim = [min(arrays["true"][:, k].min(), arrays["predicted"][:, k].min()), max(arrays["true"][:, k].max(), arrays["predicted"][:, k].max())]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=f"{name} (canonical form)")
    ax = axes[-1]
    errors = arrays["errors"]
    top = max(float(np.percentile(errors, 99)) * 1.3, 1e-9)
    beyond = int((errors > top).sum())
    ax.hist(np.minimum(errors, top), bins=50, range=(0, top))
    if beyond:
        ax.text(0.98, 0.6, f"{beyond} beyond {top:.3g} {unit}\n(max {errors.max():.3g}), in the last bin", transform=ax.transAxes, ha="right", fontsize=8)
    ax.axvline(arrays["errors"].mean(), color="r", label=f"mean {arrays['errors'].mean():.3g} {unit}")
    ax.axvline(np.percentile(arrays["errors"], 95), color="k", ls="--", label=f"95 % {np.percentile(arrays['errors'], 95):.3g} {unit}")
    ax.set(xlabel=f"error ({unit})", ylabel="samples", title="error to the nearest equivalent label")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _segmentation_plot(path: Path, out: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    examples, names = out["examples"], out["names"]
    if not examples:
        return
    colours = plt.cm.tab10(np.arange(len(names)) % 10)
    fig, axes = plt.subplots(len(examples), 2, figsize=(9, 4.5 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples):
        for ax, key, title in zip(row, ("truth", "pred"), ("true columns", "predicted columns")):
            ax.imshow(ex["image"], cmap="gray")
            for c, name in enumerate(names):
                pts = ex[key][c]
                if len(pts):
                    ax.scatter(pts[:, 1], pts[:, 0], s=12, facecolors="none", edgecolors=[colours[c]], label=name)
            ax.set_title(title)
            ax.axis("off")
        row[1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def evaluate(model_path: Path, data: Path, split: str, out: Path, device: str = "cpu", progress: bool = True) -> dict:
    """Score MODEL on a split; writes ``out`` (JSON) and ``out`` with suffix .png (plots)."""
    if split not in ("train", "val", "test"):
        raise FactoryError(f"must be train, val or test (got '{split}')", field="split")
    out = Path(out)
    if out.is_dir():
        raise FactoryError(f"'{out}' is a directory; give a .json file name", field="out")
    record, model = load_model(model_path, device)
    if record["task"] == "regress":
        metrics, arrays = evaluate_regression(model, data, split, progress=progress)
    else:
        metrics, arrays = evaluate_segmentation(model, data, split, progress=progress)
    metrics.update({"model": str(Path(model_path).resolve()), "data": str(Path(data).resolve()), "split": split, "trained_on": record.get("dataset", {}).get("sha256")})
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = out.with_suffix(".png")
    tmp = plot.with_name(plot.stem + ".partial.png")
    try:  # the plot under a temporary name first: a failure leaves neither file half-written
        try:
            if record["task"] == "regress":
                _regression_plot(tmp, arrays, record)
            else:
                _segmentation_plot(tmp, arrays)
        except OSError as exc:  # matplotlib's error names no file
            raise OSError(exc.errno, exc.strerror or str(exc), str(plot)) from None
        write_json_atomic(out, metrics)
        if tmp.exists():
            tmp.replace(plot)
    finally:
        tmp.unlink(missing_ok=True)
    return metrics
