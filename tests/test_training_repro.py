"""Training is reproducible: the same seed, data and device give the same weights bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

SEGMENT = ("--width", "8", "--depth", "2", "--epochs", "2", "--batch", "4")
REGRESS = ("--target", "slip", "--epochs", "2", "--batch", "8")


def generate(tmp_path_factory, config: str) -> Path:
    from factory_app.cli import run

    out = tmp_path_factory.mktemp(config) / "ds"
    assert run(["generate", "--config", config, "--n", "24", "--size", "64", "--shard-size", "12", "--out", str(out), "--workers", "1", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def mono(tmp_path_factory) -> Path:
    return generate(tmp_path_factory, "mos2_monolayer")


@pytest.fixture(scope="module")
def slip(tmp_path_factory) -> Path:
    return generate(tmp_path_factory, "mos2_bilayer_slip")


def train(run_cli, task: str, data: Path, out: Path, seed: int, *options: str) -> tuple[dict, list]:
    """Train MODEL ``out`` through the CLI; returns (state dict, history without wall times)."""
    code, _, err = run_cli("train", task, "--data", data, "--out", out, "--seed", seed, "--device", "cpu", "--threads", "1", "-q", *options)
    assert code == 0, err
    state = torch.load(out / "weights.pt", weights_only=True)
    history = json.loads((out / "model.json").read_text())["history"]
    return state, [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in history]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("task", ["segment", "regress"])
def test_same_seed_same_weights_and_history_other_seed_other_weights(task, mono, slip, run_cli, tmp_path):
    data, options = (mono, SEGMENT) if task == "segment" else (slip, REGRESS)
    first = train(run_cli, task, data, tmp_path / "a", 3, *options)
    torch.manual_seed(12345)  # global state left by other code must not matter
    np.random.seed(12345)
    second = train(run_cli, task, data, tmp_path / "b", 3, *options)
    other = train(run_cli, task, data, tmp_path / "c", 4, *options)
    assert same_weights(first[0], second[0])
    assert first[1] == second[1] and len(first[1]) == 2
    assert not same_weights(first[0], other[0])
    assert first[1] != other[1]


class NoisyItems(torch.utils.data.Dataset):
    """Items drawn from NumPy's global generator: what a worker returns depends on its seeding."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, k):
        return torch.tensor([k, np.random.random(), torch.rand(()).item()])


def test_loader_workers_are_seeded_from_the_run_seed():
    from inference.training import TrainSettings, seeded_loader

    def epochs(seed):
        loader = seeded_loader(NoisyItems(), TrainSettings(batch=4, seed=seed), workers=2)
        return [torch.cat(list(loader)) for _ in range(2)]

    a, b, c = epochs(0), epochs(0), epochs(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])  # a new order and new draws every epoch
    assert not torch.equal(a[0], c[0])
    assert len(torch.unique(a[0][:, 1])) == 16  # the two workers draw different numbers


def test_deterministic_restores_the_previous_settings():
    from inference.training import deterministic

    before = torch.are_deterministic_algorithms_enabled()
    with deterministic("cpu"):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


@pytest.mark.parametrize("task", ["segment", "regress"])
def test_an_interrupted_training_resumes_to_the_same_weights(task, mono, slip, run_cli, tmp_path, monkeypatch):
    """Stopped in the middle of an epoch (a checkpoint after every step here), the re-run of the
    same command continues from the checkpoint and ends with the uninterrupted run's weights."""
    import signal

    import inference.training as training
    from datafactory.interrupt import Interrupted

    data, options = (mono, SEGMENT) if task == "segment" else (slip, REGRESS)
    options = (*options[:-1], "4")  # batch 4: several steps per epoch
    whole = train(run_cli, task, data, tmp_path / "whole", 5, *options)

    monkeypatch.setattr(training, "CHECKPOINT_EVERY_S", 0.0)
    real_step, calls = training._step, []

    def interrupted_at_7(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise Interrupted(signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "_step", interrupted_at_7)
    out = tmp_path / "resumed"
    code, _, err = run_cli("train", task, "--data", data, "--out", out, "--seed", 5, "--device", "cpu", "--threads", "1", "-q", *options)
    assert code == 130 and "re-run the same command to resume" in err
    assert not out.exists()
    checkpoint = torch.load(tmp_path / "resumed.training" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 6 and checkpoint["batch_in_epoch"] > 0  # in the middle of an epoch
    again = []
    monkeypatch.setattr(training, "_step", lambda *a, **k: again.append(1) or real_step(*a, **k))
    resumed = train(run_cli, task, data, out, 5, *options)
    assert len(again) == whole[1][-1]["steps"] - 6  # only the steps not done before the interruption
    assert same_weights(whole[0], resumed[0])
    assert whole[1] == resumed[1]
    assert not (tmp_path / "resumed.training").exists()


def test_a_checkpoint_of_another_training_is_set_aside(slip, run_cli, tmp_path):
    out = tmp_path / "m"
    code, _, err = run_cli("train", "regress", "--data", slip, "--out", out, "--seed", 1, "--device", "cpu", "--threads", "1", "-q", *REGRESS)
    assert code == 0, err
    (tmp_path / "n.training").mkdir()
    import shutil

    # a checkpoint written for seed 1 does not resume a seed-2 training
    from inference.training import Checkpointing

    Checkpointing(tmp_path / "n.training", {"other": True}).save({"step": 1})
    code, _, err = run_cli("train", "regress", "--data", slip, "--out", tmp_path / "n", "--seed", 2, "--device", "cpu", "--threads", "1", "-q", *REGRESS)
    assert code == 0, err
    assert "of another training" in err
    assert not (tmp_path / "n.training").exists()
    shutil.rmtree(out)


def test_training_killed_with_sigkill_resumes_to_the_same_weights(slip, run_cli, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    options = ("--target", "slip", "--epochs", "30", "--batch", "8", "--seed", "2", "--device", "cpu", "--threads", "1", "-q")
    def command_to(out: Path) -> list[str]:
        return [sys.executable, "-m", "factory_app.cli", "train", "regress", "--data", str(slip), "--out", str(out), *options]

    assert subprocess.run(command_to(tmp_path / "whole"), capture_output=True, timeout=600).returncode == 0
    out = tmp_path / "killed"
    command = command_to(out)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = tmp_path / "killed.training" / "checkpoint.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["epoch"] >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the training finished before it could be killed"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert same_weights(torch.load(tmp_path / "whole" / "weights.pt", weights_only=True), torch.load(out / "weights.pt", weights_only=True))
