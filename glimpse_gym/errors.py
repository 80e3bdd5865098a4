"""Exceptions that say what was passed, what is valid, and what to do."""

from __future__ import annotations


class GlimpseGymError(Exception):
    """Base class of every error this package raises on purpose."""


class DatasetNotFoundError(GlimpseGymError, FileNotFoundError):
    """A dataset's files are not where the caller said they are."""


class UnknownNameError(GlimpseGymError, KeyError):
    """A name that no registry knows (dataset, model preset, ...)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class CheckpointError(GlimpseGymError, ValueError):
    """A checkpoint file is missing, damaged, or not of the expected kind."""


class BankError(GlimpseGymError, ValueError):
    """A feature bank is missing, damaged, or does not match what was expected."""


class InvalidAction(GlimpseGymError, ValueError):
    """An action the environment cannot take; the environment's state is unchanged."""


class ResetNeeded(GlimpseGymError, RuntimeError):
    """``step`` was called before ``reset`` or after the episode ended."""
