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
    from datafactory.cli import run

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
