"""Exceptions that say what was passed, what is valid, and what to do.

Every error the package raises on purpose is a :class:`GlimpseGymError`; the ``glimpse``
command prints those in one line (``glimpse: error: ...``, exit status 2) without a
traceback. :class:`InvalidAction` and :class:`ResetNeeded` are also Gymnasium's own errors of
the same names, so ``except gymnasium.error.ResetNeeded`` catches them too.
"""

from __future__ import annotations

from gymnasium import error as gym_error


class GlimpseGymError(Exception):
    """Base class of every error this package raises on purpose."""


class UsageError(GlimpseGymError, ValueError):
    """An option or argument that cannot be used as given (a user's mistake, not a bug)."""


class DatasetNotFoundError(GlimpseGymError, FileNotFoundError):
    """A dataset's files are not where the caller said they are."""


class DatasetError(GlimpseGymError, ValueError):
    """A dataset's files or arrays are there but cannot be used as they are."""


class UnknownNameError(GlimpseGymError, KeyError):
    """A name that no registry knows (dataset, model preset, ...)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class CheckpointError(GlimpseGymError, ValueError):
    """A checkpoint file is missing, damaged, or not of the expected kind."""


class BankError(GlimpseGymError, ValueError):
    """A feature bank is missing, damaged, or does not match what was expected."""


class InvalidAction(GlimpseGymError, ValueError, gym_error.InvalidAction):
    """An action the environment cannot take; the environment's state is unchanged."""


class ResetNeeded(GlimpseGymError, RuntimeError, gym_error.ResetNeeded):
    """``step`` was called before ``reset`` or after the episode ended."""
