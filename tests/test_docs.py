"""The examples in docstrings and the Python snippets of docs/ run (so the documentation
cannot drift from the code)."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

MODULES = ["glimpse_gym.bagnet", "glimpse_gym.envs.glimpse_env", "glimpse_gym.sb3",
           "agents.saccader"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


DOCS = sorted((Path(__file__).resolve().parents[1] / "docs").glob("*.md"))


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("path", [p for p in DOCS if _python_blocks(p)], ids=lambda p: p.name)
def test_docs_snippets_run(path: Path) -> None:
    for block in _python_blocks(path):
        exec(compile(block, str(path), "exec"), {"__name__": "__docs__"})
