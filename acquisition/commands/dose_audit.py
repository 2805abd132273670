"""`galacto dose import|report`: the physicist's import of objects and report with plots."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add ``import`` and ``report`` to ``galacto dose``."""
