"""factory generate: determinism across executors, resume after kill -9, refusal, pixel-size rules, manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_same_tree, h5_tree

from datafactory.datasets.dataset import file_sha256, load_manifest, split_indices
from datafactory.simulation.samples import simulate_sample
from translators.parametric import ParametricTranslator, StyleParameters

FACTORY = [sys.executable, "-m", "factory_app.cli"]
SMALL = ["--config", "mos2_bilayer_slip", "--size", "48", "-q"]


@pytest.fixture(scope="module")
def style_dir(tmp_path_factory) -> Path:
    """A parametric style with every artefact on, including a geometric one that moves labels."""
    style = StyleParameters(
        gain=2.0, dose_counts=40.0, background=0.2, jitter_A=0.05, streak=0.01, contamination=0.03,
        contamination_length_A=5.0, flyback_A=0.2, flyback_decay_A=2.0, affine=[[1.01, 0.0], [0.02, 0.99]],
    )
    return ParametricTranslator(style, 0.12).save(tmp_path_factory.mktemp("style") / "style")


def arrays(root: Path) -> dict[str, np.ndarray]:
    """Every per-sample array of a dataset, concatenated in sample order."""
    manifest = load_manifest(root)
    out: dict[str, list] = {}
    for shard in sorted(manifest["shards"], key=lambda s: s["start"]):
        with h5py.File(root / shard["file"], "r") as f:
            for name in ("images", "masks", "clean", "atoms/position_px", "atoms/Z", "atoms/offsets", "labels/slip_frac"):
                if name in f:
                    out.setdefault(name, []).append(f[name][:])
            for name, ds in f["params"].items():
                out.setdefault(f"params/{name}", []).append(ds[:])
    return {k: np.concatenate(v) for k, v in out.items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_local_and_dask_give_identical_arrays(run_cli, style_dir, tmp_path):
    import distributed

    local, remote = tmp_path / "local", tmp_path / "dask"
    code, _, err = run_cli("generate", *SMALL, "--n", 20, "--shard-size", 6, "--style", style_dir, "--keep-clean", "--workers", 1, "--out", local)
    assert code == 0, err
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        code, _, err = run_cli("generate", *SMALL, "--n", 20, "--shard-size", 6, "--style", style_dir, "--keep-clean", "--scheduler", cluster.scheduler_address, "--out", remote)
    assert code == 0, err
    a, b = arrays(local), arrays(remote)
    assert_same(a, b)
    assert a["images"].shape == (20, 48, 48) and not np.array_equal(a["images"], a["clean"])

    shards = [sorted((s["start"], s["file"]) for s in load_manifest(root)["shards"]) for root in (local, remote)]
    assert shards[0] == shards[1] and len(shards[0]) == 4
    for _, name in shards[0]:  # every dataset and attribute of every shard, not only the arrays above
        assert_same_tree(h5_tree(local / name), h5_tree(remote / name), name)
    for root in (local, remote):
        manifest = load_manifest(root)
        assert [s["sha256"] for s in manifest["shards"]] == [file_sha256(root / s["file"]) for s in manifest["shards"]]


def test_resume_after_kill_9_ends_with_exactly_n_samples(style_dir, tmp_path):
    out = tmp_path / "ds"
    args = [*FACTORY, "generate", *SMALL, "--n", 48, "--shard-size", 4, "--style", style_dir, "--workers", 2, "--out", out]
    args = [str(a) for a in args]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # wait until some, but not all, shards are recorded
            try:
                shards = json.loads((out / "manifest.json").read_text())["shards"]
            except (OSError, ValueError, KeyError):
                shards = []
            if len(shards) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, as a crash would
        proc.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["completed"] is None and len(manifest["shards"]) < 12, "the run finished before it could be killed"
    assert len(manifest["shards"]) >= 2, "killed before any shard was finished"
    finished = {s["file"]: (os.stat(out / s["file"]), file_sha256(out / s["file"])) for s in manifest["shards"]}
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name, (info, digest) in finished.items():  # kept byte for byte: the same file, not a redone one
        now = os.stat(out / name)
        assert (now.st_ino, now.st_mtime_ns) == (info.st_ino, info.st_mtime_ns) and file_sha256(out / name) == digest, name
    resumed = arrays(out)
    clean_run = tmp_path / "clean"
    subprocess.run([a if a != str(out) else str(clean_run) for a in args], check=True, capture_output=True, timeout=300)
    assert_same(resumed, arrays(clean_run))

    shards = [sorted((s["start"], s["file"]) for s in load_manifest(root)["shards"]) for root in (out, clean_run)]
    assert shards[0] == shards[1] and len(shards[0]) == 12
    for _, name in shards[0]:  # every dataset and attribute of every shard, not only the arrays above
        assert_same_tree(h5_tree(out / name), h5_tree(clean_run / name), name)
    manifest = load_manifest(out)
    ranges = sorted((s["start"], s["stop"]) for s in manifest["shards"])
    assert ranges[0][0] == 0 and ranges[-1][1] == 48 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert not list((out / "shards").glob("*.partial"))


def test_other_settings_are_refused_unless_overwrite(run_cli, tmp_path):
    out = tmp_path / "ds"
    assert run_cli("generate", *SMALL, "--n", 6, "--shard-size", 3, "--workers", 1, "--out", out)[0] == 0
    before = (out / "manifest.json").read_text()
    code, _, err = run_cli("generate", *SMALL, "--n", 6, "--shard-size", 3, "--workers", 1, "--seed", 1, "--out", out)
    assert code == 2 and "seed" in err and err.count("\n") == 1
    assert (out / "manifest.json").read_text() == before
    assert run_cli("generate", *SMALL, "--n", 6, "--shard-size", 3, "--workers", 1, "--seed", 1, "--overwrite", "--out", out)[0] == 0
    assert load_manifest(out)["seed"] == 1
    # the same command again resumes (nothing to do) and keeps every shard
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.h5")}
    assert run_cli("generate", *SMALL, "--n", 6, "--shard-size", 3, "--workers", 1, "--seed", 1, "--out", out)[0] == 0
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.h5")}


def test_pixel_size_follows_the_style(run_cli, style_dir, tmp_path):
    code, _, err = run_cli("generate", *SMALL, "--n", 2, "--style", style_dir, "--pixel-size", 0.1, "--workers", 1, "--out", tmp_path / "a")
    assert code == 2 and "--resample" in err and not (tmp_path / "a").exists()
    code, _, err = run_cli("generate", *SMALL, "--n", 2, "--style", style_dir, "--pixel-size", 0.1, "--resample", "--workers", 1, "--out", tmp_path / "b")
    assert code == 0, err
    manifest = load_manifest(tmp_path / "b")
    assert manifest["pixel_size_A"] == pytest.approx(0.12) and manifest["image_shape"] == [40, 40]
    code, _, err = run_cli("generate", *SMALL, "--n", 2, "--style", style_dir, "--workers", 1, "--out", tmp_path / "c")
    assert code == 0 and "style's 0.12" in err  # the config's 0.1 Å/px gives way, with a notice
    card = (tmp_path / "c" / "README.md").read_text()
    assert "## Realism of the style" in card and "not measured" in card  # this bundle has no report.json
    with h5py.File(tmp_path / "c" / load_manifest(tmp_path / "c")["shards"][0]["file"], "r") as f:
        np.testing.assert_allclose(f["params/pixel_size_A"][:], 0.12)


def test_card_quotes_the_style_report(run_cli, style_dir, tmp_path):
    """The realism scores of the bundle's report.json reach the manifest and the dataset card."""
    import shutil

    style = shutil.copytree(style_dir, tmp_path / "style")
    row = lambda name, kl, auc: {"name": name, "hist_kl": kl, "psd_distance": 0.5, "swd": 0.25, "classifier_auc": auc}  # noqa: E731
    report = {"metrics": [row("experiment", 0.0, None), row("clean simulation", 0.61, 0.998), row("parametric", 0.0713, 0.734)]}
    (style / "report.json").write_text(json.dumps(report))  # not part of the content hash: the bundle still loads
    out = tmp_path / "ds"
    code, _, err = run_cli("generate", *SMALL, "--n", 2, "--style", style, "--workers", 1, "--out", out)
    assert code == 0, err
    assert load_manifest(out)["style"]["realism"]["style"]["classifier_auc"] == 0.734
    card = (out / "README.md").read_text()
    assert "| translated by the style (parametric) | 0.0713 | 0.5 | 0.25 | 0.734 |" in card
    assert "| clean simulation, for scale | 0.61 | 0.5 | 0.25 | 0.998 |" in card
    assert "not measured" not in card and "0.5 is indistinguishable" in card


