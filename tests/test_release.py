"""The licence, the citation, the changelog and the version say the same thing everywhere."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

import datafactory
from datafactory.datasets.shards import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_licence_is_gpl3_or_later_everywhere():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE") and "Version 3, 29 June 2007" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 600  # the whole licence, not a stub
    assert PYPROJECT["license"] == "GPL-3.0-or-later" and PYPROJECT["license-files"] == ["LICENSE"]
    assert not any("License ::" in c for c in PYPROJECT.get("classifiers", []))  # an SPDX expression replaces them
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["license"] == PYPROJECT["license"]
    assert "GPL-3.0-or-later" in (ROOT / "README.md").read_text().split("## Quick start")[0]


def test_version_citation_and_changelog_agree():
    version = PYPROJECT["version"]
    assert datafactory.__version__ == version
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert str(cff["version"]) == version and cff["cff-version"] == "1.2.0" and cff["authors"] and cff["title"]
    releases = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert releases[0][0] == "Unreleased"
    assert releases[1] == (version, str(cff["date-released"]))  # the newest release is this version, on the cited date
    assert len({r[0] for r in releases}) == len(releases)


def test_factory_version_prints_the_package_and_schema_versions(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"factory {datafactory.__version__} (stem-datafactory, HDF5 dataset schema v{SCHEMA_VERSION}, GPL-3.0-or-later)"
