"""The one exception type users can cause."""

from __future__ import annotations


class StructureError(ValueError):
    """A crystal structure could not be read or is not one SEN can handle.

    The message is a single sentence a student can act on (what is wrong and,
    where possible, what to do about it). It never contains a traceback.
    """


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), at most ``limit`` characters."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]
