"""The Celery application (``celery -A workers ...``), configured from ``celeryconfig``.

The worker's parent process never opens a database or Redis connection of ours (tasks run in
the pool's processes), so forked pool processes start without shared sockets.
"""

from __future__ import annotations

from celery import Celery

app = Celery("finrt")
# Lazy: celeryconfig (and so the FINRT_ settings) is read when the configuration is first used.
app.config_from_object("celeryconfig")