def test_manifest_splits_card_and_clean_without_style(run_cli, tmp_path):
    out = tmp_path / "ds"
    code, _, err = run_cli("generate", *SMALL, "--n", 30, "--shard-size", 8, "--workers", 1, "--keep-clean", "--split", "0.6,0.2,0.2", "--out", out)
    assert code == 0, err
    manifest = load_manifest(out)
    parts = [set(split_indices(manifest, name)) for name in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == 30 and set.union(*parts) == set(range(30))
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1 :])
    assert manifest["split"]["counts"] == {name: len(p) for name, p in zip(("train", "val", "test"), parts)}
    data = arrays(out)
    np.testing.assert_array_equal(data["images"], data["clean"])  # no style: clean is the image
    card = (out / "README.md").read_text()
    assert "## Licence\n\nCC-BY-4.0" in card and "slip_frac" in card and "ShardDataset" in card and "30 simulated" in card
    assert "Realism of the style" not in card  # no style, nothing to score
    code, _, err = run_cli("generate", *SMALL, "--n", 3, "--split", "0.5,0.5", "--out", tmp_path / "bad")
    assert code == 2 and "--split" in err


def test_generated_sample_equals_the_simulation(run_cli, tmp_path):
    out = tmp_path / "ds"
    assert run_cli("generate", "--config", "mos2_monolayer", "--size", "48", "-q", "--n", 5, "--shard-size", 2, "--workers", 1, "--out", out)[0] == 0
    from datafactory.simulation.config import load_config
    from datafactory.simulation.samples import Plan

    config, path = load_config("mos2_monolayer", {"microscope.image_size_px": 48})
    plan = Plan.from_config(config, base_dir=path.parent)
    data = arrays(out)
    # stored as float16: the simulation rounded to 11 significant bits
    np.testing.assert_array_equal(data["images"][3], simulate_sample(plan, 0, 3).image.astype(np.float16))


