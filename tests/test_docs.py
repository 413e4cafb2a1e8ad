"""The documentation keeps up with the code: every ``factory`` command is documented, the
layout tree lists every module once, every page is in the site's nav, the site builds
under ``mkdocs build --strict``, and the README stays a quick read."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PACKAGES = ("datafactory", "translators", "inference", "factory_app")
#: A module path inside the layout tree: ``datafactory/micrographs/io.py``, ``translators/drit/model.py``.
MODULE_PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w/]*\.py)(?![\w.])" % "|".join(PACKAGES))
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
#: The longest README a newcomer reads in five minutes.
README_MAX_LINES = 250


def factory_commands() -> list[str]:
    """Every command of the ``factory`` app as typed after ``factory``: ``simulate``, ...,
    ``train``, ``train regress``; hidden commands left out."""
    import typer.main

    from factory_app.cli import app

    found: list[str] = []

    def walk(group, prefix: str) -> None:
        for name, command in group.commands.items():
            if getattr(command, "hidden", False):
                continue
            path = f"{prefix} {name}".strip()
            found.append(path)
            if getattr(command, "commands", None):
                walk(command, path)

    walk(typer.main.get_command(app), "")
    return found


def section(text: str, heading: str) -> str:
    """The part of a Markdown text under the level-2 ``heading``, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no '## {heading}' section"
    return match.group(1)


def test_the_command_walk_finds_the_known_commands():
    commands = factory_commands()
    assert {"simulate", "generate", "fit-style", "train", "train regress", "train segment"} <= set(commands)
    assert len(commands) == len(set(commands))


def test_every_command_has_a_heading_in_docs_commands():
    text = (DOCS / "commands.md").read_text()
    headings = re.findall(r"^#{1,6} +`factory ([a-z0-9 -]+)`\s*$", text, re.M)
    commands = factory_commands()
    missing = [c for c in commands if c not in headings]
    assert not missing, f"docs/commands.md has no '## `factory NAME`' heading for: {missing}"
    stale = [h for h in headings if h not in commands]
    assert not stale, f"docs/commands.md documents commands that do not exist: {stale}"
    assert len(headings) == len(set(headings)), "a command has two headings in docs/commands.md"


def test_every_command_is_in_the_readme_tour():
    tour = section(README.read_text(), "The commands")
    missing = [c for c in factory_commands() if f"`factory {c}`" not in tour]
    assert not missing, f"README.md's command tour does not name: {missing}"
    examples = re.findall(r"^\| `factory ([a-z0-9 -]+)` \|.*\| `factory \1 [^`]*` \|\s*$", tour, re.M)
    leaves = [c for c in factory_commands() if not any(other.startswith(c + " ") for other in factory_commands())]
    without = [c for c in leaves if c not in examples]
    assert not without, f"README.md's command tour has no example line for: {without}"


def layout_tree() -> str:
    blocks = [b for b in FENCE.findall((DOCS / "layout.md").read_text()) if MODULE_PATH.search(b)]
    assert len(blocks) == 1, f"docs/layout.md should hold one code block with the module tree, found {len(blocks)}"
    return blocks[0]


def test_layout_tree_lists_every_module_once():
    tree = layout_tree()
    listed = Counter(MODULE_PATH.findall(tree))
    modules = {p.relative_to(ROOT).as_posix() for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    twice = sorted(p for p, n in listed.items() if n > 1)
    missing = sorted(modules - set(listed))
    gone = sorted(set(listed) - modules)
    assert not (twice or missing or gone), (
        f"docs/layout.md's tree is out of date: missing {missing}, listed but absent {gone}, listed twice {twice}"
    )


def test_layout_tree_has_one_module_and_its_description_per_line():
    for line in layout_tree().splitlines():
        paths = MODULE_PATH.findall(line)
        assert len(paths) <= 1, f"more than one module on a line: {line!r}"
        if paths:
            description = line.split("—", 1)[1].strip() if "—" in line else ""
            assert description, f"module without a '— what it holds' description: {line!r}"


def nav_pages(nav) -> list[str]:
    """The Markdown files named in an mkdocs ``nav`` (nested lists and sections included)."""
    if isinstance(nav, str):
        return [] if re.match(r"^[a-z]+://", nav) else [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    raise AssertionError(f"unexpected nav entry {nav!r}")


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs"
    listed = nav_pages(config["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert len(listed) == len(set(listed)), f"a page is listed twice in the nav: {listed}"
    assert not sorted(set(pages) - set(listed)), f"pages missing from mkdocs.yml's nav: {sorted(set(pages) - set(listed))}"
    assert not sorted(set(listed) - set(pages)), f"nav entries without a page: {sorted(set(listed) - set(pages))}"


def test_mkdocs_builds_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"), "-f", str(ROOT / "mkdocs.yml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "commands" / "index.html").is_file()


def test_readme_is_a_quick_read_with_the_two_command_quick_start():
    text = README.read_text()
    lines = text.count("\n") + 1
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/ (limit {README_MAX_LINES})"
    quick = section(text, "Quick start")
    commands = [line.split("#")[0].strip() for block in FENCE.findall(quick) for line in block.splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_readme_links_point_at_files_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    assert links, "README.md links to no docs page"
    relative = [link for link in links if not re.match(r"^[a-z]+:", link)]
    broken = [link for link in relative if not (ROOT / link).exists()]
    assert not broken, f"README.md links to missing files: {broken}"
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md") if p.name != "index.md"}
    assert pages <= set(relative), f"README.md does not link: {sorted(pages - set(relative))}"


def test_repository_files_named_in_the_docs_exist():
    named = re.compile(r"`((?:%s|benchmarks|tests|configs|requirements)/[\w/.-]+\.\w+)`" % "|".join(PACKAGES))
    missing = [
        f"{page.relative_to(ROOT)}: {path}"
        for page in [README, *sorted(DOCS.rglob("*.md"))]
        for path in named.findall(page.read_text())
        if not (ROOT / path).exists()
    ]
    assert not missing, f"the docs name files that do not exist: {missing}"
