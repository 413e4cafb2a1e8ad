"""DRIT training: checkpoints and resume, divergence, the translator bundle, CLI bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_plan

from datafactory.errors import FactoryError
from datafactory.simulation.samples import simulate_sample
from translators.base import load_style
from translators.drit.train import PRESETS, train
from translators.drit.translator import DritTranslator
from translators.parametric import StyleParameters, render

TINY = replace(PRESETS["quick"], crop_px=32, batch=1, iterations=6, width=8, checkpoint_every=3, threads=1, physics_prior=False)
PIXEL_A = 0.12


@pytest.fixture(scope="module")
def data():
    plan = make_plan({"microscope": {"image_size_px": 64, "pixel_size_A": PIXEL_A, "source_size_A": 0.6}, "structure": {"rotation_deg": [0, 60]}})
    sims = [simulate_sample(plan, 0, i).image for i in range(4)]
    noisy = StyleParameters(gain=1.0, dose_counts=30.0, background=0.3, spread=0.0)
    exps = [render(simulate_sample(plan, 1, i).image, noisy, PIXEL_A, np.random.default_rng(i))[0] for i in range(2)]
    return sims, exps


def _weights(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_continues_exactly_where_it_stopped(data, tmp_path):
    sims, exps = data
    kwargs = dict(exp_range=(0.0, 60.0), pixel_size_A=PIXEL_A, progress=False)
    full, history, _ = train(sims, exps, TINY, tmp_path / "a", **kwargs)
    assert len(history) == 6 and all(np.isfinite(list(h.values())).all() for h in history)
    train(sims, exps, TINY, tmp_path / "b", budget_iterations=4, **kwargs)  # interrupted after 4 (checkpoint at 3 and 4)
    resumed, history_b, _ = train(sims, exps, TINY, tmp_path / "b", resume=True, **kwargs)
    assert len(history_b) == 6
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FactoryError, match="other training settings"):
        train(sims, exps, replace(TINY, iterations=7), tmp_path / "b", resume=True, **kwargs)
    with pytest.raises(FactoryError, match="no checkpoint"):
        train(sims, exps, TINY, tmp_path / "none", resume=True, **kwargs)


def test_a_diverging_loss_is_named_and_the_checkpoint_kept(data, tmp_path, monkeypatch):
    sims, exps = data
    kwargs = dict(exp_range=(0.0, 60.0), pixel_size_A=PIXEL_A, progress=False)
    train(sims, exps, TINY, tmp_path / "w", budget_iterations=3, **kwargs)
    saved = (tmp_path / "w" / "checkpoint.pt").read_bytes()
    import translators.drit.losses as losses

    monkeypatch.setattr(losses, "kl_loss", lambda mu, logvar: torch.tensor(float("nan")))
    with pytest.raises(FactoryError, match="'kl' loss became non-finite"):
        train(sims, exps, TINY, tmp_path / "w", resume=True, **kwargs)
    assert (tmp_path / "w" / "checkpoint.pt").read_bytes() == saved


def test_experiments_smaller_than_the_crop_are_refused(data, tmp_path):
    sims, exps = data
    with pytest.raises(FactoryError, match="smaller than the 96 px training crop"):
        train(sims, [e[:40, :40] for e in exps], replace(TINY, crop_px=96), tmp_path, exp_range=(0, 1), pixel_size_A=PIXEL_A, progress=False)
    with pytest.raises(FactoryError, match="pool is empty"):
        train([], exps, TINY, tmp_path, exp_range=(0, 1), pixel_size_A=PIXEL_A, progress=False)


def _assert_same_weights(a: DritTranslator, b: DritTranslator) -> None:
    """The bundle holds the model and the experimental codes bit for bit."""
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert list(wa) == list(wb) and all(torch.equal(wa[k].cpu(), wb[k].cpu()) for k in wa)
    np.testing.assert_array_equal(a.codes, b.codes)


def test_translator_bundle_round_trip_and_any_size(data, tmp_path, monkeypatch):
    sims, exps = data
    # a bundle loads onto the GPU where there is one (float16 there): compare with the CPU-fitted translator on the CPU
    monkeypatch.setattr("translators.drit.translator.resolve_device", lambda device: "cpu")

    class M:
        def __init__(self, image):
            self.image, self.pixel_size_A, self.name = image, PIXEL_A, "exp"

    translator = DritTranslator.fit([M(e) for e in exps], sims=sims, settings=TINY, work_dir=tmp_path / "train", device="cpu", progress=False)
    assert translator.codes.shape[1] == 8 and len(translator.codes) >= 2
    path = translator.save(tmp_path / "style")
    import translators

    loaded = translators.load(path)  # the package-level loader: the same interface for every method
    assert loaded.method == "drit" and loaded.pixel_size_A == pytest.approx(PIXEL_A) and loaded.device == translator.device == "cpu"
    _assert_same_weights(translator, loaded)
    odd = sims[0][:50, :62]  # not a multiple of the model's stride: padded and cropped back
    a = translator.translate(odd[None], [np.random.default_rng(3)])
    b = loaded.translate(odd[None], [np.random.default_rng(3)])
    assert a.images.shape == (1, 50, 62) and a.displacement is None
    np.testing.assert_array_equal(a.images, b.images)  # the same weights on the same device: the same numbers
    np.testing.assert_array_equal(a.clean, odd[None])
    c = translator.translate(np.stack([odd, odd]), [np.random.default_rng(3), np.random.default_rng(4)])
    np.testing.assert_allclose(c.images[0], a.images[0], rtol=1e-5, atol=1e-4)  # independent of the batch
    (path / "weights.pt").write_bytes(b"junk")
    with pytest.raises(FactoryError):
        load_style(path)


def test_drit_cli_bad_input(run_cli, tmp_path):
    import tifffile

    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.random.default_rng(0).random((64, 64)).astype(np.float32), imagej=True, resolution=(1 / PIXEL_A, 1 / PIXEL_A), metadata={"unit": "A"})
    code, _, err = run_cli("fit-style", small, "--out", tmp_path / "s", "-q")
    assert code == 2 and "--sim" in err and err.count("\n") == 1
    code, _, err = run_cli("fit-style", small, "--config", "mos2_monolayer", "--out", tmp_path / "s", "-q")
    assert code == 2 and "smaller than the 96 px training crop" in err
    code, _, err = run_cli("fit-style", small, "--config", "mos2_monolayer", "--threads", 0, "--out", tmp_path / "s", "-q")
    assert code == 2 and "--threads" in err and err.count("\n") == 1
    code, _, err = run_cli("fit-style", small, "--config", "mos2_monolayer", "--residual-weight", -1, "--out", tmp_path / "s", "-q")
    assert code == 2 and "--residual-weight" in err and err.count("\n") == 1
    code, _, err = run_cli("fit-style", small, "--config", "mos2_monolayer", "--residual-weight-end", "nan", "--out", tmp_path / "s", "-q")
    assert code == 2 and "--residual-weight-end" in err and err.count("\n") == 1
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, np.random.default_rng(1).random((128, 128)).astype(np.float32), imagej=True, resolution=(1 / 0.2, 1 / 0.2), metadata={"unit": "A"})
    code, _, err = run_cli("fit-style", small, other, "--config", "mos2_monolayer", "--out", tmp_path / "s", "-q")
    assert code == 2 and "--resample" in err
    assert not (tmp_path / "s").exists()


def test_physics_prior_starts_at_the_parametric_model_and_round_trips(data, tmp_path, monkeypatch):
    from translators.drit.model import Drit, DritConfig

    sims, exps = data
    prior = StyleParameters(gain=2.0, offset=5.0, dose_counts=40.0, background=0.2, jitter_A=0.02, spread=0.0)
    # untrained: the residual is exactly zero, so DRIT returns the parametric rendering of the same draw
    model = Drit(DritConfig(width=8, content_blocks=2, gen_blocks=1, residual_prior=True)).eval()
    exp_range = (0.0, 200.0)
    untrained = DritTranslator(model, np.zeros((2, 8), np.float32), {"exp_range": list(exp_range), "prior": prior.to_dict()}, PIXEL_A)
    clean = sims[0][:48, :60]
    out = untrained.translate(clean[None], [np.random.default_rng(5)])
    g = np.random.default_rng(5)
    untrained._codes_for([g])
    image, displaced, field_, _ = render(clean, prior, PIXEL_A, g)
    np.testing.assert_allclose(out.images[0], image, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(untrained.prior_draw(clean, np.random.default_rng(5)), image)  # the paired baseline of the benchmarks
    np.testing.assert_allclose(out.clean[0], displaced, atol=1e-6)
    np.testing.assert_allclose(out.displacement[0], field_, atol=1e-6)
    assert "prior_jitter_A" in untrained.recorded_parameters and "prior_jitter_A" in out.params[0]

    class M:
        def __init__(self, image):
            self.image, self.pixel_size_A, self.name = image, PIXEL_A, "exp"

    settings = replace(TINY, physics_prior=True)
    affine = np.array([[1.0, 0.03], [0.0, 1.0]])  # a sheared scan: the prior's geometry moves the atoms
    translator = DritTranslator.fit([M(e) for e in exps], sims=sims, settings=settings, work_dir=tmp_path / "t", device="cpu", progress=False, affine=affine)
    assert translator.model.cfg.residual_prior and translator.prior is not None
    monkeypatch.setattr("translators.drit.translator.resolve_device", lambda device: "cpu")  # as the fitted one, even with a GPU
    loaded = load_style(translator.save(tmp_path / "style"))
    assert loaded.device == translator.device == "cpu" and loaded.prior == translator.prior
    _assert_same_weights(translator, loaded)
    a = translator.translate(sims[1][None], [np.random.default_rng(1)])
    b = loaded.translate(sims[1][None], [np.random.default_rng(1)])
    for name in ("images", "clean", "displacement"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.displacement is not None and np.abs(a.displacement).max() > 0.3
    assert not np.allclose(a.clean, sims[1][None])  # clean carries the same geometry as the image
    with pytest.raises(ValueError, match="prior renderer"):
        train(sims, exps, settings, tmp_path / "p", exp_range=exp_range, pixel_size_A=PIXEL_A, progress=False)


def test_fit_style_drit_with_physics_prior_end_to_end(data, run_cli, tmp_path):
    """The CLI path: pool from a config, selection, a short training with the prior, bundle and report."""
    import json

    import tifffile

    _, exps = data
    experiment = tmp_path / "exp.tif"
    tifffile.imwrite(experiment, exps[0], imagej=True, resolution=(1 / PIXEL_A, 1 / PIXEL_A), metadata={"unit": "A"})
    style = tmp_path / "style"
    code, out, err = run_cli(
        "fit-style", experiment, "--config", "mos2_monolayer", "--iterations", 3, "--crop", 32, "--pool", 6,
        "--physics-prior", "--residual-weight", 7, "--threads", 1, "--device", "cpu", "--out", style, "-q",
    )
    assert code == 0, err
    record = json.loads((style / "style.json").read_text())
    assert record["method"] == "drit" and record["parameters"]["prior"]["dose_counts"] > 0
    assert record["parameters"]["settings"]["physics_prior"] and record["parameters"]["settings"]["threads"] == 1
    assert record["parameters"]["settings"]["weights"]["residual"] == 7.0
    report = json.loads((style / "report.json").read_text())
    assert [row["name"] for row in report["metrics"]] == ["experiment", "clean simulation", "parametric", "DRIT"]
    # the prior renders the clean image's columns where they are and the residual is anchored to it: DRIT keeps
    # the columns in place (measured: 13 of 13 matched, mean 2.9 pm, mean vector 0.6 pm; one pixel is 12 pm)
    shift = report["column_shift_clean_vs_drit"]
    assert shift["n_ref"] >= 10 and shift["fraction_matched"] >= 0.9
    assert shift["mean_pm"] < 8 and np.hypot(*shift["mean_vector_pm"]) < 5
    # the classifier AUC of every row: 4 held-out simulations against the experiment (one 64 px image: 16 px patches)
    auc = {row["name"]: row["classifier_auc"] for row in report["metrics"]}
    assert auc["experiment"] is None and all(0 <= auc[name] <= 1 for name in ("parametric", "DRIT"))
    assert auc["clean simulation"] > 0.9  # noise-free images are told apart from the noisy experiment
    assert report["classifier_auc"] == {"patch_px": 16, "critics": 3, "n_experiments": 1, "n_generated": {"clean simulation": 4, "parametric": 4, "DRIT": 4}}
    assert "classifier AUC against the experiments" in out
    assert (style / "report.png").stat().st_size > 10_000
    assert "physics prior     parametric model + learned residual (L1 anchor weight 7, exp reconstructions off)" in out


@pytest.mark.parametrize("target", ["base", "clean"])
def test_prior_consistency_target(data, tmp_path, monkeypatch, target):
    """Under the prior, v's content-consistency term compares with the rendering (base) or the displaced clean crop."""
    import translators.drit.losses as losses

    sims, exps = data
    seen = []
    original = losses.content_consistency

    def spy(u, y, v, x, **kw):
        seen.append(x.detach().clone())
        return original(u, y, v, x, **kw)

    monkeypatch.setattr(losses, "content_consistency", spy)
    prior = lambda crop, rng: (np.full_like(crop, 0.7), crop[::-1].copy())  # noqa: E731 - rendering 0.7, "displaced" = flipped
    settings = replace(TINY, iterations=1, physics_prior=True, prior_target=target)
    train(sims, exps, settings, tmp_path, exp_range=(0.0, 60.0), pixel_size_A=PIXEL_A, progress=False, prior=prior)
    if target == "base":
        assert torch.all(seen[0] == 0.7)
    else:
        assert not torch.all(seen[0] == 0.7) and seen[0].std() > 0
    with pytest.raises(ValueError, match="prior_target"):
        train(sims, exps, replace(settings, prior_target="x"), tmp_path / "b", exp_range=(0.0, 60.0), pixel_size_A=PIXEL_A, progress=False, prior=prior)


