"""The downstream-model commands: ``train regress``, ``train segment``, ``evaluate`` and ``map``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from datafactory.errors import FactoryError
from factory_app.cli.common import check_positive, claim, device_name, notice, read_experiments, require_at_least, require_seed


train_app = typer.Typer(no_args_is_help=True, help="Train the downstream models on a generated dataset.")


def train_settings(epochs, batch, lr, minutes, seed, device, threads):
    from inference.training import TrainSettings

    require_at_least("--epochs", epochs, 1)
    require_at_least("--batch", batch, 1)
    require_seed(seed)
    require_at_least("--threads", threads, 1)
    check_positive("--lr", lr)
    check_positive("--minutes", minutes)
    return TrainSettings(epochs=epochs, batch=batch, lr=lr, max_minutes=minutes, seed=seed, device=device_name(device), threads=threads)


@train_app.command("regress")
def train_regress(
    data: Path = typer.Option(..., "--data", help="Dataset directory written by generate."),
    target: str = typer.Option("slip", "--target", help="slip (bilayer Da, Db), slip2 (trilayer, two interfaces) or twist."),
    out: Path = typer.Option(..., "--out", "-o", help="MODEL directory to write."),
    arch: str = typer.Option("resnet18", "--arch", help="resnet18, resnet34 or resnet50."),
    epochs: int = typer.Option(30, "--epochs", help="Passes over the training split."),
    batch: int = typer.Option(32, "--batch", help="Batch size."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (linear warm-up, then linear decay to 0)."),
    mse_weight: float = typer.Option(1.0, "--mse-weight", help="Weight of the MSE term of the loss."),
    l1_weight: float = typer.Option(0.5, "--l1-weight", help="Weight of the L1 term of the loss."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop after this many minutes (the schedule then runs on the clock)."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, shuffling and augmentation."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: all cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a ResNet to read interlayer slip or twist (seam-free circle codes, loss 1*MSE + 0.5*L1)."""
    from inference.regression import train_regression

    settings = train_settings(epochs, batch, lr, minutes, seed, device, threads)
    claim(out, "dir")
    path, record, _ = train_regression(data, target, out, arch=arch, settings=settings, mse_weight=mse_weight, l1_weight=l1_weight, progress=not quiet)
    last = record["history"][-1] if record["history"] else {}
    val = last.get("val", {})
    if val:
        unit = record["error_units"]
        typer.echo(f"{last['epoch']} epochs, {last['steps']} steps in {last['seconds'] / 60:.1f} min; validation error mean {val['val_mean_error']:.4g} {unit}, 95 % {val['val_p95_error']:.4g} {unit}")
    typer.echo(str(path.resolve()))


