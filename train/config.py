"""Argparse built from a typed config dataclass: each field's docstring is its ``--help``.

Every entry point has one dataclass; fields become ``--kebab-case`` options with the field's
type, default and the one-line docstring written under it (read from the source with ``ast``).
``bool`` fields get ``--flag / --no-flag``; ``list[str]`` fields repeat (``--opt a --opt b``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from typing import Any, TypeVar

from glimpse_gym.errors import UsageError

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """The string literal written right under each field of a dataclass, by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split()).replace("``", "'")
    return docs


def _base_type(tp: Any) -> tuple[Any, bool]:
    """``(inner type, optional)`` of ``X``, ``X | None`` or ``Optional[X]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per field of ``cls`` to ``parser``."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    inherited = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base)
                 for f in dataclasses.fields(base)}
    fields = dataclasses.fields(cls)  # the command's own options first, the shared ones after
    for f in [f for f in fields if f.name not in inherited] + [
            f for f in fields if f.name in inherited]:
        tp, _ = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        flag = "--" + f.name.replace("_", "-")
        help_text = docs.get(f.name, "")
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
        elif typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp)
            parser.add_argument(flag, dest=f.name, type=item, action="append", default=None,
                                help=f"{help_text} (repeatable)")
        else:
            choices = list(typing.get_args(tp)) if typing.get_origin(tp) is typing.Literal else None
            conv = type(choices[0]) if choices else tp
            parser.add_argument(flag, dest=f.name, type=conv, default=default, choices=choices,
                                metavar=None if choices else f.name.upper(), help=help_text)
    parser.set_defaults(_config_cls=cls)


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build the dataclass from parsed args (list fields default to empty lists)."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        v = getattr(args, f.name)
        if v is None and f.default_factory is not dataclasses.MISSING:
            v = f.default_factory()
        values[f.name] = v
    return cls(**values)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["canvas_size=100", "root=~/data"]`` -> ``{"canvas_size": 100, "root": "~/data"}``.

    Values are Python literals where they parse as one (numbers, True/False, None), else
    strings. Raises :class:`~glimpse_gym.errors.UsageError` for an item without ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {pair!r} (e.g. --data-option "
                             "canvas_size=100)")
        try:
            out[key.strip().replace("-", "_")] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key.strip().replace("-", "_")] = raw
    return out