def test_resume_with_the_physics_prior_is_exact(data, tmp_path):
    """The prior's random draws come from the checkpointed generator: a resumed run ends identical."""
    from translators.drit.translator import prior_renderer

    sims, exps = data
    prior = prior_renderer(StyleParameters(gain=1.0, dose_counts=30.0, background=0.3, jitter_A=0.02, spread=0.1), PIXEL_A, (0.0, 60.0))
    settings = replace(TINY, physics_prior=True)
    kwargs = dict(exp_range=(0.0, 60.0), pixel_size_A=PIXEL_A, progress=False, prior=prior)
    full, _, _ = train(sims, exps, settings, tmp_path / "a", **kwargs)
    train(sims, exps, settings, tmp_path / "b", budget_iterations=4, **kwargs)
    resumed, _, _ = train(sims, exps, settings, tmp_path / "b", resume=True, **kwargs)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["gen.exp.out.weight"], torch.zeros_like(a["gen.exp.out.weight"]))  # the residual did train


def test_prior_without_exp_reconstructions(data, tmp_path, monkeypatch):
    """prior_exp_recon="none": the exp-domain reconstructions are left out; the run is finite and validated."""
    from translators.drit.model import Drit
    from translators.drit.translator import prior_renderer

    sims, exps = data
    prior = prior_renderer(StyleParameters(gain=1.0, dose_counts=30.0, background=0.3, spread=0.0), PIXEL_A, (0.0, 60.0))
    exp_calls = []
    original = Drit.generate

    def counting(self, c, a, domain, base=None, **kw):
        if domain == "exp":
            exp_calls.append(base is not None)
        return original(self, c, a, domain, base, **kw)

    monkeypatch.setattr(Drit, "generate", counting)
    kwargs = dict(exp_range=(0.0, 60.0), pixel_size_A=PIXEL_A, progress=False, prior=prior)
    train(sims, exps, replace(TINY, iterations=1, physics_prior=True, prior_exp_recon="self"), tmp_path / "self", **kwargs)
    assert len(exp_calls) == 4  # v, v_z, and the exp cross-cycle and self reconstructions
    exp_calls.clear()
    settings = replace(TINY, iterations=2, physics_prior=True, prior_exp_recon="none")
    _, history, _ = train(sims, exps, settings, tmp_path / "a", **kwargs)
    assert exp_calls == [True, True] * 2  # only v and v_z, both on the prior's rendering
    assert len(history) == 2 and all(np.isfinite(list(h.values())).all() for h in history)
    with pytest.raises(ValueError, match="prior_exp_recon"):
        train(sims, exps, replace(settings, prior_exp_recon="x"), tmp_path / "b", exp_range=(0.0, 60.0), pixel_size_A=PIXEL_A, progress=False, prior=prior)


