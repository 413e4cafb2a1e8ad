"""Hand-edited or damaged STYLE and MODEL records: one-line errors before anything is used or written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_plan

from factory_app.cli import run


def cli(*args) -> None:
    assert run([str(a) for a in args]) == 0, args


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """A parametric STYLE, a clean simulation file, two tiny datasets and a MODEL trained on each."""
    root = tmp_path_factory.mktemp("records")
    cli("example", "--out", root / "example")
    cli("fit-style", *sorted((root / "example").glob("*.tif")), "--method", "parametric", "--no-contrast", "--out", root / "style", "-q")
    from datafactory.simulation.samples import write_simulation

    write_simulation(make_plan({"microscope": {"image_size_px": 32, "pixel_size_A": 0.128}}), 0, 2, root / "sims.h5", progress=False, preview=False)
    for name, config, task in (("mono", "mos2_monolayer", ("segment", "--width", "4", "--depth", "1")),
                               ("slip", "mos2_bilayer_slip", ("regress", "--target", "slip"))):
        cli("generate", "--config", config, "--n", "20", "--size", "64", "--shard-size", "20", "--out", root / name, "--workers", "1", "-q")
        cli("train", *task[:1], "--data", root / name, "--out", root / f"{task[0]}_model", *task[1:], "--epochs", "1", "--batch", "8",
            "--device", "cpu", "--threads", "1", "-q")
    px = json.loads((root / "segment_model" / "model.json").read_text())["pixel_size_A"]
    np.save(root / "image.npy", np.random.default_rng(0).normal(size=(96, 96)).astype(np.float32))
    return {"root": root, "px": px}


def one_line_error(code: int, err: str, *expected: str) -> None:
    """Exit status 2 and exactly one stderr line, ``error: ...``, holding every ``expected`` text."""
    assert code == 2, (code, err)
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for text in expected:
        assert text in lines[0], (text, lines[0])


def edited(source: Path, target: Path, file: str, edit) -> Path:
    """A copy of the bundle or MODEL ``source`` with ``file``'s text replaced by ``edit(text, record)``."""
    shutil.copytree(source, target)
    text = (target / file).read_text()
    (target / file).write_text(edit(text, json.loads(text)))
    return target


def setting(key: str, value):
    """An edit that sets ``key`` (``a.b`` for a nested one) to ``value``; ``...`` deletes it."""
    def edit(text, record):
        *path, last = key.split(".")
        node = record
        for part in path:
            node = node[part]
        if value is ...:
            del node[last]
        else:
            node[last] = value
        return json.dumps(record)
    return edit


