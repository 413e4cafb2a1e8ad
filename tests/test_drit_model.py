"""DRIT networks and losses: shapes, weight sharing, residual prior, the Trident loss, gradient flow, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

import torch  # noqa: E402 - a required dependency: a broken install fails here, it does not skip

from translators.drit.losses import (  # noqa: E402
    content_consistency,
    gan_d_loss,
    gan_g_loss,
    kl_loss,
    l1,
    log_spectrum,
    lowpass,
)
from translators.drit.model import Discriminators, Drit, DritConfig, parameter_counts  # noqa: E402


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


#: A small config for the shape tests (the default one is timed below).
SMALL = DritConfig(width=8, content_blocks=2, gen_blocks=1, attr_dim=4)


def lattice(h: int, w: int, spacing: float = 12.0, sigma: float = 1.5, shift: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """(1, 1, h, w) image of Gaussian columns on a square lattice, peak 1, background 0.1."""
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.full((h, w), 0.1)
    for r0 in np.arange(-spacing, h + spacing, spacing):
        for c0 in np.arange(-spacing, w + spacing, spacing):
            # a second, dimmer sublattice so that brightness matters too
            for dr, dc, amp in ((0.0, 0.0, 0.9), (spacing / 2, spacing / 2, 0.5)):
                img += amp * np.exp(-((rr - r0 - dr - shift[0]) ** 2 + (cc - c0 - dc - shift[1]) ** 2) / (2 * sigma**2))
    return torch.from_numpy(img.astype(np.float32))[None, None]


# --------------------------------------------------------------------------- config


def test_config_round_trip_and_validation():
    cfg = DritConfig(width=16, residual_prior=True, spectrum_discriminator=True)
    assert DritConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        DritConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError):
        DritConfig(width=0)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("hw", [(96, 96), (128, 160)])
def test_shapes_fully_convolutional(hw):
    cfg = SMALL
    model, discs = Drit(cfg), Discriminators(cfg)
    h, w = hw
    x = torch.rand(2, 1, h, w)
    for domain in ("sim", "exp"):
        c = model.content(x, domain)
        assert c.shape == (2, cfg.content_channels, h // 4, w // 4)
        mu, logvar = model.attribute(x, domain)
        assert mu.shape == logvar.shape == (2, cfg.attr_dim)
        a = model.sample_attribute(mu, logvar)
        assert a.shape == (2, cfg.attr_dim)
        out = model.generate(c, a, domain)
        assert out.shape == x.shape
        assert torch.isfinite(out).all()
        logits = discs.domain(out, domain)
        assert isinstance(logits, list) and len(logits) == cfg.disc_scales
        assert logits[0].shape[:2] == (2, 1) and logits[1].shape[-1] < logits[0].shape[-1]
        assert discs.content(c).shape == (2,)
    with pytest.raises(RuntimeError):
        discs.spectrum(x)
    assert "spectrum_discriminator" not in parameter_counts(cfg)


def test_size_constraint_and_bad_domain():
    model = Drit(SMALL)
    with pytest.raises(ValueError, match="multiple of 4"):
        model.content(torch.rand(1, 1, 30, 32), "sim")
    with pytest.raises(ValueError, match="unknown domain"):
        model.content(torch.rand(1, 1, 32, 32), "real")


def test_spectrum_discriminator_when_enabled():
    cfg = DritConfig(width=8, content_blocks=2, gen_blocks=1, spectrum_discriminator=True)
    discs = Discriminators(cfg)
    for hw in ((96, 96), (128, 160)):
        x = torch.rand(3, 1, *hw)
        spec = log_spectrum(x)
        assert spec.shape == (3, 1, hw[0], hw[1] // 2 + 1)
        assert discs.spectrum(x).shape == (3,)
    # white noise: flat normalised spectrum, mean log(1+P) ≈ E[log(1+Exp(1))] ≈ 0.6
    assert 0.45 < float(log_spectrum(torch.rand(1, 1, 128, 128)).mean()) < 0.75
    # a lattice reflection is a bright spot, at the fftshifted position
    spec = log_spectrum(lattice(96, 96))[0, 0]
    assert float(spec.max()) > 5.0
    assert float(spec[48 + 8, 0]) > 5.0  # f_y = 1/12 cycles/px → row 96/12 = 8 below centre


def test_content_last_block_is_shared():
    model = Drit(SMALL)
    shared = model.content_shared
    assert sum(1 for m in model.modules() if m is shared) == 1
    # the domain-specific parts do not contain it ...
    for domain in ("sim", "exp"):
        assert all(m is not shared for m in model.content_enc[domain].modules())
    # ... and both domains' content codes depend on the same parameter tensors
    x = torch.rand(1, 1, 32, 32)
    for domain in ("sim", "exp"):
        model.zero_grad()
        model.content(x, domain).square().mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in shared.parameters())
        other = "exp" if domain == "sim" else "sim"
        assert all(p.grad is None for p in model.content_enc[other].parameters())
    # changing the shared block changes both domains' codes
    with torch.no_grad():
        before = {d: model.content(x, d).clone() for d in ("sim", "exp")}
        for p in shared.parameters():
            p.add_(0.1)
        for d in ("sim", "exp"):
            assert not torch.allclose(model.content(x, d), before[d])


def test_residual_prior_zero_residual_returns_base():
    cfg = DritConfig(width=8, content_blocks=2, gen_blocks=1, residual_prior=True)
    model = Drit(cfg)
    base = torch.rand(2, 1, 64, 48)
    c = model.content(base, "sim")
    a = torch.randn(2, cfg.attr_dim)
    for domain in ("sim", "exp"):
        with torch.no_grad():
            model.gen[domain].out.weight.zero_()
            model.gen[domain].out.bias.zero_()
        out = model.generate(c, a, domain, base=base)
        assert torch.equal(out, base)
    # without a base, the bounded sigmoid output (here exactly its midpoint)
    out = model.generate(c, a, "exp")
    assert torch.allclose(out, torch.full_like(out, 0.5))


def test_noise_inputs_and_reproducibility():
    x = torch.rand(2, 1, 32, 32)
    a = torch.randn(2, SMALL.attr_dim)
    # default: no noise inputs, deterministic given (c, a)
    model = Drit(SMALL)
    c = model.content(x, "sim")
    assert torch.equal(model.generate(c, a, "exp"), model.generate(c, a, "exp"))

    cfg = DritConfig(width=8, content_blocks=2, gen_blocks=1, attr_dim=4, noise_inputs=True)
    model = Drit(cfg)
    c = model.content(x, "sim")
    # the noise weights start at zero: still deterministic
    assert torch.equal(model.generate(c, a, "exp"), model.generate(c, a, "exp"))
    with torch.no_grad():
        for up in model.gen["exp"].ups:
            up.noise.scale.fill_(1.0)
    assert not torch.equal(model.generate(c, a, "exp"), model.generate(c, a, "exp"))
    assert torch.equal(model.generate(c, a, "exp", noise=False), model.generate(c, a, "exp", noise=False))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(model.generate(c, a, "exp", generator=g1), model.generate(c, a, "exp", generator=g2))
    # one generator per image: image 1's output does not depend on image 0's generator
    out_a = model.generate(c, a, "exp", generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(7)])
    out_b = model.generate(c, a, "exp", generator=[torch.Generator().manual_seed(2), torch.Generator().manual_seed(7)])
    assert torch.equal(out_a[1], out_b[1]) and not torch.equal(out_a[0], out_b[0])
    with pytest.raises(ValueError, match="generators for a batch"):
        model.generate(c, a, "exp", generator=[torch.Generator()])


# --------------------------------------------------------------------------- losses


def test_gan_and_kl_losses():
    ones, zeros = torch.ones(2, 1, 5, 5), torch.zeros(2, 1, 5, 5)
    assert float(gan_d_loss(ones, zeros)) == 0.0
    assert float(gan_d_loss([ones, ones[..., :2]], [zeros, zeros[..., :3]])) == 0.0
    assert float(gan_d_loss(zeros, ones)) == pytest.approx(2.0)
    assert float(gan_g_loss([ones, zeros])) == pytest.approx(0.5)
    mu, logvar = torch.zeros(3, 8), torch.zeros(3, 8)
    assert float(kl_loss(mu, logvar)) == 0.0
    assert float(kl_loss(mu + 1.0, logvar)) == pytest.approx(4.0)  # ½·Σ μ² over 8 dims
    assert float(l1(torch.ones(4), torch.zeros(4))) == 1.0


def test_lowpass():
    x = torch.rand(2, 3, 40, 30, requires_grad=True)
    y = lowpass(x, 2.0)
    assert y.shape == x.shape
    assert torch.allclose(y.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)), atol=0.02)
    assert float(y.detach().std()) < 0.3 * float(x.detach().std())  # white noise std falls by ~2√π·σ ≈ 7
    y.sum().backward()
    assert x.grad is not None
    const = torch.full((1, 1, 16, 16), 0.3)
    assert torch.allclose(lowpass(const, 1.5), const)
    assert lowpass(x, 0.0) is x


def test_content_consistency():
    g = torch.Generator().manual_seed(1)
    x, y = lattice(96, 96), lattice(96, 96, shift=(3.0, 5.0))  # "sim" and "exp"
    sigma = 1.5  # the lattice spacing is 12 px
    forms = ("plain", "structure", "correlation")

    def loss(u, v, form):
        return float(content_consistency(u, y, v, x, form=form, sigma_px=sigma))

    for form in forms:
        assert loss(y, x, form) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown form"):
        content_consistency(y, y, x, x, form="fancy")

    # contrast and background are free in the structure forms, not in the plain one
    assert loss(1.5 * y - 0.1, 0.5 * x + 0.3, "plain") > 0.1
    for form in ("structure", "correlation"):
        assert loss(1.5 * y - 0.1, 0.5 * x + 0.3, form) < 1e-3

    # zero-mean white noise (std 0.1) on both translations, against a 1 px shift of v's columns
    noise = {k: 0.1 * torch.randn(x.shape, generator=g) for k in "uv"}
    noisy = {f: loss(y + noise["u"], x + noise["v"], f) for f in forms}
    noisy_v = {f: loss(y, x + noise["v"], f) for f in forms}
    shifted = {f: loss(y, lattice(96, 96, shift=(0.0, 1.0)), f) for f in forms}
    print("\ncontent_consistency  noise(u,v) / noise(v) / 1px shift(v):",
          {f: (round(noisy[f], 4), round(noisy_v[f], 4), round(shifted[f], 4)) for f in forms})
    assert noisy["plain"] > 0.1  # ≈ 2·√(2/π)·0.1
    # the plain form charges more for the noise the translator must add than for moving every column by 1 px ...
    assert noisy_v["plain"] > shifted["plain"]
    # ... the structure form sees the shift clearly above the noise (noise costs ~0.4 of the shift) ...
    assert shifted["structure"] > 2 * noisy_v["structure"]
    assert shifted["structure"] > 0.2
    # ... and the correlation form is nearly blind to the noise (~0.17 of the shift)
    assert noisy["correlation"] < 0.06
    assert shifted["correlation"] > 4 * noisy_v["correlation"]

    # differentiable, for every form
    for form in forms:
        v = (x + noise["v"]).requires_grad_(True)
        content_consistency(y + noise["u"], y, v, x, form=form, sigma_px=sigma).backward()
        assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


# --------------------------------------------------------------------------- gradient flow and speed


def test_encoder_generator_optimise():
    cfg = DritConfig(width=16)
    model = Drit(cfg)
    x = lattice(32, 32)
    target = 1.0 - x.clamp(0, 1)  # inverted contrast
    a = torch.randn(1, cfg.attr_dim)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = l1(model.generate(model.content(x, "sim"), a, "exp", noise=False), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(p.grad is not None for p in model.content_enc["sim"].parameters())


def generator_objective(model: Drit, discs: Discriminators, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Every generator-side DRIT + Trident term for one batch (sim x, exp y), unweighted sum."""
    c_x, c_y = model.content(x, "sim"), model.content(y, "exp")
    mu_x, lv_x = model.attribute(x, "sim")
    mu_y, lv_y = model.attribute(y, "exp")
    a_x, a_y = model.sample_attribute(mu_x, lv_x), model.sample_attribute(mu_y, lv_y)
    v, u = model.generate(c_x, a_y, "exp"), model.generate(c_y, a_x, "sim")
    z = torch.randn_like(a_y)
    v_z = model.generate(c_x, z, "exp")
    x_rec = model.generate(model.content(v, "exp"), model.attribute(u, "sim")[0], "sim")
    y_rec = model.generate(model.content(u, "sim"), model.attribute(v, "exp")[0], "exp")
    x_self, y_self = model.generate(c_x, a_x, "sim"), model.generate(c_y, a_y, "exp")
    terms = [
        gan_g_loss(discs.domain(v, "exp")) + gan_g_loss(discs.domain(u, "sim")) + gan_g_loss(discs.domain(v_z, "exp")),
        ((discs.content(c_x) - 0.5) ** 2).mean() + ((discs.content(c_y) - 0.5) ** 2).mean(),
        l1(x_rec, x) + l1(y_rec, y),
        l1(x_self, x) + l1(y_self, y),
        kl_loss(mu_x, lv_x) + kl_loss(mu_y, lv_y),
        l1(model.attribute(v_z, "exp")[0], z),
        content_consistency(u, y, v, x, form="structure", sigma_px=1.5),
    ]
    if discs.spectrum_d is not None:
        terms.append(gan_g_loss(discs.spectrum(v)))
    return sum(terms)


