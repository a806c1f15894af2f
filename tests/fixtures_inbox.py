"""Fixtures for the inbox tests (registered in tests/conftest.py)."""

from __future__ import annotations
