"""The teachers' load error: one line saying what to do."""

from __future__ import annotations


class TeacherLoadError(RuntimeError):
    """A teacher model cannot be loaded; the message is one line saying what to do."""
