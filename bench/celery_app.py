"""Tiny Celery app for the e2e-celery scenario.

The worker runs as ``celery -A bench.celery_app worker --pool solo`` with the FINRT_
environment of the server under test, so ``streams.publish`` inside the task writes to the
bench Redis. The broker is ``BENCH_CELERY_BROKER`` (db 1 of the bench Redis).
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from bench.common import EVENT_TYPE, PAD

app = Celery("bench", broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/1"))
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_default_queue="bench",
)


@app.task(name="bench.progress")  # type: ignore[untyped-decorator]
def progress(channel: str, count: int, rate: float, pad: int = len(PAD)) -> dict[str, Any]:
    """Publish `count` progress events on `channel` at `rate` events/s via streams.publish;
    each carries the task's own time.time_ns() stamp."""
    import streams

    padding = "x" * pad
    interval = 1.0 / rate if rate > 0 else 0.0
    t0 = time.perf_counter()
    for seq in range(count):
        delay = t0 + seq * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        streams.publish(channel, EVENT_TYPE, {"t": time.time_ns(), "seq": seq, "pad": padding})
    return {"count": count, "elapsed_s": time.perf_counter() - t0}
