"""Library errors name fields; the command line names flags."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest

from factory_app.cli.common import flag_of, user_message
from datafactory.errors import FactoryError

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [p for pkg in ("datafactory", "translators", "inference") for p in sorted((ROOT / pkg).rglob("*.py"))
           if "cli" not in p.relative_to(ROOT).parts]
FLAG = re.compile(r"(^|[\s(])--[a-z]")


def _literal_text(node: ast.AST) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    return ""


def test_no_library_error_names_a_command_line_flag():
    offenders = []
    for path in LIBRARY:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("FactoryError", "_Unusable", "_Corrupt") and node.args:
                if FLAG.search(_literal_text(node.args[0])):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"library errors that speak of flags (give field= or a backticked parameter instead): {offenders}"


@pytest.mark.parametrize("field, flag", [("out", "--out"), ("style", "--style"), ("content_loss", "--content-loss"),
                                         ("model", "MODEL"), ("pixel_size_A", "--pixel-size")])
def test_a_field_becomes_its_flag(field, flag):
    assert flag_of(field) == flag
    assert user_message(FactoryError("'x' is not usable", field=field)) == f"{flag}: 'x' is not usable"


def test_backticked_parameters_become_flags_and_the_plain_message_stays():
    exc = FactoryError("one layer; use `arch='unet'`, pass `overwrite=True`, run with `select=False`, lower `lr`, "
                       "simulate at `pixel_size_A=0.128`", field="arch")
    assert user_message(exc) == ("--arch: one layer; use --arch unet, pass --overwrite, run with --no-select, lower --lr, "
                                 "simulate at --pixel-size 0.128")
    assert str(exc).startswith("one layer; use `arch='unet'`")
    assert user_message(FactoryError("no field here")) == "no field here"


def test_the_field_survives_a_trip_to_a_worker_process():
    again = pickle.loads(pickle.dumps(FactoryError("gone", field="style")))
    assert isinstance(again, FactoryError) and str(again) == "gone" and again.field == "style"


def test_the_command_line_prints_the_flag(tmp_path, capsys):
    from factory_app.cli import run

    assert run(["translate", "--style", str(tmp_path / "nowhere"), "--in", str(tmp_path / "in.h5"), "--out", str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --"), err
