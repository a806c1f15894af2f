"""``finrt worker`` and ``finrt beat``."""

from __future__ import annotations


def run_worker(args: list[str]) -> None:
    raise SystemExit("the Celery worker is not available yet")


def run_beat(args: list[str]) -> None:
    raise SystemExit("the Celery beat scheduler is not available yet")
