"""The shard package's error and its one-line form of a library error."""

from __future__ import annotations


class ShardError(ValueError):
    """A shard set that is missing, incomplete, corrupt, or does not match what the caller needs."""


ERROR_CHARS = 200  # a library error quoted in a one-line message is cut here (orbax's run to hundreds of lines)


def error_line(err: BaseException) -> str:
    """A library error for a one-line message: its first line (its type's name if it has none), shortened."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + "…"

