"""Errors that end in a one-line message for the user, never a traceback.

The command line prints ``str(error)`` and exits non-zero; the web app maps each class to an
HTTP status. Everything a user can get wrong (a file, a CSV, an option) raises one of these.
"""

from __future__ import annotations


class ChestXError(Exception):
    """Base class: the message must say what went wrong and how to fix it."""


class DataError(ChestXError):
    """A dataset CSV or folder that can't be used (missing column, bad label, missing image)."""


class ImageError(ChestXError):
    """An upload or file that can't be read as a radiograph. ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ModelError(ChestXError):
    """A model file or weights file that is missing, unreadable or doesn't match its card."""


class ConfigError(ChestXError):
    """An option with a value ChestX can't use (unknown policy, bad image size)."""