def test_residual_penalty_term(data, tmp_path):
    """weights["residual"] > 0 (10 in the presets) adds E|v − rendering| + E|v_z − rendering|: zero at the start (identity), logged, absent at weight 0."""
    from translators.drit.translator import prior_renderer

    sims, exps = data
    prior = prior_renderer(StyleParameters(gain=1.0, dose_counts=30.0, background=0.3, spread=0.0), PIXEL_A, (0.0, 60.0))
    kwargs = dict(exp_range=(0.0, 60.0), pixel_size_A=PIXEL_A, progress=False, prior=prior)
    settings = replace(TINY, iterations=4, physics_prior=True, prior_exp_recon="none", weights={**TINY.weights, "residual": 3.0})
    _, history, _ = train(sims, exps, settings, tmp_path / "a", **kwargs)
    assert history[0]["residual"] == 0.0  # the exp generator's last conv starts at zero
    assert history[-1]["residual"] > 0.0
    assert TINY.weights["residual"] == 10.0 and TINY.prior_exp_recon == "none"  # the presets' anchor
    _, history, _ = train(sims, exps, replace(settings, weights={**TINY.weights, "residual": 0.0}), tmp_path / "b", **kwargs)
    assert "residual" not in history[0]


def test_the_residual_discriminator_scores_the_noise_space(data, tmp_path):
    from translators.drit.model import noise_space

    sims, exps = data
    kwargs = dict(exp_range=(0.0, 60.0), pixel_size_A=PIXEL_A, progress=False)
    assert TINY.residual_discriminator  # on in the quick preset
    _, history, _ = train(sims, exps, replace(TINY, iterations=2), tmp_path / "a", **kwargs)
    assert "noise" in history[0] and np.isfinite([h["noise"] for h in history]).all()
    _, history, _ = train(sims, exps, replace(TINY, iterations=2, residual_discriminator=False), tmp_path / "b", **kwargs)
    assert "noise" not in history[0]
    x = torch.rand(2, 1, 32, 32)
    space = noise_space(x)
    assert space.shape == (2, 2, 32, 32) and torch.allclose(space[:, :1] + space[:, 1:], x, atol=1e-6)
    assert space[:, 0].abs().mean() > 0.05 and space[:, 1].std() < x.std()  # the fine part and the local level