@train_app.command("segment")
def train_segment(
    data: Path = typer.Option(..., "--data", help="Dataset directory written by generate."),
    out: Path = typer.Option(..., "--out", "-o", help="MODEL directory to write."),
    arch: str = typer.Option("unet", "--arch", help="unet (every mask channel) or gombnet (one decoder branch per layer)."),
    width: int = typer.Option(16, "--width", help="Filters of the first level (doubling per level)."),
    depth: int = typer.Option(3, "--depth", help="Pooling levels."),
    epochs: int = typer.Option(10, "--epochs", help="Passes over the training split."),
    batch: int = typer.Option(16, "--batch", help="Batch size."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (linear warm-up, then linear decay to 0)."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop after this many minutes (the schedule then runs on the clock)."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, shuffling and augmentation."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: all cores)."),
    class_balance: bool = typer.Option(True, "--class-balance/--no-class-balance", help="unet: weigh each class's pixels by how rare it is, so vacancies and dopants are learned too."),
    classes: str = typer.Option("exclusive", "--classes", help="unet: exclusive (one softmax per layer: the classes of a site compete) or independent (a sigmoid per channel)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a U-Net or a Gomb-Net to find the atom columns of every layer."""
    from inference.segmentation import train_segmentation

    require_at_least("--width", width, 1)
    require_at_least("--depth", depth, 1)
    settings = train_settings(epochs, batch, lr, minutes, seed, device, threads)
    claim(out, "dir")
    path, record, _ = train_segmentation(data, out, arch=arch, width=width, depth=depth, settings=settings, class_balance=class_balance, classes=classes, progress=not quiet)
    last = record["history"][-1] if record["history"] else {}
    if last.get("val"):
        typer.echo(f"{last['epoch']} epochs, {last['steps']} steps in {last['seconds'] / 60:.1f} min; validation IoU {last['val']['val_iou']:.3f}")
    typer.echo(str(path.resolve()))


def evaluate(
    model: Path = typer.Argument(..., help="MODEL directory written by train."),
    data: Path = typer.Option(..., "--data", help="Dataset directory written by generate."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    out: Path = typer.Option(Path("metrics.json"), "--out", "-o", help="Metrics JSON (plots go next to it as .png)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score a MODEL on a dataset split: slip/twist errors, or pixel and atom-level scores."""
    import json

    from inference.evaluate import evaluate as run_evaluation
    from datafactory.device import resolve_device

    claim(out, "file")
    metrics = run_evaluation(model, data, split, out, device=resolve_device(device_name(device)), progress=not quiet)
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    typer.echo(json.dumps(shown, indent=None, default=float))
    for name, s in metrics.get("per_channel", {}).items():
        typer.echo(f"  {name:<10} F1 {s['f1']:.3f}  precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
                   f"({s['tp'] + s['fn']} true columns, {100 * s['fraction']:.1f} %)")
    typer.echo(str(Path(out).resolve()))


def map_command(
    model: Path = typer.Argument(..., help="MODEL directory written by train."),
    image: Path = typer.Argument(..., help="Micrograph (TIFF, DM3/DM4, EMD, MRC, PNG, NPY...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (map.h5 and PNGs, or atoms.csv and atoms.png; summary.json)."),
    window: Optional[float] = typer.Option(None, "--window", help="Window side in Å (regression; default: the training images' side)."),
    stride: float = typer.Option(10.0, "--stride", help="Coarse stride in Å (regression)."),
    refine_stride: Optional[float] = typer.Option(1.0, "--refine-stride", help="Fine stride in Å around transitions (regression; 0 to skip)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Transition when neighbours differ by more than this (Å of slip, or degrees; default 0.3 / 2)."),
    pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="Pixel size in Å, for files without a calibration."),
    resample: bool = typer.Option(False, "--resample", help="Resample an image at another pixel size to the model's."),
    material: Optional[str] = typer.Option(None, "--material", help="Check the calibration against this material's lattice (e.g. MoS2)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Take the pixel size from the lattice (needs --material)."),
    allow_rgb: bool = typer.Option(False, "--allow-rgb", help="Accept a colour image (converted to grey)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty --out."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Map a large micrograph: sliding-window slip/twist maps, or overlap-tiled atom finding."""
    from inference.checkpoint import read_record
    from inference.mapping import map_micrograph
    from datafactory.device import resolve_device

    from datafactory.grid import resample as resample_image
    from datafactory.grid import same_pixel_size

    check_positive("--window", window)
    check_positive("--stride", stride)
    check_positive("--threshold", threshold)
    if refine_stride is not None and refine_stride < 0:
        raise FactoryError(f"--refine-stride: must be >= 0 (got {refine_stride})")
    claim(out, "dir")
    record = read_record(model)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FactoryError(f"--out: '{out}' exists and is not empty; pass --overwrite or choose another directory")
    micrographs, _ = read_experiments([image], pixel_size, allow_rgb, material, None, calibrate)
    micrograph = micrographs[0]
    target_px = float(record["pixel_size_A"])
    picture, px = micrograph.image, micrograph.pixel_size_A
    if not same_pixel_size(px, target_px):
        if not resample:
            raise FactoryError(f"{image}: pixel size {px:.5g} Å/px differs from the model's {target_px:.5g} Å/px; pass --resample to resample it")
        picture, px = resample_image(picture, px, target_px), target_px
        notice(f"{image.name}: resampled from {micrograph.pixel_size_A:.5g} to {target_px:.5g} Å/px")
    summary = map_micrograph(model, picture, target_px, out, window_A=window, stride_A=stride, refine_stride_A=refine_stride or None,
                             threshold=threshold, device=resolve_device(device_name(device)), source=str(image), progress=not quiet)
    if summary["task"] == "regress":
        typer.echo(f"{summary['n_windows']} windows ({summary['n_fine_windows']} fine) in {summary['seconds']:.1f} s, {summary['windows_per_s']:.1f} windows/s")
        if "fft_twist" in summary:
            echo_fft_twist(summary["fft_twist"])
    else:
        typer.echo(f"{sum(summary['atoms'].values())} atoms in {summary['seconds']:.1f} s: " + ", ".join(f"{k} {v}" for k, v in summary["atoms"].items()))
    typer.echo(str(out.resolve()))


def echo_fft_twist(fft: dict) -> None:
    """One line: the whole image's FFT twist beside the model's median; a warning when they disagree."""
    if "skipped" in fft:
        typer.echo(f"FFT twist: not measured ({fft['skipped']})")
        return
    whole = fft["whole_image"]
    if whole["status"] == "two lattices":
        shown = f"{fft['whole_image_deg']:.2f} ± {fft['uncertainty_deg']:.2f}°"
    elif whole["status"] == "one lattice":
        shown = f"one lattice (twist below {fft['uncertainty_deg']:.1f}°)"
    else:
        shown = f"no lattice ({whole.get('note', 'no spots')})"
    model = "n/a" if fft["model_median_deg"] is None else f"{fft['model_median_deg']:.2f}°"
    windows = ""
    if fft["median_abs_difference_deg"] is not None:
        windows = f"; windows: median |model - FFT| {fft['median_abs_difference_deg']:.2f}° over {fft['n_windows_compared']} of {len(fft['windows'])}"
    typer.echo(f"FFT twist of the whole image {shown}, model median {model} (modulo {fft['period_deg']:g}°){windows}")
    if fft.get("warning"):
        typer.echo(f"warning: {fft['warning']}", err=True)