def test_config_augmentations_change_only_images(run_cli, tmp_path):
    import yaml

    from datafactory.simulation.config import load_config

    config, _ = load_config("mos2_monolayer", {"microscope.image_size_px": 48})
    raw = yaml.safe_load(config.to_yaml())
    raw["augment"] = {"gaussian_noise": [0.05, 0.1], "blur_sigma_A": 0.1, "gamma": [0.8, 1.2]}
    path = tmp_path / "aug.yaml"
    path.write_text(yaml.safe_dump(raw))
    plain, augmented = tmp_path / "plain", tmp_path / "aug"
    assert run_cli("generate", "--config", "mos2_monolayer", "--size", 48, "-q", "--n", 4, "--workers", 1, "--out", plain)[0] == 0
    code, _, err = run_cli("generate", "--config", path, "-q", "--n", 4, "--workers", 1, "--out", augmented)
    assert code == 0, err
    a, b = arrays(plain), arrays(augmented)
    assert not np.allclose(a["images"], b["images"])
    for key in ("masks", "atoms/position_px", "atoms/Z"):
        np.testing.assert_array_equal(a[key], b[key])
    assert ((b["params/augment_gaussian_noise"] >= 0.05) & (b["params/augment_gaussian_noise"] <= 0.1)).all()


def test_example_experiment_has_a_wrong_file_calibration_that_calibrate_finds(run_cli, tmp_path):
    from factory_app.workflows.example import FILE_PIXEL_SIZE_A, TRUE_PIXEL_SIZE_A

    code, out, err = run_cli("example", "--out", tmp_path)
    assert code == 0, err
    image = Path(out.strip())
    code, out, err = run_cli("calibrate", image, "--material", "MoS2", "--json")
    record = json.loads(out)
    assert record["file_pixel_size_A"] == pytest.approx(FILE_PIXEL_SIZE_A, rel=1e-4)
    assert record["pixel_size_A"] == pytest.approx(TRUE_PIXEL_SIZE_A, rel=0.005)