def test_the_monitor_runs_at_the_start_every_n_iterations_and_at_the_end_without_changing_the_run(data, tmp_path):
    sims, exps = data
    kwargs = dict(exp_range=(0.0, 60.0), pixel_size_A=PIXEL_A, progress=False)
    calls = []

    def monitor(model):
        calls.append(model.training)
        torch.rand(3)  # a monitor that draws random numbers must not change the training's stream
        return {"auc": 0.9}

    settings = replace(TINY, monitor_every=2)
    plain, _, none = train(sims, exps, settings, tmp_path / "a", **kwargs)
    watched, _, records = train(sims, exps, settings, tmp_path / "b", monitor=monitor, **kwargs)
    assert none == [] and [r["iteration"] for r in records] == [0, 2, 4, 6] and records[0]["auc"] == 0.9
    assert not any(calls)  # run in eval mode
    a, b = _weights(plain), _weights(watched)
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(sims, exps, settings, tmp_path / "c", budget_iterations=3, monitor=monitor, **kwargs)  # checkpoint at 3 holds [0, 2]
    _, _, resumed = train(sims, exps, settings, tmp_path / "c", resume=True, monitor=monitor, **kwargs)
    assert [r["iteration"] for r in resumed] == [0, 2, 4, 6]
    # how often a run is monitored is not part of what it trains: a checkpoint resumes under another interval
    train(sims, exps, replace(settings, monitor_every=5), tmp_path / "c", resume=True, **kwargs)


