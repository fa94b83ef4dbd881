"""Every error e5v raises on purpose, drawn once.

    E5VError                      base class: catch this to catch everything below
    ├── InputError (ValueError)   one input item cannot be embedded; ``.index`` names which
    ├── ModelLoadError (OSError)   the model cannot be found, loaded, or is inconsistent
    ├── ConfigMismatchError       stored vectors were made with another embedding config
    ├── StoreError                a vector store cannot be opened or written (foreign, corrupt, read-only, busy)
    └── MissingExtraError (ImportError)  an optional dependency is not installed

``InputError`` subclasses ``ValueError`` so that ``except ValueError`` written for other libraries
still works; ``MissingExtraError`` subclasses ``ImportError`` for the same reason.
"""

from __future__ import annotations


class E5VError(Exception):
    """Base class for errors raised by e5v."""


class InputError(E5VError, ValueError):
    """An input item cannot be embedded. ``index`` is its position in the caller's list (or None)."""

    def __init__(self, message: str, index: int | None = None):
        self.index = index
        self.reason = message
        prefix = f"input {index}: " if index is not None else ""
        super().__init__(prefix + message)


class ModelLoadError(E5VError, OSError):
    """The model or its processor cannot be loaded, or they disagree in a way e5v cannot repair."""


class ConfigMismatchError(E5VError):
    """Vectors made under one embedding configuration must not be mixed with another's."""


class StoreError(E5VError):
    """A vector store directory is foreign, corrupted, read-only, or being written by another process."""


class MissingExtraError(E5VError, ImportError):
    """An optional dependency is missing; the message names the ``pip install`` that fixes it."""


def require(module: str, extra: str):
    """Import ``module`` or raise MissingExtraError telling which e5v extra provides it.

    The one place that turns a missing optional dependency into an actionable message.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError(
            f"{module!r} is required for this feature but is not installed. "
            f'Install it with: pip install "e5v[{extra}]"'
        ) from exc
