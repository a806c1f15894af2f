"""Fixtures for the workers tests (registered in tests/conftest.py)."""

from __future__ import annotations
