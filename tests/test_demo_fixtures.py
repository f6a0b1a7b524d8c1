"""Helpers for the demo tests (the demo itself is the session fixture `demo` of conftest.py)."""

from __future__ import annotations

from pathlib import Path


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
