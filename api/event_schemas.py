"""The events as JSON Schema (draft 2020-12), served at ``GET /api/v1/schemas/events.json``.

One document: the envelope every event shares (SSE, WebSocket, history, ``finrt tail``) and, per
type, what ``data`` holds. Types not listed (a service may publish its own) match the envelope
alone. Objects allow more properties than listed: new fields may be added, none removed.
"""

from __future__ import annotations

from typing import Any

from api.routes.notifications import NotificationPublic
from streams.channels import CHANNEL_RE
from streams.envelope import ID_RE, KEY_RE, TYPE_RE

SCHEMA_PATH = "/api/v1/schemas/events.json"

_ID = {
    "type": "string",
    "pattern": ID_RE.pattern.replace("\\Z", "$"),
    "examples": ["1795634193826-0"],
}
_TIME = {"type": "string", "format": "date-time", "examples": ["2026-11-25T17:40:12.123456Z"]}
_INT = {"type": "integer", "minimum": 0}
_PERCENT = {"type": "integer", "minimum": 0, "maximum": 100}
_DECIMAL = {
    "type": ["string", "null"],
    "description": "a decimal as a string (exact), null when unknown",
    "examples": ["1200.00"],
}
_FILE_ID = {"type": "integer", "minimum": 1}


def _object(properties: dict[str, Any], *, example: dict[str, Any], description: str) -> Any:
    return {
        "type": "object",
        "description": description,
        "required": list(properties),
        "properties": properties,
        "examples": [example],
    }


def _notification() -> dict[str, Any]:
    schema = NotificationPublic.model_json_schema(ref_template="#/$defs/{model}")
    schema.pop("title", None)
    schema["properties"]["unread_count"] = _INT
    schema["required"] = [*schema.get("required", []), "unread_count"]
    schema["description"] = "a new notification, as the REST API shows it, and the unread count"
    schema["examples"] = [
        {
            "id": "0b6f3c1e-8d0a-4c1e-9a57-2f1f6d4b8e21",
            "type": "system_update",
            "title": "Quarter closed",
            "message": "Q3 figures are final.",
            "data": {},
            "priority": "normal",
            "is_read": False,
            "is_dismissed": False,
            "created_at": "2026-11-25T17:40:12.123456Z",
            "read_at": None,
            "expires_at": None,
            "seen_at": None,
            "archived_at": None,
            "snoozed_until": None,
            "actions": [],
            "count": 1,
            "unread_count": 3,
        }
    ]
    return schema


def _digest_update() -> dict[str, Any]:
    schema = _notification()
    schema["properties"]["counts"] = {"type": "object"}
    schema["required"] = [*schema["required"], "counts"]
    schema["description"] = (
        "a digest grew: the same notification with its new count and title, the unread count "
        "and the counts (no toast)"
    )
    example = {
        **schema["examples"][0],
        "type": "data_quality_issue",
        "title": "12 data-quality issues in fy2025.csv",
        "count": 12,
        "counts": {"unseen": 1, "unread": 3, "by_priority": {}},
    }
    schema["examples"] = [example]
    return schema


def _preferences() -> Any:
    choice = _object(
        {
            "inbox": {"type": "boolean"},
            "toast": {"type": "boolean"},
            "critical": {"type": "boolean"},
        },
        description="one type's choice",
        example={"inbox": True, "toast": False, "critical": False},
    )
    return _object(
        {"types": {"type": "object", "additionalProperties": choice}},
        description="the person's notification preferences changed (every type's choice)",
        example={"types": {"report_ready": {"inbox": True, "toast": False, "critical": False}}},
    )


