"""Errors of the cutout engine: CutoutError and subclasses are the caller's mistakes."""

from __future__ import annotations

from ..dali import UsageError


class CutoutError(UsageError):
    """The request cannot be served as asked; the message says what to change."""


class NoOverlap(CutoutError):
    """The region (or band, time, polarization) misses the file: archive syntax -> HTTP 400,
    SODA -> 204 No Content."""


class MultiValued(CutoutError):
    """A parameter was repeated where only one value is accepted (SODA sync)."""

    def __init__(self, param: str):
        super().__init__(f"{param} may be given only once here")
        self.param = param


class NotFits(CutoutError):
    """The file is not a FITS file with an image to cut."""
