"""The exceptions joulecast raises.

::

    JoulecastError            anything joulecast reports on purpose
    ├── InputError            a file, field or argument is not what was expected
    ├── OutputError           a file could not be written (also an OSError)
    ├── SensorError           a sensor could not be read (the monitor records a gap)
    │   └── SensorUnavailable a sensor cannot be used on this machine at all
    └── StoreError            the run store cannot be opened, read or written

    JoulecastWarning          what a training's user must see even without logging set up
"""

from __future__ import annotations

import logging
import warnings

log = logging.getLogger(__name__)


class JoulecastError(Exception):
    """Base class of every error joulecast raises on purpose."""


class InputError(JoulecastError, ValueError):
    """Bad input: the message names the file, line or field, and what was expected."""


class OutputError(JoulecastError, OSError):
    """A file could not be written (a full disk, no permission): the message names it and why.

    Nothing is left half-written: see :func:`joulecast.outputs.write_atomic`.
    """


class SensorError(JoulecastError):
    """A sensor failed to produce readings; the monitor records a gap and carries on."""


class SensorUnavailable(SensorError):
    """A sensor cannot run here; ``fix`` says what would make it available."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


class StoreError(JoulecastError):
    """The run store could not be opened, read or written."""


class JoulecastWarning(UserWarning):
    """Something a user must see even where logging is not set up (a training script): how a
    distributed job's runs will be named and joined, an odd variable that was ignored."""


def warn(message: str) -> None:
    """Warn the user (:class:`JoulecastWarning`): shown by Python even where logging is not set
    up, and by the CLI as one line."""
    try:
        warnings.warn(message, JoulecastWarning, stacklevel=3)
    except Warning:  # warnings made errors (-W error) must not stop a training either
        log.warning("%s", message)
