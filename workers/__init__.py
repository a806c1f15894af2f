"""Celery workers: the app (``celery -A workers worker``), the tasks, and how the API sends them.

``tasks`` wraps the plain functions of ``processing``, ``reporting`` and ``periodic`` (the
worker's side) and ``services`` (shared with the API); ``enqueue`` is how the API sends tasks.
"""

from workers.celery_app import app

__all__ = ["app"]
