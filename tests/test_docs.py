"""The documentation cannot drift from the code: the examples in docstrings and every Python
snippet of README.md and docs/ run, and every command line they show parses against the
current ``glimpse`` command, names a Makefile target that exists, or a benchmark script and
options it has."""

from __future__ import annotations

import doctest
import importlib
import re
import shlex
from pathlib import Path

import pytest

from train.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
MODULES = ["glimpse_gym.bagnet", "glimpse_gym.envs.glimpse_env", "glimpse_gym.envs.toy",
           "glimpse_gym.sb3", "agents.saccader", "agents.stats"]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def _blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def _command_lines(path: Path) -> list[str]:
    """The command lines of a page's ```bash blocks: continuations joined, comments cut."""
    lines = []
    for block in _blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.extend(part.strip() for part in line.split("&&"))
    return lines


def test_every_page_is_checked() -> None:
    assert {p.name for p in PAGES} >= {"README.md", "environment.md", "agents.md", "cli.md",
                                       "results.md", "performance.md", "architecture.md",
                                       "datasets.md", "bagnets-and-banks.md", "reliability.md"}


@pytest.mark.parametrize("path", [p for p in PAGES if _blocks(p, "python")],
                         ids=lambda p: p.name)
def test_python_snippets_run(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)  # a snippet that writes files writes them here
    for block in _blocks(path, "python"):
        exec(compile(block, str(path), "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("path", [p for p in PAGES if _command_lines(p)], ids=lambda p: p.name)
def test_command_lines_parse(path: Path) -> None:
    parser = build_parser()
    makefile = (REPO / "Makefile").read_text()
    checked = 0
    for line in _command_lines(path):
        argv = shlex.split(line)
        if argv[0] == "glimpse":
            try:
                parser.parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"{path.name}: {line!r} does not parse")
        elif argv[0] == "make":
            for target in (a for a in argv[1:] if "=" not in a):
                assert re.search(rf"^{re.escape(target)}:", makefile, re.M), (
                    f"{path.name}: no Makefile target {target!r} ({line!r})")
        elif argv[0] == "python" and argv[1].startswith("benchmarks/"):
            script = (REPO / argv[1]).read_text()
            for option in (a for a in argv[2:] if a.startswith("--")):
                assert f'"{option}"' in script, f"{path.name}: {argv[1]} has no {option}"
        else:
            continue
        checked += 1
    assert checked > 0
