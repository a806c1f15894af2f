"""Logging: tokens and tickets never reach a log line; optional JSON lines with a request id."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from typing import Any

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# When the current request arrived (time.monotonic()), for the access log's duration.
request_started: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "request_started", default=None
)
# The access log line's fields, as JSON lines carry them (not one formatted string).
ACCESS_FIELDS = ("client", "method", "path", "status", "duration_ms")

_SECRETS = re.compile(
    r"(?i)(access_token=|ticket=|token=|bearer\s+)[^\s&\"',;]+"
    r"|eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
)


def redact(text: str) -> str:
    """Replace token values (query parameters, bearer headers, bare JWTs) with ``***``."""
    return _SECRETS.sub(lambda m: (m.group(1) or "") + "***", text)


class RedactingFilter(logging.Filter):
    """Applied to every handler: formats the record once, then redacts the result."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            _access_fields(record)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        record.request_id = request_id.get()
        return True


def _access_fields(record: logging.LogRecord) -> None:
    """uvicorn's access record has (client, method, path, http version, status) as its args."""
    args = record.args
    if not isinstance(args, tuple) or len(args) != 5:
        return
    client, method, path, _version, status = args
    started = request_started.get()
    record.client = str(client)
    record.method = str(method)
    record.path = redact(str(path))
    record.status = int(str(status)) if str(status).isdigit() else status
    if started is not None:
        record.duration_ms = round((time.monotonic() - started) * 1000, 2)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for name in ACCESS_FIELDS:
            if hasattr(record, name):
                doc[name] = getattr(record, name)
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc)


def log_config(level: str = "INFO", json_lines: bool = False) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict (also handed to uvicorn as its log_config)."""
    formatter = (
        {"()": "core.logs.JsonFormatter"}
        if json_lines
        else {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "core.logs.RedactingFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "": {"handlers": ["default"], "level": level},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": ["default"], "level": level, "propagate": False},
            "celery": {"handlers": ["default"], "level": level, "propagate": False},
        },
    }
