"""kombu's Redis transport, with a channel that closes cleanly when its connection is gone.

When the broker connection drops while a worker has a task in flight and room for another
(``-c 2`` or more), Celery closes the channel, which is waiting on a ``BRPOP``. kombu's close
reads that reply first; with Redis gone the read raises, the close stops half way (the
unacknowledged task not put back, the channel left open), and Celery then closes the connection
again after dropping its transport's settings: the second close tries to put the task back,
cannot build a Redis client without those settings, and the ``AttributeError`` ends the worker
(and its beat) instead of the reconnection Celery promises. Here a close whose pending read
fails for want of a connection carries on as one whose read found nothing, so the first close
completes (putting the task back fails like any command with Redis down; the visibility timeout
redelivers it if Redis kept it) and the second has nothing left to do.
"""

from __future__ import annotations

from kombu.transport import redis
from kombu.transport.virtual import Empty


class Channel(redis.Channel):
    def close(self) -> None:
        if self._in_poll and not self.closed:
            try:
                self._brpop_read()  # type: ignore[no-untyped-call]  # kombu's close does it too
            except Empty:
                pass
            except self.connection_errors:
                pass  # the connection is gone: nothing more will come from it
        super().close()  # type: ignore[no-untyped-call]


class Transport(redis.Transport):
    Channel = Channel


# For Celery's ``broker_transport`` (a plain ``redis://`` broker only).
TRANSPORT = f"{__name__}:Transport"