def test_the_auc_monitor_scores_the_prior_and_the_translations(data):
    from translators.drit.model import Drit, DritConfig
    from translators.drit.translator import auc_monitor

    sims, exps = data
    torch.manual_seed(0)
    model = Drit(DritConfig(width=8, residual_prior=True)).eval()  # untrained: returns its base, the prior's rendering, exactly
    prior = StyleParameters(gain=1.0, dose_counts=30.0, background=0.3, spread=0.0)
    out = auc_monitor(sims, exps, prior, PIXEL_A, (0.0, 60.0), 32, "cpu", seed=0)(model)
    assert set(out) == {"auc", "auc_prior"} and 0.0 <= out["auc"] <= 1.0
    assert out["auc"] == pytest.approx(out["auc_prior"], abs=0.02)


def test_translation_sees_a_reflected_margin_at_the_bottom_and_right(data, monkeypatch):
    """The networks translate the image with BORDER_PX of reflected margin below and to the right, cut off afterwards."""
    from translators.drit.model import Drit, DritConfig
    from translators.drit.translator import BORDER_PX

    sims, _ = data
    model = Drit(DritConfig(width=8, content_blocks=2, gen_blocks=1)).eval()
    translator = DritTranslator(model, np.zeros((2, 8), np.float32), {"exp_range": [0.0, 100.0]}, PIXEL_A)
    shapes = []
    original = Drit.content

    def spy(self, x, domain):
        shapes.append(tuple(x.shape[2:]))
        return original(self, x, domain)

    monkeypatch.setattr(Drit, "content", spy)
    clean = sims[0][:45, :50]
    out = translator.translate(clean[None], [np.random.default_rng(0)])
    assert out.images.shape == (1, 45, 50)
    rows, cols = shapes[0]
    assert rows >= 45 + BORDER_PX and cols >= 50 + BORDER_PX and rows % 4 == 0 and cols % 4 == 0


