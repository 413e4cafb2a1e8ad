"""The DRIT translator behind the shared :class:`translators.base.Translator` interface.

A DRIT STYLE bundle holds, besides ``style.json``:

``weights.pt``
    the generator-side weights (content and attribute encoders, generators);
``exp_codes.npy``
    the attribute codes (means) of the experimental training patches, (n, attr_dim).

``style.json``'s parameters record the model config, the training settings and history
summary, and the normalisation statistics: simulations are mapped to [0, 1] by their own
0.5th/99.5th percentiles, and the output back to the experiment's units by the
experimental range stored here.

With the physics prior (``settings.physics_prior``), ``style.json`` also holds the fitted
parametric model (``prior``): translation first renders each clean image with it (one
draw from the image's generator, scan geometry included), then DRIT adds its learned
residual. The translation's ``clean`` and ``displacement`` are then the parametric draw's,
so masks and atoms follow the geometry.

Translation draws, per image, one experimental code (or, with probability
``interpolate``, a point between two of them) from that image's generator, so sample *i*
of ``generate`` depends only on (seed, *i*). Inference is deterministic given the code.
Images are padded by reflection to a multiple of the model's stride and cropped back.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datafactory.device import autocast_dtype, resolve_device
from datafactory.errors import FactoryError

from translators.base import Translation, Translator, as_batch

WEIGHTS_FILE = "weights.pt"
CODES_FILE = "exp_codes.npy"

#: Reflected margin (px) added below and to the right of every image the networks translate,
#: cut off afterwards. The stride-2 convolutions sample on a grid anchored at the top-left
#: pixel, so the bottom and right edges see the image differently from the rest: a long run
#: on the real crops learned a dark band along the bottom edge (hist_kl 9.2 of 256²
#: translations against a real crop; README). The top and left edges need no margin.
BORDER_PX = 16


def inference_settings(device: str) -> tuple[Any, Any]:
    """(memory format, autocast dtype or None) for translation on ``device``.

    On CUDA the networks run in channels_last under bfloat16 autocast (float16 on GPUs
    without bf16; tensor-core friendly).
    On a CPU with native bfloat16 (AVX512-BF16/AMX, as on this project's machines) they
    run under bfloat16 autocast: twice as fast here (18 against 9 images/s of 256², two
    threads, the networks alone), deviating from float32 by about 2–3 % of the network
    output's own standard deviation on average; the output layer stays in float32. Other
    CPUs use plain float32.
    """
    import torch

    layout = torch.channels_last if str(device).startswith("cuda") else torch.contiguous_format
    return layout, autocast_dtype(device)


class DritTranslator(Translator):
    """A trained DRIT model that restyles clean simulations as the experiment."""

    method = "drit"
    recorded_parameters = ("attr_index", "attr_mix_index", "attr_mix")

    def __init__(self, model, codes: np.ndarray, parameters: dict[str, Any], pixel_size_A: float, device: str = "cpu"):
        self.codes = np.asarray(codes, dtype=np.float32)
        self._parameters = parameters
        self.pixel_size_A = float(pixel_size_A)
        self.device = device
        self.memory_format, self.amp_dtype = inference_settings(device)
        self.model = model.to(memory_format=self.memory_format)
        self.interpolate = float(parameters.get("interpolate", 0.5))
        self.exp_range = tuple(parameters["exp_range"])
        self.prior = None
        if parameters.get("prior") is not None:
            from translators.parametric import RECORDED_PARAMETERS, StyleParameters

            self.prior = StyleParameters.from_dict(parameters["prior"])
            # this instance also records the parametric draw behind each image
            self.recorded_parameters = type(self).recorded_parameters + tuple(f"prior_{k}" for k in RECORDED_PARAMETERS)

    # ---------------------------------------------------------------- fitting

    @classmethod
    def fit(
        cls,
        micrographs: Sequence[Any],
        *,
        sims: Sequence[np.ndarray] | None = None,
        settings=None,
        work_dir: Path | None = None,
        pixel_size_A: float | None = None,
        device: str = "cpu",
        resume: bool = False,
        seed: int = 0,
        progress: bool = True,
        affine: np.ndarray | None = None,
        prior: Any = None,
        held_out: Sequence[np.ndarray] | None = None,
        **_: Any,
    ) -> "DritTranslator":
        """Train on experimental ``micrographs`` and clean ``sims`` (both at ``pixel_size_A``).

        With ``settings.physics_prior`` the parametric model is fitted first (``affine``: the
        lattice-derived scan distortion, as for ``--method parametric``) and used as the base;
        ``prior`` (StyleParameters) gives one fitted already (e.g. with adsorbates). With
        ``settings.monitor_every`` and ``held_out`` (clean simulations not in ``sims``), the
        classifier AUC of their translations against the experiments is measured along training
        (:func:`auc_monitor`) and kept in the parameters (``monitor``).
        """
        from translators.drit.train import PRESETS, percentile_range, train

        settings = settings or PRESETS["quick"]
        exps = [np.asarray(m.image, dtype=np.float32) for m in micrographs]
        pixel_size_A = float(pixel_size_A or micrographs[0].pixel_size_A)
        exp_range = percentile_range(exps)
        device = resolve_device(device)
        if not settings.physics_prior:
            prior = None
        elif prior is None:
            from translators.parametric import ParametricTranslator

            prior = ParametricTranslator.fit(micrographs, pixel_size_A=pixel_size_A, affine=affine).params
        monitor = None
        if settings.monitor_every > 0 and held_out:
            monitor = auc_monitor(held_out, exps, prior, pixel_size_A, exp_range, settings.crop_px, device, seed)
        model, history, monitored = train(
            list(sims or []), exps, settings, Path(work_dir or "drit-training"), exp_range=exp_range,
            pixel_size_A=pixel_size_A, seed=seed, device=device, resume=resume, progress=progress,
            prior=None if prior is None else prior_renderer(prior, pixel_size_A, exp_range), monitor=monitor,
        )
        codes = experimental_codes(model, exps, exp_range, settings.crop_px, device)
        last = history[-min(len(history), 50):]
        parameters = {
            "config": model.cfg.to_dict(),
            "settings": settings.to_dict(),
            "exp_range": list(exp_range),
            "interpolate": 0.5,
            "iterations": len(history),
            "final_losses": {k: float(np.mean([h[k] for h in last])) for k in last[0]} if last else {},
        }
        if prior is not None:
            parameters["prior"] = prior.to_dict()
        if monitored:
            parameters["monitor"] = monitored
        return cls(model, codes, parameters, pixel_size_A, device)

    # ---------------------------------------------------------------- translation

    def _normalise(self, image: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(image, [0.5, 99.5])
        return ((image - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)

    def _codes_for(self, rngs: Sequence[np.random.Generator]) -> tuple[np.ndarray, list[dict[str, float]]]:
        """One attribute code per image (an experimental code, or a mix of two) and what was drawn."""
        out = np.empty((len(rngs), self.codes.shape[1]), np.float32)
        params = []
        for k, g in enumerate(rngs):
            i = int(g.integers(len(self.codes)))
            if len(self.codes) > 1 and g.random() < self.interpolate:
                j = int(g.integers(len(self.codes)))
                t = float(g.random())
                out[k] = (1 - t) * self.codes[i] + t * self.codes[j]
                params.append({"attr_index": float(i), "attr_mix_index": float(j), "attr_mix": t})
            else:
                out[k] = self.codes[i]
                params.append({"attr_index": float(i), "attr_mix_index": float(i), "attr_mix": 0.0})
        return out, params

    def prior_draw(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The parametric rendering that ``translate(clean[None], [rng])`` starts from (same draw), in
        the experiment's units: DRIT's output minus this is what the learned residual changed."""
        if self.prior is None:
            raise ValueError("this DRIT style has no physics prior")
        from translators.parametric import render

        self._codes_for([rng])  # translate draws the attribute code first
        return render(np.asarray(clean, dtype=np.float32), self.prior, self.pixel_size_A, rng)[0]

    def _pass_size(self, torch) -> int:
        """Images per forward pass. On the CPU, one per intra-op thread: larger passes allocate
        fresh activation buffers and fault their pages in, so 16 images of 256² in one pass ran
        at 6.9 images/s on one thread against 9.8 one at a time. On CUDA, the whole batch."""
        return 1 << 30 if str(self.device).startswith("cuda") else max(1, torch.get_num_threads())

    def translate(self, clean_batch: np.ndarray, rng) -> Translation:
        import torch

        from translators.drit.train import normalise

        clean_batch, rngs = as_batch(clean_batch, rng)

        codes, drawn = self._codes_for(rngs)
        clean, base, displacement = clean_batch.copy(), None, None
        if self.prior is not None:
            from translators.parametric import render

            base = np.empty_like(clean_batch)
            for i, (image, g) in enumerate(zip(clean_batch, rngs)):
                rendered, clean[i], field_, values = render(image, self.prior, self.pixel_size_A, g)
                base[i] = normalise(rendered, *self.exp_range)
                drawn[i] |= {f"prior_{k}": v for k, v in values.items()}
                if field_ is not None:
                    if displacement is None:
                        displacement = np.zeros((len(clean_batch), 2, *clean_batch.shape[1:]), np.float32)
                    displacement[i] = field_
            base = base[:, None]
        x = np.stack([self._normalise(im) for im in clean])[:, None]
        stride = self.model.cfg.size_multiple
        rows, cols = x.shape[2:]
        m = min(BORDER_PX, rows - 1, cols - 1)  # on tiny images, at most one reflection of the content
        pad = ((0, 0), (0, 0), (0, m + (-(rows + m)) % stride), (0, m + (-(cols + m)) % stride))
        x = np.pad(x, pad, mode="reflect")
        base = None if base is None else np.pad(base, pad, mode="reflect")
        amp = contextlib.nullcontext() if self.amp_dtype is None else torch.autocast(torch.device(self.device).type, dtype=self.amp_dtype)
        with torch.inference_mode(), amp:
            out = np.empty((len(x), rows, cols), np.float32)
            for lo in range(0, len(x), self._pass_size(torch)):
                part = slice(lo, lo + self._pass_size(torch))
                xt = torch.from_numpy(np.ascontiguousarray(x[part])).to(self.device, memory_format=self.memory_format)
                at = torch.from_numpy(codes[part]).to(self.device)
                bt = None if base is None else torch.from_numpy(np.ascontiguousarray(base[part])).to(self.device, memory_format=self.memory_format)
                out[part] = self.model.generate(self.model.content(xt, "sim"), at, "exp", bt).float().cpu().numpy()[:, 0, :rows, :cols]
        lo, hi = self.exp_range
        images = (lo + (hi - lo) * out).astype(np.float32)
        return Translation(images=images, clean=clean, displacement=displacement, params=drawn)

    def margin_A(self, shape: tuple[int, int]) -> float:
        if self.prior is None:  # the generator moves nothing geometric
            return 0.0
        from translators.parametric import scan_reach_px

        return scan_reach_px(self.prior, shape, self.pixel_size_A) * self.pixel_size_A

    # ---------------------------------------------------------------- bundle

    def parameters(self) -> dict[str, Any]:
        return self._parameters

    def weight_files(self) -> dict[str, bytes]:
        import torch

        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, buffer)
        codes = io.BytesIO()
        np.save(codes, self.codes)
        return {WEIGHTS_FILE: buffer.getvalue(), CODES_FILE: codes.getvalue()}

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any], directory: Path) -> "DritTranslator":
        import torch

        from translators.drit.model import Drit, DritConfig

        directory = Path(directory)
        weights, codes = directory / WEIGHTS_FILE, directory / CODES_FILE
        if not weights.is_file() or not codes.is_file():
            raise FactoryError(f"'{directory}' lacks {WEIGHTS_FILE} or {CODES_FILE}; fit it again", field="style")
        device = resolve_device("auto")
        try:
            model = Drit(DritConfig.from_dict(parameters["config"]))
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            codes_array = np.load(codes)
        except Exception as exc:  # noqa: BLE001 - any damaged bundle file is the user's to refit
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FactoryError(f"'{directory}' is damaged ({reason}); fit it again", field="style") from None
        model.to(device).eval()
        return cls(model, codes_array, parameters, pixel_size_A=1.0, device=device)

    def summary(self) -> str:
        s = self._parameters.get("settings", {})
        losses = self._parameters.get("final_losses", {})
        return "\n".join([
            f"pixel size        {self.pixel_size_A:.5f} Å/px",
            f"model             DRIT width {s.get('width')}, {self._parameters.get('iterations')} iterations, crops {s.get('crop_px')} px",
            f"content loss      {s.get('content_form')} (weight {s.get('weights', {}).get('consistency')})",
            f"physics prior     {'parametric model + learned residual' + _anchor(s) if self.prior is not None else 'off'}",
            f"experimental codes {len(self.codes)} (attribute dim {self.codes.shape[1]})",
            "final losses      " + ", ".join(f"{k} {v:.3g}" for k, v in losses.items()),
        ])


