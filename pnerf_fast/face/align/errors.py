"""The one exception of photo alignment."""
from __future__ import annotations


class FaceAlignmentError(ValueError):
    """A photo could not be turned into a subject folder; the message names the file."""