def test_fit_style_drit_calibrates_contrast_into_pool_and_prior(run_cli, tmp_path):
    """With --material and --config the DRIT prior gets the fitted adsorbates and the bundle the calibrated simulation."""
    import json

    import tifffile

    plan = make_plan({"microscope": {"image_size_px": 192, "pixel_size_A": PIXEL_A, "source_size_A": 0.6}, "structure": {"rotation_deg": 20.0}})
    style = StyleParameters(gain=2.0, dose_counts=40.0, background=0.2, spread=0.0)
    image = render(simulate_sample(plan, 3, 0).image, style, PIXEL_A, np.random.default_rng(0))[0]
    experiment = tmp_path / "exp.tif"
    tifffile.imwrite(experiment, image, imagej=True, resolution=(1 / PIXEL_A, 1 / PIXEL_A), metadata={"unit": "A"})
    out = tmp_path / "style"
    code, stdout, err = run_cli("fit-style", experiment, "--material", "MoS2", "--config", "mos2_monolayer", "--iterations", 2, "--crop", 32,
                                "--pool", 4, "--no-select", "--threads", 1, "--device", "cpu", "--out", out, "-q")
    assert code == 0, err
    record = json.loads((out / "style.json").read_text())
    assert record["simulation"]["gamma"] == pytest.approx(1.6, abs=0.08)
    assert record["parameters"]["prior"]["adsorbate_sigma_A"] > 0
    assert (out / "contrast.png").is_file() and "contrast" in json.loads((out / "report.json").read_text())


def test_the_anchor_schedule_moves_linearly_from_start_to_end():
    from dataclasses import replace

    from translators.drit.train import PRESETS, anchor_weight

    fixed = PRESETS["quick"]
    assert anchor_weight(fixed, 0, 100) == anchor_weight(fixed, 100, 100) == fixed.weights["residual"] == 10.0
    scheduled = replace(fixed, residual_weight_end=2.0)
    assert anchor_weight(scheduled, 0, 100) == 10.0
    assert anchor_weight(scheduled, 50, 100) == pytest.approx(6.0)
    assert anchor_weight(scheduled, 100, 100) == pytest.approx(2.0)
    assert anchor_weight(scheduled, 150, 100) == pytest.approx(2.0)  # resumed past the end: stays there