def _anchor(settings: dict[str, Any]) -> str:
    """How the residual was held near the prior, from a bundle's training settings."""
    weight = settings.get("weights", {}).get("residual", 0.0)
    end = settings.get("residual_weight_end")
    recon = settings.get("prior_exp_recon", "self")
    schedule = f"{weight:g}" if end is None else f"{weight:g} → {end:g} over the run"
    return f" (L1 anchor weight {schedule}, exp reconstructions {'on' if recon == 'self' else 'off'})"


def prior_renderer(params, pixel_size_A: float, exp_range: tuple[float, float]):
    """The physics prior for training: ``(crop, rng) -> (rendered, displaced_crop)``.

    ``crop`` is a normalised clean crop; ``rendered`` is one parametric draw of it,
    normalised by the experimental range; ``displaced_crop`` is the crop under that draw's
    scan geometry, in the crop's units.
    """
    from translators.parametric import render
    from translators.drit.train import normalise

    def render_crop(crop: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        rendered, displaced, _, _ = render(crop, params, pixel_size_A, rng)
        return normalise(rendered, *exp_range), displaced

    return render_crop


def experimental_codes(model, exps: Sequence[np.ndarray], exp_range: tuple[float, float], crop_px: int, device: str) -> np.ndarray:
    """Attribute means of non-overlapping crop_px tiles of every experimental image."""
    import torch

    from translators.drit.train import normalise

    tiles = []
    for image in exps:
        x = normalise(image, *exp_range)
        for r in range(0, x.shape[0] - crop_px + 1, crop_px):
            for c in range(0, x.shape[1] - crop_px + 1, crop_px):
                tiles.append(x[r : r + crop_px, c : c + crop_px])
    codes = []
    with torch.inference_mode():
        for k in range(0, len(tiles), 16):
            t = torch.from_numpy(np.stack(tiles[k : k + 16])[:, None]).to(device)
            codes.append(model.attribute(t, "exp")[0].float().cpu().numpy())
    return np.concatenate(codes)


#: Critics (seeds of :func:`~translators.metrics.classifier_auc`) averaged at each point of the monitor's curve.
MONITOR_CRITICS = 3


def auc_monitor(held_out: Sequence[np.ndarray], exps: Sequence[np.ndarray], prior, pixel_size_A: float, exp_range: tuple[float, float],
                crop_px: int, device: str, seed: int):
    """``monitor(model) -> {"auc": …, "auc_prior": …}`` for :func:`translators.drit.train.train`.

    The held-out clean images are rendered once by the prior (one fixed draw each, the same
    at every call) and translated by the model being trained, with the attribute code of the
    experimental tiles (image ``k`` takes code ``k``); ``auc`` is the mean over
    :data:`MONITOR_CRITICS` critic seeds of :func:`translators.metrics.classifier_auc` of the
    experiments against those translations,
    ``auc_prior`` the same of the prior's renderings alone (measured once): the learned
    residual pays when ``auc`` falls below ``auc_prior``. Without a prior, ``auc_prior`` is
    that of the clean images.
    """
    import torch

    from translators.metrics import classifier_auc
    from translators.drit.fit import auc_patch_px
    from translators.drit.train import normalise

    lo, hi = exp_range
    stride = 4
    images = [np.asarray(im, dtype=np.float32)[: im.shape[0] - im.shape[0] % stride, : im.shape[1] - im.shape[1] % stride] for im in held_out]
    if prior is not None:
        from translators.parametric import render

        draws = [render(im, prior, pixel_size_A, np.random.default_rng([seed, 31, k])) for k, im in enumerate(images)]
        start = [d[0] for d in draws]
        x = [d[1] for d in draws]
        base = [normalise(r, lo, hi) for r in start]
    else:
        start, x, base = images, images, None
    x = [((im - np.percentile(im, 0.5)) / max(np.percentile(im, 99.5) - np.percentile(im, 0.5), 1e-12)).astype(np.float32) for im in x]
    experiments = [np.asarray(e, dtype=np.float32) for e in exps]
    patch = auc_patch_px(experiments, images) or 32

    def auc(generated):  # one critic is noisy on a few images (±0.1): the mean of MONITOR_CRITICS
        return float(np.mean([classifier_auc(experiments, generated, patch_px=patch, rng=np.random.default_rng([seed, k]))
                              for k in range(MONITOR_CRITICS)]))

    prior_auc = auc(start)

    def monitor(model) -> dict[str, float]:
        codes = experimental_codes(model, experiments, exp_range, crop_px, device)
        out = []
        with torch.inference_mode():
            for k, xi in enumerate(x):
                xt = torch.from_numpy(xi[None, None]).to(device)
                bt = None if base is None else torch.from_numpy(base[k][None, None]).to(device)
                at = torch.from_numpy(codes[k % len(codes)][None]).to(device)
                v = model.generate(model.content(xt, "sim"), at, "exp", bt).float().cpu().numpy()[0, 0]
                out.append(lo + (hi - lo) * v)
        return {"auc": auc(out), "auc_prior": prior_auc}

    return monitor
