#!/usr/bin/env python
"""Throughput of style translation at 256×256 on all cores.

A parametric style is fitted to a synthetic "experiment" (a 512² MoS2 simulation put
through the model with every artefact switched on), then 256² clean simulations are
translated in worker processes (one BLAS thread each), as `generate` will do:
``translate[parametric]: <x> images/s (256x256, <k> processes)``.

The last line, ``translate[drit]: <x> images/s``, times the DRIT translator with the quick
preset's architecture on the CPU (its speed does not depend on training).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

N_IMAGES = 1024
CHUNK = 64

_TRANSLATOR = None
_CLEAN = None


def _init(translator, clean):
    global _TRANSLATOR, _CLEAN
    _TRANSLATOR, _CLEAN = translator, clean


def _work(start: int) -> int:
    from threadpoolctl import threadpool_limits

    from datafactory.rng import sample_rng

    with threadpool_limits(1):
        batch = np.stack([_CLEAN[(start + k) % len(_CLEAN)] for k in range(CHUNK)])
        rngs = [sample_rng(0, start + k, "style") for k in range(CHUNK)]
        _TRANSLATOR.translate(batch, rngs)
    return CHUNK


def main() -> None:
    from conftest import make_plan

    from datafactory.simulation.samples import simulate_sample
    from translators.parametric import ParametricTranslator, StyleParameters, fit_image, render

    pixel_A = 0.127
    big = make_plan({"microscope": {"image_size_px": 512, "pixel_size_A": pixel_A, "source_size_A": 0.6}, "structure": {"rotation_deg": 13.0}})
    truth = StyleParameters(
        gain=3.0, offset=100.0, dose_counts=30.0, background=0.25, jitter_A=0.05, streak=0.02,
        contamination=0.05, contamination_length_A=6.0, flyback_A=0.2, flyback_decay_A=2.0,
        affine=[[1.01, 0.0], [0.03, 0.99]], spread=0.0,
    )
    experiment, *_ = render(simulate_sample(big, 0, 0).image, truth, pixel_A, np.random.default_rng(0))
    translator = ParametricTranslator(fit_image(experiment, pixel_A), pixel_A)
    small = make_plan({"microscope": {"image_size_px": 256, "pixel_size_A": pixel_A, "source_size_A": 0.6}, "structure": {"rotation_deg": [0, 60]}})
    clean = np.stack([simulate_sample(small, 0, i).image for i in range(8)])

    drit = drit_rate(clean, translator.params)  # first, in a process whose thread pools nothing has limited yet
    workers = os.cpu_count() or 1
    starts = list(range(0, N_IMAGES, CHUNK))
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(translator, clean)) as pool:
        list(pool.map(_work, starts[:workers]))  # warm up
        t0 = time.perf_counter()
        done = sum(pool.map(_work, starts))
        elapsed = time.perf_counter() - t0
    _init(translator, clean)
    _work(0)  # warm up
    t0 = time.perf_counter()
    _work(0)
    single = CHUNK / (time.perf_counter() - t0)
    print(f"one process: {single:.0f} images/s")
    print(f"translate[parametric]: {done / elapsed:.0f} images/s (256x256, {workers} processes)")
    print(f"translate[drit]: {drit:.1f} images/s (256x256, quick-preset architecture and physics prior, CPU{', bf16' if translator_amp() else ''}, batch 8)")


def drit_rate(clean: np.ndarray, prior) -> float:
    """Images/s of the DRIT translator with the quick preset's architecture and physics prior
    (``prior``: fitted parametric parameters); speed does not depend on training."""
    import torch

    from translators.drit.model import Drit, DritConfig
    from translators.drit.train import PRESETS
    from translators.drit.translator import DritTranslator

    torch.set_num_threads(os.cpu_count() or 1)
    settings = PRESETS["quick"]
    model = Drit(DritConfig(width=settings.width, residual_prior=settings.physics_prior)).eval()
    codes = np.zeros((4, model.cfg.attr_dim), np.float32)
    parameters = {"exp_range": [0.0, 1.0], "config": model.cfg.to_dict()}
    if settings.physics_prior:
        parameters["prior"] = prior.to_dict()
    translator = DritTranslator(model, codes, parameters, 0.127)
    batch = np.stack([clean[k % len(clean)] for k in range(8)])
    for _ in range(2):  # warm up at the timed shape (oneDNN builds its kernels per shape)
        translator.translate(batch, [np.random.default_rng(k) for k in range(8)])
    t0 = time.perf_counter()
    rounds = 3
    for r in range(rounds):
        translator.translate(batch, [np.random.default_rng(r * 8 + k) for k in range(8)])
    return rounds * len(batch) / (time.perf_counter() - t0)


def translator_amp() -> bool:
    from datafactory.device import cpu_bf16_supported

    return cpu_bf16_supported()


if __name__ == "__main__":
    main()
