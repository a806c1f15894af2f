"""Moving events: the envelope, publishing, history, the per-process hub, SSE and WebSocket."""

from streams.envelope import Event, InvalidEvent
from streams.publish import apublish, publish

__all__ = ["Event", "InvalidEvent", "apublish", "publish"]