def _types() -> dict[str, Any]:
    progress = {"type": "string", "enum": ["processing", "processed", "failed"]}
    return {
        "notification": _notification(),
        "notification_updated": _digest_update(),
        "preferences_updated": _preferences(),
        "notification_read": _object(
            {"id": {"type": "string"}, "read_at": _TIME, "unread_count": _INT},
            description="one notification was read (in any tab)",
            example={"id": "0b6f…", "read_at": "2026-11-25T17:41:00.000000Z", "unread_count": 2},
        ),
        "notifications_read_all": _object(
            {"count": _INT, "unread_count": _INT},
            description="all notifications were marked read",
            example={"count": 5, "unread_count": 0},
        ),
        "notification_dismissed": _object(
            {"id": {"type": "string"}, "unread_count": _INT},
            description="one notification was dismissed",
            example={"id": "0b6f…", "unread_count": 2},
        ),
        "job_progress": _object(
            {
                "job_id": {"type": "string"},
                "kind": {"type": "string", "examples": ["process_file"]},
                "file_id": _FILE_ID,
                "status": {"type": "string", "enum": ["running", "processed", "failed"]},
                "percent": _PERCENT,
            },
            description="a background job of the user's (on user:{id}); failed ones add error",
            example={
                "job_id": "5d1c…",
                "kind": "process_file",
                "file_id": 7,
                "status": "running",
                "percent": 40,
            },
        ),
        "file_processing": _object(
            {"status": progress, "processed": _INT, "total": _INT, "percent": _PERCENT},
            description="a file's processing progress (on file:{id}); failed adds error",
            example={"status": "processing", "processed": 400, "total": 1000, "percent": 40},
        ),
        "file_members": _object(
            {
                "file_id": _FILE_ID,
                "owner_id": {"type": "string"},
                "members": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"user_id": {"type": "string"}, "role": {"type": "string"}},
                    },
                },
                "updated_at": _TIME,
            },
            description="who shares the file changed (on file:{id}): its members after the change",
            example={
                "file_id": 7,
                "owner_id": "alice",
                "members": [{"user_id": "lee", "role": "viewer"}],
                "updated_at": "2026-11-25T17:41:00.000000Z",
            },
        ),
        "file_deleted": _object(
            {"file_id": _FILE_ID},
            description="the file was deleted (on file:{id}): its dashboard is gone",
            example={"file_id": 7},
        ),
        "financial_data_update": _object(
            {
                "file_id": _FILE_ID,
                "status": {"const": "processed"},
                "currency": {"type": ["string", "null"]},
                "periods": {"type": "array", "items": {"type": "string"}},
                "periods_total": _INT,
                "rows_total": _INT,
                "rows_ok": _INT,
                "rows_bad": _INT,
                "rows_by_statement": {"type": "object", "additionalProperties": _INT},
            },
            description="a file's data was (re)loaded: refetch the dashboard",
            example={
                "file_id": 7,
                "status": "processed",
                "currency": "EUR",
                "periods": ["2026-Q1", "2026-Q2"],
                "periods_total": 2,
                "rows_total": 120,
                "rows_ok": 120,
                "rows_bad": 0,
                "rows_by_statement": {"income": 80, "balance": 40},
            },
        ),
        "metric_update": _object(
            {
                "name": {"type": "string"},
                "label": {"type": "string"},
                "unit": {"type": "string", "examples": ["money", "ratio"]},
                "period": {"type": ["string", "null"]},
                "value": _DECIMAL,
                "previous": _DECIMAL,
                "change": _DECIMAL,
            },
            description="one dashboard card changed (key: the metric's name)",
            example={
                "name": "revenue",
                "label": "Revenue",
                "unit": "money",
                "period": "2026-Q2",
                "value": "1200.00",
                "previous": "1000.00",
                "change": "0.2000",
            },
        ),
        "chart_data_update": _object(
            {
                "name": {"type": "string"},
                "label": {"type": "string"},
                "unit": {"type": "string"},
                "points": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["period", "value"],
                        "properties": {"period": {"type": "string"}, "value": _DECIMAL},
                    },
                },
                "points_total": _INT,
                "truncated": {"type": "boolean"},
            },
            description="one chart changed; only the newest points when truncated",
            example={
                "name": "revenue",
                "label": "Revenue",
                "unit": "money",
                "points": [{"period": "2026-Q2", "value": "1200.00"}],
                "points_total": 1,
                "truncated": False,
            },
        ),
        "parameter_update": _object(
            {
                "file_id": _FILE_ID,
                "name": {"type": "string"},
                "value": {"type": "string"},
                "previous": {"type": ["string", "null"]},
                "updated_by": {"type": "string"},
            },
            description="a what-if parameter was set; recomputed metrics follow",
            example={
                "file_id": 7,
                "name": "growth",
                "value": "0.25",
                "previous": None,
                "updated_by": "alice",
            },
        ),
        "report_status": _object(
            {
                "report_id": _FILE_ID,
                "file_id": _FILE_ID,
                "format": {"type": "string", "enum": ["csv", "xlsx", "pdf"]},
                "status": {"type": "string", "enum": ["queued", "running", "ready", "failed"]},
                "percent": _PERCENT,
                "scheduled": {"type": "boolean"},
                "download_url": {"type": ["string", "null"]},
                "error": {"type": ["string", "null"]},
            },
            description="a report's progress (on the file's channel and the requester's)",
            example={
                "report_id": 3,
                "file_id": 7,
                "format": "pdf",
                "status": "ready",
                "percent": 100,
                "scheduled": False,
                "download_url": "/api/v1/reports/3/download",
                "error": None,
            },
        ),
        **_inbox_types(),
        **_presence_types(),
        "reset": _object(
            {
                "reason": {
                    "type": "string",
                    "enum": ["history_trimmed", "history_lost", "unknown_position"],
                },
                "position": _ID,
            },
            description="control event: history no longer reaches back to the client's "
            "position; refetch the snapshot and continue from this event's id",
            example={"reason": "history_trimmed", "position": "1795634193826-0"},
        ),
        "access_revoked": _object(
            {"channel": {"type": "string"}, "reason": {"type": "string"}},
            description="control event: the user may no longer read this channel (a member "
            "removed, the file deleted); it is taken off the stream, which ends when no other "
            "channel is left. Do not ask for the channel again: it is refused (403, 404)",
            example={"channel": "file:7", "reason": "no longer a member of this file"},
        ),
        "auth_expired": _object(
            {"reason": {"type": "string"}},
            description="control event: the token expired; the stream ends. Reconnect with "
            "a fresh token and Last-Event-ID",
            example={"reason": "token expired"},
        ),
    }