STYLE_EDITS = {
    "pixel size a string": (setting("pixel_size_A", "abc"), "'pixel_size_A'"),
    "pixel size NaN": (setting("pixel_size_A", float("nan")), "'pixel_size_A'"),
    "pixel size negative": (setting("pixel_size_A", -0.1), "'pixel_size_A'"),
    "pixel size changed": (setting("pixel_size_A", 0.2), "content hash"),
    "no parameters": (setting("parameters", ...), "'parameters'"),
    "parameters a list": (setting("parameters", [1, 2]), "'parameters'"),
    "a parameter a string": (setting("parameters.gain", "abc"), "content hash"),
    "no content hash": (setting("content_hash", ...), "'content_hash'"),
    "method a number": (setting("method", 3), "'method'"),
    "method unknown": (setting("method", "magic"), "'method'"),
    "simulation a string": (setting("simulation", "abc"), "'simulation'"),
    "a list": (lambda text, record: json.dumps([record]), "not an object"),
    "not JSON": (lambda text, record: text[: len(text) // 2], "style.json"),
}


@pytest.mark.parametrize("case", STYLE_EDITS)
def test_an_edited_style_stops_translate_and_generate_in_one_line(case, made, run_cli, tmp_path):
    edit, field = STYLE_EDITS[case]
    style = edited(made["root"] / "style", tmp_path / "style", "style.json", edit)
    outs = tmp_path / "outs"
    outs.mkdir()
    one_line_error(*run_cli("translate", "--style", style, "--in", made["root"] / "sims.h5", "--out", outs / "t.h5", "-q")[::2], "style.json", field)
    one_line_error(*run_cli("generate", "--style", style, "--n", "2", "--size", "32", "--out", outs / "ds", "--workers", "1", "-q")[::2], "style.json", field)
    assert list(outs.iterdir()) == []


def test_the_unedited_style_loads(made):
    from translators.base import load_style

    assert load_style(made["root"] / "style").pixel_size_A == pytest.approx(0.128)


MODEL_EDITS = {
    "a list": ("segment", lambda text, record: json.dumps([record]), "not an object"),
    "not JSON": ("segment", lambda text, record: text[:-10], "model.json"),
    "no pixel size": ("segment", setting("pixel_size_A", ...), "'pixel_size_A'"),
    "pixel size a string": ("segment", setting("pixel_size_A", "abc"), "'pixel_size_A'"),
    "pixel size NaN": ("segment", setting("pixel_size_A", float("nan")), "'pixel_size_A'"),
    "no format": ("segment", setting("format", ...), "'format'"),
    "unknown task": ("segment", setting("task", "classify"), "'task'"),
    "channels a string": ("segment", setting("output_channels", "L1:Mo"), "'output_channels'"),
    "size multiple zero": ("segment", setting("size_multiple", 0), "'size_multiple'"),
    "depth a string": ("segment", setting("depth", "2"), "'depth'"),
    "image shape short": ("segment", setting("image_shape", [64]), "'image_shape'"),
    "loss a list": ("segment", setting("loss", []), "'loss'"),
    "dataset a string": ("segment", setting("dataset", "x"), "'dataset'"),
    "no target": ("regress", setting("target", ...), "'target'"),
    "target kind unknown": ("regress", setting("target.kind", "tilt"), "'target.kind'"),
    "basis not 2x2": ("regress", setting("target.basis_A", [[1.0]]), "'target.basis_A'"),
    "no value names": ("regress", setting("value_names", ...), "'value_names'"),
}


def run_model_commands(run_cli, made, model: Path, task: str, outs: Path, *expected: str) -> None:
    data = made["root"] / ("mono" if task == "segment" else "slip")
    one_line_error(*run_cli("map", model, made["root"] / "image.npy", "--pixel-size", made["px"], "--out", outs / "map", "--device", "cpu", "-q")[::2], *expected)
    one_line_error(*run_cli("evaluate", model, "--data", data, "--out", outs / "metrics.json", "--device", "cpu", "-q")[::2], *expected)
    assert list(outs.iterdir()) == []


@pytest.mark.parametrize("case", MODEL_EDITS)
def test_an_edited_model_record_stops_map_and_evaluate_in_one_line(case, made, run_cli, tmp_path):
    task, edit, field = MODEL_EDITS[case]
    model = edited(made["root"] / f"{task}_model", tmp_path / "model", "model.json", edit)
    outs = tmp_path / "outs"
    outs.mkdir()
    run_model_commands(run_cli, made, model, task, outs, "model.json", field)


@pytest.mark.parametrize("damage", ["missing", "truncated", "not torch"])
def test_damaged_weights_stop_map_and_evaluate_in_one_line(damage, made, run_cli, tmp_path):
    model = shutil.copytree(made["root"] / "segment_model", tmp_path / "model")
    weights = model / "weights.pt"
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:200] if damage == "truncated" else b"not a torch file")
    outs = tmp_path / "outs"
    outs.mkdir()
    run_model_commands(run_cli, made, model, "segment", outs, "weights.pt")


@pytest.mark.parametrize("task", ["segment", "regress"])
def test_the_unedited_models_load(task, made):
    from inference.evaluate import load_model

    record, model = load_model(made["root"] / f"{task}_model")
    assert record["task"] == task and model.pixel_size_A == pytest.approx(record["pixel_size_A"])
