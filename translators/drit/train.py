"""Training the DRIT translator: data, augmentation, the DRIT + Trident objective, checkpoints.

Data (Trident step II, with two deliberate departures from the reference):

* simulated crops rotate freely, flip, and zoom within ±``zoom`` (about ±10 %);
* experimental crops only flip and turn by 180°, which keeps the fast-scan direction (a
  45° turn would put scan streaks in directions no real scan has), and zoom within ±``zoom``
  (the reference cropped 45–60 % and resized back, a 2× magnification change; our
  translator works at a known pixel size).

Intensities: each simulation is mapped to [0, 1] by its own 0.5th/99.5th percentiles; the
experimental domain by the percentiles of all experimental images together, stored in the
bundle so translated images come back in the experiment's units.

Objective per iteration (x: sim crops, y: exp crops; E_c content, E_a attribute, G generators):
domain adversarial (multi-scale LSGAN) on u = G_sim(c_y, a_x), v = G_exp(c_x, a_y) and
v_z = G_exp(c_x, z); content adversarial (the content discriminator must not tell c_x from
c_y); cross-cycle L1 (translate, swap, translate back); self-reconstruction L1; attribute
KL; latent regression ‖E_a(v_z) − z‖₁; the Trident content-consistency loss (form
``plain`` or ``structure``); and, optionally, a spectrum discriminator on v.

Physics prior (``physics_prior``): each sim crop is first rendered by the fitted parametric
model (``prior(crop, rng) -> (rendered, displaced)``, both normalised); the displaced
clean crop (scan geometry applied) becomes x, and the exp generator outputs
``rendered + tanh(r)``, starting at r = 0, i.e. at the fitted baseline. What holds the
residual near the prior is an L1 penalty on it, ``weights["residual"]·(E|v − rendered| +
E|v_z − rendered|)`` (default weight 10): the residual grows only where the discriminators
pay for it. ``prior_exp_recon`` says what happens to the exp-domain reconstructions (self
and cross-cycle) under the prior: ``"none"`` (the default) leaves them out; ``"self"``
keeps them with the real image as its own base, which asks for a zero residual on real
content with weight 10 and, measured, collapses the residual to exactly zero within a
few thousand iterations (README). With too weak an anchor the residual runs away: at weight
1 within 1200 iterations on the twin, at 3 within 4800 on the twin and 1200 on the real
crops (README). The content-consistency term of v compares it with
``prior_target``: ``"base"`` (the default) is the parametric rendering, whose atoms are
already in place and whose blur is the fitted one; ``"clean"`` is the displaced clean
crop, as without the prior (its structure term then also asks the residual to undo the
fitted blur).

Mixed precision (``mixed_precision``, on by default): the forward passes run under
bfloat16 autocast on CPUs with native bf16 (AVX512-BF16/AMX; 0.52 against 0.68 s per
iteration of the quick preset here), under bfloat16 autocast on cuda (float16 with a gradient scaler on GPUs without bf16), and in float32
elsewhere. Losses, discriminator logits and attribute codes are float32.

Checkpoints (everything: weights, optimisers, iteration, generator states) are written
atomically every ``checkpoint_every`` iterations; ``resume`` continues from the last one,
so a ``kill -9`` loses at most the iterations since. A non-finite loss stops the run,
keeps the last good checkpoint and names the diverging term.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datafactory.errors import FactoryError

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class DritSettings:
    """Training hyper-parameters. ``iterations`` counts generator updates (one batch each)."""

    crop_px: int = 96
    batch: int = 2
    iterations: int = 700
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    constant_fraction: float = 0.2  # lr factor 1 for this fraction of the run, then linear decay to 0
    zoom: float = 0.1
    content_form: str = "structure"
    content_sigma_A: float = 0.3
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "domain": 1.0, "content_adv": 1.0, "cross_cycle": 10.0, "self_recon": 10.0,
            "kl": 0.01, "latent": 10.0, "consistency": 10.0, "spectrum": 1.0, "residual": 10.0, "noise": 1.0,
        }
    )
    checkpoint_every: int = 50
    threads: int = 2
    width: int = 32
    spectrum_discriminator: bool = False
    physics_prior: bool = False
    prior_target: str = "base"  # what v's content-consistency term compares with under the prior: base or clean
    prior_exp_recon: str = "none"  # under the prior, exp reconstructions: "none" (left out) or "self" (the real image as its own base; collapses the residual)
    mixed_precision: bool = True  # bfloat16 autocast on CPUs with native bf16, float16 on cuda; float32 otherwise
    residual_weight_end: float | None = None  # anchor schedule: the residual weight moves linearly from weights["residual"] to this over the run
    residual_discriminator: bool = False  # a PatchGAN on the noise space of v (image minus its 1 px blur), weight weights["noise"]
    monitor_every: int = 0  # every this many iterations (and at the end) the monitor (e.g. the classifier AUC of held-out translations) runs; 0: never

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DritSettings":
        return cls(**data)

    def same_training(self, other: dict[str, Any]) -> bool:
        """Whether a checkpoint's ``settings`` describe this training: every field equal (a field
        the checkpoint predates counts as its default), except how often the run is monitored."""
        mine, theirs = self.to_dict(), {**asdict(DritSettings()), **dict(other)}
        mine.pop("monitor_every")
        theirs.pop("monitor_every", None)
        return mine == theirs


#: Both presets use the spectrum discriminator and the physics prior, the two levers the
#: ablation (``benchmarks/bench_style.py``, README) found to matter most.
#: ``quick`` fits within ~20 minutes on a 2-core CPU (width 24, chosen for translation
#: speed: width 32 ran 4–6 images/s of 256² in float32); ``paper`` follows the reference (for a GPU):
#: 1024 px crops, batch 2, Adam, lr factor 1 for the first 20 % then linear decay to 0. The
#: reference trains 3000 epochs over its few images; with crops drawn at random, 3000 epochs
#: of 3 exp images at batch 2 are 4500 iterations.
PRESETS: dict[str, DritSettings] = {
    "quick": DritSettings(width=24, iterations=1200, spectrum_discriminator=True, physics_prior=True, residual_discriminator=True, monitor_every=200),
    "paper": DritSettings(crop_px=1024, batch=2, iterations=4500, width=64, checkpoint_every=100, spectrum_discriminator=True, physics_prior=True,
                          residual_discriminator=True, monitor_every=250),
}


# --------------------------------------------------------------------------- data


def percentile_range(images: Sequence[np.ndarray], lo: float = 0.5, hi: float = 99.5) -> tuple[float, float]:
    """(P_lo, P_hi) over all pixels of ``images``, subsampled to ≤ 2M values."""
    flat = np.concatenate([np.asarray(im, dtype=np.float32).ravel() for im in images])
    flat = flat[:: max(1, flat.size // 2_000_000)]
    a, b = np.percentile(flat, [lo, hi])
    return float(a), float(b) if b > a else float(a) + 1.0


def normalise(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return ((np.asarray(image, dtype=np.float32) - lo) / (hi - lo)).astype(np.float32)


def random_crop(image: np.ndarray, crop_px: int, rng: np.random.Generator, *, rotate: bool, zoom: float) -> np.ndarray:
    """One augmented crop (crop_px²) of ``image``.

    ``rotate``: any angle (simulations); otherwise only flips and 180° turns
    (experiments: the fast-scan direction stays horizontal). Zoom within ±``zoom``.
    Border pixels that a rotation pulls from outside are filled by reflection.
    """
    import cv2

    scale = float(np.exp(rng.uniform(np.log(1 - zoom), np.log(1 + zoom)))) if zoom > 0 else 1.0
    angle = float(rng.uniform(0, 360)) if rotate else 0.0
    # source window large enough to hold the rotated, scaled crop
    need = int(math.ceil(crop_px / scale * (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle)))))) + 2
    rows, cols = image.shape
    if rows < need or cols < need:
        need = min(rows, cols)
    r0 = int(rng.integers(0, rows - need + 1))
    c0 = int(rng.integers(0, cols - need + 1))
    window = np.asarray(image[r0 : r0 + need, c0 : c0 + need], dtype=np.float32)
    centre = ((need - 1) / 2.0, (need - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += (crop_px - 1) / 2.0 - np.array(centre)
    crop = cv2.warpAffine(window, matrix, (crop_px, crop_px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1, :]
    return np.ascontiguousarray(crop)


def check_experiments(images: Sequence[np.ndarray], crop_px: int) -> None:
    if not images:
        raise FactoryError("fit-style: no experimental images")
    small = [im.shape for im in images if min(im.shape) < crop_px]
    if small:
        raise FactoryError(f"an experimental image of {small[0][0]}×{small[0][1]} px is smaller than the {crop_px} px training crop; give larger images or a smaller `crop`", field="crop")


# --------------------------------------------------------------------------- training


@dataclass
class TrainState:
    """What a checkpoint holds besides the module and optimiser states."""

    iteration: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    monitor: list[dict[str, float]] = field(default_factory=list)  # {"iteration": i, ...} of each monitor run


def lr_factor(iteration: int, total: int, constant_fraction: float) -> float:
    """1 for the first ``constant_fraction`` of the run, then linear decay to 0 at ``total``."""
    start = constant_fraction * total
    if iteration < start:
        return 1.0
    return max(0.0, 1.0 - (iteration - start) / max(total - start, 1))


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    import io

    import torch

    from datafactory.outputs import write_bytes_atomic

    buffer = io.BytesIO()  # serialised in memory: a refused write is then an OSError naming the file
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getbuffer())


def _load_checkpoint(path: Path, device: str) -> dict[str, Any]:
    """A checkpoint written by :func:`_save_checkpoint`, read with ``weights_only=True``: tensors,
    numbers, strings and containers only, so a file placed in the work directory cannot run code.
    Anything else (a foreign pickle, a damaged file, missing keys) is one line naming the file."""
    import pickle

    import torch

    import warnings

    what = f"the checkpoint {path} cannot be used"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise FactoryError(f"{what}: it holds Python objects other than tensors, numbers and strings, so it was not written by "
                           "fit-style and was not loaded; drop `resume` to start again, or remove it", field="resume") from None
    except (RuntimeError, EOFError, ValueError, TypeError, AttributeError, ImportError, OSError) as exc:
        raise FactoryError(f"{what}: it is damaged ({type(exc).__name__}); drop `resume` to start again, or remove it", field="resume") from None
    needed = ("settings", "model", "discs", "opt_g", "opt_d", "numpy_rng", "torch_rng", "iteration", "history")
    if not isinstance(payload, dict) or any(k not in payload for k in needed) or not isinstance(payload["settings"], dict):
        raise FactoryError(f"{what} (not a checkpoint of a DRIT training); drop `resume` to start again, or remove it", field="resume")
    return payload


def train(
    sims: Sequence[np.ndarray],
    exps: Sequence[np.ndarray],
    settings: DritSettings,
    work_dir: Path,
    *,
    exp_range: tuple[float, float],
    pixel_size_A: float,
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    budget_iterations: int | None = None,
    prior=None,
    monitor=None,
):
    """Train a DRIT model; returns (model, history, monitor records). Checkpoints go to ``work_dir``.

    ``budget_iterations`` stops this call after that many new iterations (checkpointed),
    for training in time slices; a later call with ``resume`` continues. ``prior`` (needed
    with ``settings.physics_prior``) renders a normalised sim crop as the parametric model
    would: ``prior(crop, rng) -> (rendered, displaced_crop)``, both normalised. ``monitor``
    (``monitor(model) -> dict of floats``, e.g. the classifier AUC of held-out translations)
    runs before the first iteration, every ``settings.monitor_every`` iterations and at the
    end; its records (with ``iteration``) are checkpointed with the rest.
    """
    import torch
    from tqdm import tqdm

    from translators.drit.losses import content_consistency, gan_d_loss, gan_g_loss, kl_loss, l1
    from translators.drit.model import Discriminators, Drit, DritConfig
    from datafactory.device import autocast_dtype

    check_experiments(exps, settings.crop_px)
    if not sims:
        raise FactoryError("fit-style: the simulation pool is empty (after selection)")
    if settings.physics_prior and prior is None:
        raise ValueError("train: settings.physics_prior needs a prior renderer")
    if settings.prior_exp_recon not in ("self", "none"):
        raise ValueError(f"train: prior_exp_recon must be self or none, got '{settings.prior_exp_recon}'")
    if settings.prior_target not in ("base", "clean"):
        raise ValueError(f"train: prior_target must be base or clean, got '{settings.prior_target}'")
    torch.set_num_threads(max(1, settings.threads))
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = work_dir / CHECKPOINT_FILE
    cfg = DritConfig(width=settings.width, spectrum_discriminator=settings.spectrum_discriminator, residual_prior=settings.physics_prior,
                     residual_discriminator=settings.residual_discriminator)
    torch.manual_seed(seed)
    model, discs = Drit(cfg).to(device), Discriminators(cfg).to(device)
    opt_g = torch.optim.Adam(model.parameters(), lr=settings.lr, betas=(settings.beta1, settings.beta2))
    opt_d = torch.optim.Adam(discs.parameters(), lr=settings.lr, betas=(settings.beta1, settings.beta2))
    rng = np.random.default_rng(seed)
    amp_dtype = autocast_dtype(device) if settings.mixed_precision else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def autocast():
        return torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None)

    state = TrainState()
    if resume and checkpoint.exists():
        payload = _load_checkpoint(checkpoint, device)
        if not settings.same_training(payload["settings"]):
            raise FactoryError(f"the checkpoint in {work_dir} was made with other training settings; drop `resume` to start again", field="resume")
        try:
            model.load_state_dict(payload["model"])
            discs.load_state_dict(payload["discs"])
            opt_g.load_state_dict(payload["opt_g"])
            opt_d.load_state_dict(payload["opt_d"])
            rng.bit_generator.state = payload["numpy_rng"]
            if payload.get("scaler"):
                scaler.load_state_dict(payload["scaler"])
            torch.set_rng_state(payload["torch_rng"])
            state = TrainState(int(payload["iteration"]), list(payload["history"]), list(payload.get("monitor", [])))
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise FactoryError(f"the checkpoint {checkpoint} does not fit this model ({first[:160]}); drop `resume` to start again", field="resume") from None
    elif resume:
        raise FactoryError(f"no checkpoint in {work_dir}", field="resume")

    sim_norm = [normalise(s, *percentile_range([s])) for s in sims]
    exp_norm = [normalise(e, *exp_range) for e in exps]
    sigma_px = settings.content_sigma_A / pixel_size_A
    w = settings.weights

    def batch(images, rotate):
        crops = [random_crop(images[int(rng.integers(len(images)))], settings.crop_px, rng, rotate=rotate, zoom=settings.zoom) for _ in range(settings.batch)]
        return torch.from_numpy(np.stack(crops)[:, None]).to(device)

    def sim_batch():
        """(x, base): sim crops and, with the physics prior, their parametric renderings."""
        x = batch(sim_norm, rotate=True)
        if not settings.physics_prior:
            return x, None
        pairs = [prior(crop, rng) for crop in x[:, 0].cpu().numpy()]
        base = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None].astype(np.float32)).to(device)
        displaced = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None].astype(np.float32)).to(device)
        return displaced, base

    def save():
        _save_checkpoint(checkpoint, {
            "settings": settings.to_dict(), "config": cfg.to_dict(), "model": model.state_dict(), "discs": discs.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "iteration": state.iteration, "history": state.history,
            "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "scaler": scaler.state_dict(), "monitor": state.monitor,
        })

    def run_monitor():
        if monitor is None or any(m["iteration"] == state.iteration for m in state.monitor):
            return
        model.eval()
        with torch.random.fork_rng(devices=[]):  # the monitor must not change the training's random stream
            values = monitor(model)
        model.train()
        state.monitor.append({"iteration": state.iteration, **{k: float(v) for k, v in values.items()}})

    total = settings.iterations
    stop_at = total if budget_iterations is None else min(total, state.iteration + int(budget_iterations))
    every = settings.monitor_every
    if every > 0 and state.iteration == 0:
        run_monitor()
    with tqdm(total=total, initial=state.iteration, desc="fit-style[drit]", unit="it", disable=not progress, dynamic_ncols=True) as bar:
        while state.iteration < stop_at:
            factor = lr_factor(state.iteration, total, settings.constant_fraction)
            for opt in (opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] = settings.lr * factor
            (x, base_x), y = sim_batch(), batch(exp_norm, rotate=False)
            base_y = y if settings.physics_prior else None
            consistency_x = base_x if settings.physics_prior and settings.prior_target == "base" else x

            # ---- generator side
            with autocast():
                c_x, c_y = model.content(x, "sim"), model.content(y, "exp")
                mu_x, lv_x = model.attribute(x, "sim")
                mu_y, lv_y = model.attribute(y, "exp")
                a_x, a_y = model.sample_attribute(mu_x, lv_x), model.sample_attribute(mu_y, lv_y)
                v = model.generate(c_x, a_y, "exp", base_x)
                u = model.generate(c_y, a_x, "sim")
                z = torch.randn_like(a_y)
                v_z = model.generate(c_x, z, "exp", base_x)
                x_rec = model.generate(model.content(v, "exp"), model.attribute(u, "sim")[0], "sim")
                x_self = model.generate(c_x, a_x, "sim")
                exp_recon = not (settings.physics_prior and settings.prior_exp_recon == "none")
                if exp_recon:
                    y_rec = model.generate(model.content(u, "sim"), model.attribute(v, "exp")[0], "exp", base_y)
                    y_self = model.generate(c_y, a_y, "exp", base_y)
                z_rec = model.attribute(v_z, "exp")[0]
                terms = {
                    "domain": gan_g_loss(discs.domain(v, "exp")) + gan_g_loss(discs.domain(u, "sim")) + gan_g_loss(discs.domain(v_z, "exp")),
                    "content_adv": 0.5 * (((discs.content(c_x) - 0.5) ** 2).mean() + ((discs.content(c_y) - 0.5) ** 2).mean()),
                    "cross_cycle": l1(x_rec, x) + (l1(y_rec, y) if exp_recon else 0.0),
                    "self_recon": l1(x_self, x) + (l1(y_self, y) if exp_recon else 0.0),
                    "kl": kl_loss(mu_x, lv_x) + kl_loss(mu_y, lv_y),
                    "latent": l1(z_rec, z),
                    "consistency": content_consistency(u, y, v, consistency_x, form=settings.content_form, sigma_px=sigma_px),
                }
                if cfg.spectrum_discriminator:
                    terms["spectrum"] = gan_g_loss(discs.spectrum(v))
                if settings.physics_prior and w.get("residual", 0.0) > 0:
                    terms["residual"] = l1(v, base_x) + l1(v_z, base_x)
                if cfg.residual_discriminator:
                    terms["noise"] = gan_g_loss(discs.residual(v)) + gan_g_loss(discs.residual(v_z))
            loss_g = sum(anchor_weight(settings, state.iteration, total) * t if k == "residual" else w[k] * t for k, t in terms.items())
            bad = [k for k, t in terms.items() if not torch.isfinite(t)]
            if bad:
                raise FactoryError(f"training diverged at iteration {state.iteration}: the '{bad[0]}' loss became non-finite; the last good checkpoint is kept in {work_dir}")
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss_g).backward()
            scaler.step(opt_g)

            # ---- discriminator side
            fake_v, fake_u, fake_vz = v.detach(), u.detach(), v_z.detach()
            with autocast():
                loss_d = (
                    gan_d_loss(discs.domain(y, "exp"), discs.domain(fake_v, "exp"))
                    + gan_d_loss(discs.domain(x, "sim"), discs.domain(fake_u, "sim"))
                    + gan_d_loss(discs.domain(y, "exp"), discs.domain(fake_vz, "exp"))
                    + ((discs.content(c_x.detach()) - 1) ** 2).mean() + (discs.content(c_y.detach()) ** 2).mean()
                )
                if cfg.spectrum_discriminator:
                    loss_d = loss_d + gan_d_loss(discs.spectrum(y), discs.spectrum(fake_v))
                if cfg.residual_discriminator:
                    real_noise = discs.residual(y)
                    loss_d = loss_d + gan_d_loss(real_noise, discs.residual(fake_v)) + gan_d_loss(real_noise, discs.residual(fake_vz))
            if not torch.isfinite(loss_d):
                raise FactoryError(f"training diverged at iteration {state.iteration}: the discriminator loss became non-finite; the last good checkpoint is kept in {work_dir}")
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(loss_d).backward()
            scaler.step(opt_d)
            scaler.update()

            record = {k: float(t.detach()) for k, t in terms.items()} | {"D": float(loss_d.detach())}
            state.history.append(record)
            state.iteration += 1
            bar.set_postfix({k: f"{val:.3g}" for k, val in record.items() if k in ("domain", "consistency", "cross_cycle", "D")})
            bar.update()
            if every > 0 and (state.iteration % every == 0 or state.iteration == total):
                run_monitor()
            if state.iteration % settings.checkpoint_every == 0 or state.iteration == stop_at:
                save()
    model.eval()
    return model, state.history, state.monitor


def anchor_weight(settings: DritSettings, iteration: int, total: int) -> float:
    """The residual anchor's weight at ``iteration``: fixed, or linear from ``weights["residual"]``
    to ``residual_weight_end`` over the run (a strong anchor early, while the discriminators
    learn, that lets the residual depart later without running away from the start)."""
    start = float(settings.weights.get("residual", 0.0))
    end = settings.residual_weight_end
    if end is None or total <= 0:
        return start
    return start + (float(end) - start) * min(max(iteration / total, 0.0), 1.0)


def settings_for(preset: str, iterations: int | None = None, **overrides: Any) -> DritSettings:
    if preset not in PRESETS:
        raise FactoryError(f"unknown preset '{preset}' (available: {', '.join(PRESETS)})", field="preset")
    settings = PRESETS[preset]
    if iterations is not None:
        settings = replace(settings, iterations=int(iterations))
    return replace(settings, **overrides) if overrides else settings