@pytest.mark.parametrize("spectrum", [False, True])
def test_time_full_generator_step(spectrum):
    cfg = DritConfig(spectrum_discriminator=spectrum)
    model, discs = Drit(cfg), Discriminators(cfg)
    x, y = torch.rand(2, 1, 96, 96), torch.rand(2, 1, 96, 96)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        loss = generator_objective(model, discs, x, y)
        model.zero_grad(set_to_none=True)
        loss.backward()
        times.append(time.perf_counter() - t0)
    assert torch.isfinite(loss)
    assert all(p.grad is not None for name, p in model.named_parameters() if "noise" not in name)
    counts = parameter_counts(cfg)
    print(
        f"\nDRIT width {cfg.width}, spectrum={spectrum}: {counts['drit_total']:,} generator-side + "
        f"{counts['discriminators_total']:,} discriminator parameters; generator step forward+backward at 96×96, "
        f"batch 2, 2 threads: {min(times):.3f} s (first {times[0]:.3f} s)"
    )


def test_inference_settings_channels_last_bf16_on_cuda_and_capable_cpus(monkeypatch):
    from datafactory.device import cpu_bf16_supported
    from translators.drit.translator import inference_settings

    assert inference_settings("cpu") == (torch.contiguous_format, torch.bfloat16 if cpu_bf16_supported() else None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # Ampere and later (the H200)
    assert inference_settings("cuda") == (torch.channels_last, torch.bfloat16)
    assert inference_settings("cuda:1") == (torch.channels_last, torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # older GPUs: float16 (with a gradient scaler)
    assert inference_settings("cuda") == (torch.channels_last, torch.float16)
    # the networks give the same result in channels_last (the layout the cuda path uses)
    model = Drit(SMALL).eval()
    x = torch.rand(2, 1, 32, 32)
    a = torch.randn(2, SMALL.attr_dim)
    with torch.inference_mode():
        ref = model.generate(model.content(x, "sim"), a, "exp")
        model = model.to(memory_format=torch.channels_last)
        xl = x.to(memory_format=torch.channels_last)
        out = model.generate(model.content(xl, "sim"), a, "exp")
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_stays_close_to_float32():
    """The CPU bf16 path (where supported) deviates little from float32; the output layer is float32."""
    torch.manual_seed(0)
    model = Drit(DritConfig(width=16, residual_prior=True)).eval()
    x, base = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    a = torch.randn(2, model.cfg.attr_dim)
    with torch.inference_mode():
        torch.nn.init.normal_(model.gen["exp"].out.weight, std=0.05)  # a non-zero residual
        ref = model.generate(model.content(x, "sim"), a, "exp", base)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generate(model.content(x, "sim"), a, "exp", base)
    assert out.dtype == torch.float32
    spread = (ref - base).std()  # the size of what the network computes
    assert (out - ref).abs().mean() < 0.05 * spread and (out - ref).abs().max() < 0.3 * spread
