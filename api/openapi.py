"""The OpenAPI document a client generator can use.

FastAPI's document is completed here, once, for every route (also routes added later):
- operation ids are the route function's name in camelCase (``listNotifications``), short and
  stable, with a few renamed where the function name says too little;
- every error status carries the one error shape (api/errors.py: ``{"detail": ...}``) as the
  ``Error`` schema, and a description;
- every route that needs a token declares 401, and 503 (the identity provider's keys, or a
  backing service, unavailable);
- every schema has an example (built from its fields' examples where none is written).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

# Where the function's name alone would be vague in a generated client.
RENAMED = {
    "healthz": "getHealth",
    "readyz": "getReadiness",
    "metrics": "getMetrics",
    "mark_read": "markNotificationRead",
    "mark_all_read": "markAllNotificationsRead",
    "dismiss": "dismissNotification",
    "request_report": "createReport",
}

STATUS_TEXT = {
    400: "a malformed request: bad channel name, event id or body",
    401: "missing, malformed, badly signed or expired token",
    403: "the caller may not do this",
    404: "not found, or not visible to the caller",
    409: "conflicts with the current state",
    410: "gone",
    411: "length required",
    413: "too large",
    415: "unsupported media type",
    422: "a value outside what the route accepts",
    429: "too many requests",
    503: "a backing service (Redis, the task queue, the identity provider's keys) is "
    "unavailable; nothing was done, try again shortly",
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "description": "Every error: a sentence saying what is wrong (a list of field errors for "
    "a request FastAPI could not validate).",
    "required": ["detail"],
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
            ]
        }
    },
    "examples": [{"detail": "missing bearer token"}],
}

SSE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "description": "Server-Sent Events. Each event's data line is one EventEnvelope (JSON "
    "Schema of every type: /api/v1/schemas/events.json); an id-only frame announces the "
    "starting position; ': ping' comments keep the connection alive.",
    "examples": [
        'id: 1795634194239-0\nevent: notification\ndata: {"id":"1795634194239-0",...}\n\n'
    ],
}


def operation_id(route: APIRoute) -> str:
    name = RENAMED.get(route.name, route.name)
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _is_error(status: str) -> bool:
    return status.isdigit() and int(status) >= 400


def _complete_operation(op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    if op.get("security"):
        responses.setdefault("401", {})
        responses.setdefault("503", {})
    for status, response in responses.items():
        if not _is_error(status):
            for media, content in response.get("content", {}).items():
                if media == "text/event-stream" and not content.get("schema"):
                    content["schema"] = {"$ref": "#/components/schemas/EventStream"}
            continue
        if response.get("description") in (None, "", "Additional Response"):
            response["description"] = STATUS_TEXT.get(int(status), "refused")
        content = response.setdefault("content", {})
        json_content = content.setdefault("application/json", {})
        schema = json_content.get("schema", {})
        if not schema or schema.get("$ref") == "#/components/schemas/HTTPValidationError":
            json_content["schema"] = {"$ref": "#/components/schemas/Error"}


# Examples by field name ("Schema.field" first), for fields that carry none of their own: any
# schema, also a new one, gets realistic values for the names it shares with these.
FIELD_EXAMPLES: dict[str, Any] = {
    "FilePublic.name": "q3-2026.csv",
    "ParameterPublic.name": "growth",
    "ParameterPublic.value": "0.25",
    "ParameterPublic.previous": "0.1",
    "MemberPublic.role": "member",
    "DashboardPublic.status": "processed",
    "ReportPublic.format": "pdf",
    "title": "Report ready",
    "message": "Q3 income statement is ready",
    "owner_id": "alice",
    "user_id": "bob@example.com",
    "updated_by": "alice",
    "requested_by": "alice",
    "job_id": "5d1c9a7e-3b2f-4e8a-9c61-0f2d7b4a8e13",
    "last_event_id": "1795634193826-0",
    "EventCreated.id": "1795634193826-0",
    "ticket": "Jx3v9q0sT0k2m5Yc8dWb1nL4rP7eA6hG",
    "expires_in": 60,
    "currency": "EUR",
    "error": None,
    "created_at": "2026-11-25T17:40:12.123456Z",
    "updated_at": "2026-11-25T17:41:03.004211Z",
    "started_at": "2026-11-25T17:40:13.000000Z",
    "finished_at": "2026-11-25T17:40:19.500000Z",
    "download_url": "/api/v1/reports/3/download",
    "size_bytes": 48213,
    "last_period": "2026-11-24",
    "current_period": "2026-11-25",
    "changed_metrics": ["net_income", "net_margin"],
    "changed_charts": ["net_income"],
    "rows_total": 120,
    "rows_ok": 118,
    "rows_bad": 2,
    "metrics": [{"name": "revenue", "label": "Revenue", "unit": "money", "value": "1200.00"}],
    "charts": [{"name": "revenue", "points": [{"period": "2026-Q2", "value": "1200.00"}]}],
    "parameters": {"growth": "0.25"},
    "key": "revenue",
    "loc": ["body", "value"],
    "msg": "Field required",
}


def _field_example(schema_name: str, field: str, sub: dict[str, Any]) -> tuple[bool, Any]:
    if sub.get("examples") or "example" in sub or "const" in sub:
        return False, None
    for name in (f"{schema_name}.{field}", field):
        if name in FIELD_EXAMPLES and _fits(FIELD_EXAMPLES[name], sub):
            return True, copy.deepcopy(FIELD_EXAMPLES[name])
    return False, None


_JSON_TYPES = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _types_of(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type")
    kinds = set(kind if isinstance(kind, list) else [kind] if kind else [])
    for option in schema.get("anyOf", []):
        kinds |= _types_of(option)
    return kinds


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    """A shallow check (the JSON type) that a named example suits this field."""
    kinds = _types_of(schema)
    return not kinds or _JSON_TYPES.get(type(value)) in kinds


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        resolved: dict[str, Any] = schemas.get(ref.rsplit("/", 1)[1], {})
        return resolved
    return schema


def example_of(
    schema: dict[str, Any], schemas: dict[str, Any], depth: int = 0, name: str = ""
) -> Any:
    """An example value for ``schema``, from the examples written on it or its parts."""
    ref = schema.get("$ref", "")
    name = ref.rsplit("/", 1)[1] if ref else name
    schema = _resolve(schema, schemas)
    if schema.get("examples"):
        return copy.deepcopy(schema["examples"][0])
    if "example" in schema:
        return copy.deepcopy(schema["example"])
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema and schema["default"] is not None:
        return copy.deepcopy(schema["default"])
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key, []) if o.get("type") != "null"]
        if options:
            return example_of(options[0], schemas, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        if depth > 6:
            return {}
        example: dict[str, Any] = {}
        for field, sub in schema.get("properties", {}).items():
            known, value = _field_example(name, field, sub)
            example[field] = value if known else example_of(sub, schemas, depth + 1)
        return example
    if kind == "array":
        return [example_of(schema.get("items", {}), schemas, depth + 1)]
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return False
    if kind == "string":
        return {"date-time": "2026-11-25T17:40:12.123456Z", "binary": "…"}.get(
            schema.get("format", ""), "text"
        )
    return None


def build_openapi(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        servers=app.servers,
    )
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas["EventStream"] = SSE_SCHEMA
    for item in document.get("paths", {}).values():
        for op in item.values():
            _complete_operation(op)
    if "HTTPValidationError" not in str(document["paths"]):
        schemas.pop("HTTPValidationError", None)
    for name, schema in schemas.items():
        if not schema.get("examples") and "example" not in schema:
            schema["examples"] = [example_of(schema, schemas, name=name)]
    return document


def install(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


OPERATION_ID_RE = re.compile(r"^[a-z][A-Za-z0-9]{2,40}\Z")
