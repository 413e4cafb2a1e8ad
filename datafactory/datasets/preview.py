"""Preview pictures: a grid of images with their mask overlays and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datafactory.datasets.shards import read_sample


def _colour_table(n: int) -> np.ndarray:
    import matplotlib

    cmap = matplotlib.colormaps["tab20" if n > 10 else "tab10"]
    return np.array([cmap(i % cmap.N)[:3] for i in range(n)])


def overlay(image: np.ndarray, masks: np.ndarray, colours: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB picture of a grey image with every mask channel tinted in its colour."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    grey = np.clip((image - lo) / (hi - lo + 1e-12), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for c in range(masks.shape[0]):
        weight = alpha * masks[c].astype(np.float32) / max(int(masks[c].max()), 1)
        rgb = rgb * (1 - weight[..., None]) + colours[c] * weight[..., None]
    return rgb


def _title(sample: dict) -> str:
    parts = [f"#{sample['index']}"]
    if "slip_frac" in sample:
        for k, (slip, twist) in enumerate(zip(sample["slip_frac"], sample["twist_deg"]), start=1):
            parts.append(f"D{k}=({slip[0]:.2f},{slip[1]:.2f}) θ{k}={twist:.1f}°")
    return "  ".join(parts)


def write_preview(f, out: Path, max_samples: int = 12, columns: int = 4) -> Path:
    """Save a grid of the first samples of an open shard, each as image | image + masks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = min(len(f["images"]), max_samples)
    names = [str(c) for c in f["masks"].attrs["channel_names"]]
    colours = _colour_table(len(names))
    rows = int(np.ceil(n / columns))
    cols = min(n, columns)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4.2 * cols, 2.3 * rows + 0.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    first = int(f.attrs.get("first_index", 0))
    for i in range(n):
        sample = read_sample(f, i)
        sample["index"] = first + i
        ax_img, ax_mask = axes[i // columns, 2 * (i % columns)], axes[i // columns, 2 * (i % columns) + 1]
        ax_img.imshow(sample["image"], cmap="gray", interpolation="nearest")
        ax_mask.imshow(overlay(sample["image"], sample["masks"], colours), interpolation="nearest")
        ax_img.set_title(_title(sample), fontsize=7, loc="left")
    pixel = float(f["params/pixel_size_A"][0])
    fig.suptitle(f"{n} of {len(f['images'])} samples · {pixel:.3g} Å/px · left: image, right: mask overlay", fontsize=9)
    handles = [Patch(color=colours[c], label=name) for c, name in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(names), 8), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(names) // 8), 1, 0.97))
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