_COUNTS = {
    "type": "object",
    "description": "the caller's counts after the change (as GET /notifications/counts)",
    "properties": {
        "unseen": _INT,
        "unread": _INT,
        "by_priority": {"type": "object", "additionalProperties": _INT},
    },
}
_COUNTS_EXAMPLE = {
    "unseen": 0,
    "unread": 2,
    "by_priority": {"low": 0, "normal": 1, "high": 1, "urgent": 0},
}


def _inbox_event(properties: dict[str, Any], *, example: dict[str, Any], description: str) -> Any:
    """An inbox-state event: its own fields plus the counts that go with it."""
    return _object(
        {**properties, "unread_count": _INT, "counts": _COUNTS},
        example={**example, "unread_count": 2, "counts": _COUNTS_EXAMPLE},
        description=description,
    )


def _inbox_types() -> dict[str, Any]:
    nid = {"type": "string", "examples": ["0b6f3c1e-8d0a-4c1e-9a57-2f1f6d4b8e21"]}
    ids = {"type": "array", "items": {"type": "string"}}
    uuid = "0b6f3c1e-8d0a-4c1e-9a57-2f1f6d4b8e21"
    when = "2026-11-25T17:41:00.000000Z"
    unarchived = _notification()
    unarchived["properties"]["counts"] = _COUNTS
    unarchived["description"] = "a notification came back from the archive (as listed)"
    unarchived["examples"] = [{**unarchived["examples"][0], "counts": _COUNTS_EXAMPLE}]
    return {
        "notifications_seen": _inbox_event(
            {"up_to": nid, "seen_at": _TIME, "count": _INT},
            description="every notification up to `up_to` was seen (the badge counts unseen)",
            example={"up_to": uuid, "seen_at": when, "count": 3},
        ),
        "notification_archived": _inbox_event(
            {"ids": ids, "archived_at": _TIME},
            description="one (`id`) or several (`ids`, archive-read) were archived",
            example={"id": uuid, "ids": [uuid], "archived_at": when},
        ),
        "notification_unarchived": unarchived,
        "notification_snoozed": _inbox_event(
            {"id": nid, "snoozed_until": _TIME},
            description="hidden until `snoozed_until`; it then comes back as a `notification` "
            "with woken_from_snooze: true",
            example={"id": uuid, "snoozed_until": "2026-11-26T09:00:00.000000Z"},
        ),
        "notification_action_done": _object(
            {"id": nid, "index": {"type": "integer", "enum": [0, 1]}, "done_at": _TIME},
            description="an action of a notification was performed (shown as done everywhere)",
            example={"id": uuid, "index": 0, "done_at": when},
        ),
        "notification_expired": _inbox_event(
            {"id": nid},
            description="a notification reached its expires_at and left the inbox",
            example={"id": uuid},
        ),
    }