def test_validate_inspect_preview_commands(run_cli, tmp_path):
    out = tmp_path / "ds"
    assert run_cli("generate", *SMALL, "--n", 8, "--shard-size", 4, "--workers", 1, "--out", out)[0] == 0
    code, stdout, err = run_cli("validate", out, "-q")
    assert code == 0 and "valid" in stdout
    code, stdout, _ = run_cli("inspect", out)
    assert code == 0 and "N = 8" in stdout and "L1:Mo" in stdout
    code, stdout, _ = run_cli("preview", out, "--out", tmp_path / "grid.png", "--n", 4)
    assert code == 0 and (tmp_path / "grid.png").stat().st_size > 0
    shard = out / load_manifest(out)["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    (out / "shards" / "shard-00000.h5").unlink()
    code, _, err = run_cli("validate", out, "-q")
    assert code == 1
    assert "shard-00000.h5" in err and "sha256" in err
    code, _, err = run_cli("inspect", tmp_path / "nothing")
    assert code == 2 and err.count("\n") == 1


def test_the_same_command_gives_byte_identical_shards(run_cli, style_dir, tmp_path):
    """Shards hold nothing run-specific: their sha256 is a content hash (time, host, command live in the manifest)."""
    runs = [tmp_path / "a", tmp_path / "b"]
    for k, out in enumerate(runs):
        workers = 1 + k  # the worker count changes nothing either
        code, _, err = run_cli("generate", *SMALL, "--n", 8, "--shard-size", 4, "--style", style_dir, "--workers", workers, "--out", out)
        assert code == 0, err
        time.sleep(1.1)  # a timestamp with one-second resolution would differ
    a, b = (load_manifest(out) for out in runs)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert [file_sha256(runs[1] / s["file"]) for s in b["shards"]] == [s["sha256"] for s in a["shards"]]
    assert a["created"] and a["host"] and a["command"]  # the run-specific facts are in the manifest
    with h5py.File(runs[0] / a["shards"][0]["file"], "r") as f:
        assert "created" not in f.attrs


class _ScriptedExecutor:
    """Futures that the test completes by hand: the first one ends in an interrupt."""

    def __init__(self):
        self.futures = []

    def submit(self, fn, *args, **kwargs):
        future = Future()
        if not self.futures:
            future.set_exception(KeyboardInterrupt())
        self.futures.append(future)
        return future


class _ScriptedPool(_ScriptedExecutor, ProcessPoolExecutor):
    """Looks like a local pool to the code under test; starts no process."""


@pytest.mark.parametrize("local", [True, False])
def test_an_interrupted_run_cancels_cluster_tasks_and_leaves_a_local_pool_to_its_own_thread(tmp_path, local):
    """A local pool's futures are failed by the pool's thread when stop_pool kills its workers;
    cancelling them from the main thread too raced with it (CPython 3.11 printed an
    InvalidStateError traceback under SIGTERM to the process group). A cluster's are cancelled."""
    from datafactory.simulation.config import load_config
    from factory_app.workflows.generate import GenerateRequest, _run_tasks
    from datafactory.simulation.samples import Plan
    from tqdm import tqdm

    cfg, path = load_config("mos2_monolayer", {"microscope.image_size_px": 32})
    plan = Plan.from_config(cfg, base_dir=path.parent)
    request = GenerateRequest(
        config_yaml=cfg.to_yaml(), base_dir=str(path.parent.resolve()), n=4, seed=1, out=tmp_path / "ds", shard_size=1,
        command="test", pixel_size_A=float(cfg.microscope.pixel_size_A.values[0]), image_shape=plan.image_shape,
        channel_names=list(plan.channel_names), n_interfaces=plan.n_interfaces,
    )
    executor = _ScriptedPool() if local else _ScriptedExecutor()
    with pytest.raises(KeyboardInterrupt):
        _run_tasks(request, executor, False, False, tqdm, 4)
    waiting = executor.futures[1:]
    assert len(waiting) == 3
    assert [f.cancelled() for f in waiting] == [not local] * 3


def test_workers_that_cannot_fit_in_memory_are_refused_before_work(run_cli, tmp_path, monkeypatch):
    import datafactory.outputs as outputs
    from factory_app.workflows.generate import worker_memory_bytes

    need = worker_memory_bytes((1024, 1024))
    assert 0.6e9 < need < 1.2e9  # measured: 0.84 GB peak for a 1024² parametric worker
    monkeypatch.setattr(outputs, "available_memory_bytes", lambda: 1.5 * need)
    out = tmp_path / "ds"
    code, _, err = run_cli("generate", "--config", "mos2_monolayer", "--size", 1024, "--n", 64, "--shard-size", 16, "--workers", 2, "--out", out, "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--workers 1" in err and "available" in err, err
    assert not out.exists()
    monkeypatch.setattr(outputs, "available_memory_bytes", lambda: 0.5 * need)
    code, _, err = run_cli("generate", "--config", "mos2_monolayer", "--size", 1024, "--n", 64, "--shard-size", 16, "--workers", 1, "--out", out, "-q")
    assert code == 2 and "smaller images (--size)" in err and not out.exists()
    # a worker without a shard holds nothing, and a small shard holds fewer samples at once
    monkeypatch.setattr(outputs, "available_memory_bytes", lambda: 1.5 * need)
    code, _, err = run_cli("generate", "--config", "mos2_monolayer", "--size", 1024, "--n", 16, "--shard-size", 16, "--workers", 2,
                           "--out", tmp_path / "one", "-q")
    assert code == 0, err
