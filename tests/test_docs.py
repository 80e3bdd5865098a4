"""The examples in docstrings run (so the documentation cannot drift from the code)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["glimpse_gym.bagnet", "glimpse_gym.envs.glimpse_env", "glimpse_gym.sb3",
           "agents.saccader"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