def _presence_types() -> dict[str, Any]:
    user = {
        "type": "object",
        "required": ["user_id", "connections", "since"],
        "properties": {"user_id": {"type": "string"}, "connections": _INT, "since": _TIME},
    }
    return {
        "presence": _object(
            {"file_id": _FILE_ID, "count": _INT, "users": {"type": "array", "items": user}},
            description="who has the file open now (first on every file stream; no id)",
            example={
                "file_id": 7,
                "count": 1,
                "users": [{"user_id": "dana", "connections": 2, "since": "2026-11-25T17:40:12Z"}],
            },
        ),
        "presence_join": _object(
            {"file_id": _FILE_ID, "user_id": {"type": "string"}},
            description="a user opened the file (no id: never in history)",
            example={"file_id": 7, "user_id": "dana"},
        ),
        "presence_leave": _object(
            {"file_id": _FILE_ID, "user_id": {"type": "string"}},
            description="a user's last connection to the file has been gone for the grace period",
            example={"file_id": 7, "user_id": "dana"},
        ),
        "presence_count": _object(
            {"file_id": _FILE_ID, "count": _INT},
            description="a big room's count, at most once a second (no id)",
            example={"file_id": 7, "count": 1200},
        ),
    }


def envelope_schema() -> dict[str, Any]:
    """The envelope alone (also the OpenAPI component ``EventEnvelope``)."""
    return {
        "type": "object",
        "description": "one event: identical on SSE (the data line), WebSocket, history and "
        "finrt tail",
        "required": ["id", "channel", "type", "data", "created_at"],
        "properties": {
            "id": {
                **_ID,
                "type": ["string", "null"],
                "description": "unique, strictly increasing within the channel (opaque); null on "
                "presence events, which are never stored and move no position",
            },
            "channel": {
                "type": "string",
                "pattern": CHANNEL_RE.pattern.replace("\\Z", "$"),
                "examples": ["file:7"],
            },
            "type": {
                "type": "string",
                "pattern": TYPE_RE.pattern.replace("\\Z", "$"),
                "examples": ["metric_update"],
            },
            "data": {"description": "depends on type (see $defs)"},
            "created_at": _TIME,
            "key": {
                "type": "string",
                "pattern": KEY_RE.pattern.replace("\\Z", "$"),
                "description": "a newer event with the same key supersedes this one",
                "examples": ["revenue"],
            },
        },
        "examples": [
            {
                "id": "1795634193826-0",
                "channel": "file:7",
                "type": "metric_update",
                "data": {"name": "revenue", "value": "1200.00"},
                "created_at": "2026-11-25T17:40:12.123456Z",
                "key": "revenue",
            }
        ],
    }


def events_schema() -> dict[str, Any]:
    types = _types()
    nested: dict[str, Any] = {}
    for schema in types.values():
        nested.update(schema.pop("$defs", {}))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_PATH,
        "title": "FinVision Realtime events",
        "description": "An event envelope; data per type in $defs (named after the type).",
        "$defs": {"Envelope": envelope_schema(), **nested, **types},
        "allOf": [
            {"$ref": "#/$defs/Envelope"},
            *(
                {
                    "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                    "then": {"properties": {"data": {"$ref": f"#/$defs/{name}"}}},
                }
                for name in types
            ),
        ],
    }
