"""The user cache folder: ``$GLIMPSE_GYM_CACHE``, else ``$XDG_CACHE_HOME/glimpse-gym``, else
``~/.cache/glimpse-gym``. It holds only what can be made again: records of verified banks, and
the embedded default's feature banks (``banks/``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get("GLIMPSE_GYM_CACHE"):
        return Path(os.environ["GLIMPSE_GYM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "glimpse-gym"
