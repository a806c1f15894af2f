"""/openapi.json is a document a client generator can use, and it tells the truth.

Validated with openapi-spec-validator; operation ids short and stable; every error with the
Error schema; every schema with an example that fits it; and every route, called the ways that
make it refuse (no token, someone else's file, unknown ids, an example body), answers only
statuses it declares. /api/v1/schemas/events.json describes the events the API really sends.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from api.openapi import example_of

# Changing one of these breaks every generated client: add, never rename.
OPERATION_IDS = {
    "GET /healthz": "getHealth",
    "GET /readyz": "getReadiness",
    "GET /metrics": "getMetrics",
    "GET /api/v1/stream/notifications": "streamNotifications",
    "GET /api/v1/stream/files/{file_id}": "streamFile",
    "GET /api/v1/stream": "streamMany",
    "POST /api/v1/stream/tickets": "createTicket",
    "GET /api/v1/events/{channel}": "listEvents",
    "POST /api/v1/events/{channel}": "publishEvent",
    "GET /api/v1/schemas/events.json": "getEventSchemas",
    "GET /api/v1/notifications": "listNotifications",
    "GET /api/v1/notifications/unread-count": "getUnreadCount",
    "POST /api/v1/notifications/mark-all-read": "markAllNotificationsRead",
    "POST /api/v1/notifications/{notification_id}/read": "markNotificationRead",
    "POST /api/v1/notifications/{notification_id}/dismiss": "dismissNotification",
    "GET /api/v1/files": "listFiles",
    "POST /api/v1/files": "uploadFile",
    "GET /api/v1/files/{file_id}": "getFile",
    "GET /api/v1/files/{file_id}/dashboard": "getDashboard",
    "PUT /api/v1/files/{file_id}/parameters/{name}": "putParameter",
    "POST /api/v1/files/{file_id}/members": "addMember",
    "GET /api/v1/files/{file_id}/schedule": "getSchedule",
    "PUT /api/v1/files/{file_id}/schedule": "putSchedule",
    "POST /api/v1/files/{file_id}/reports": "createReport",
    "GET /api/v1/files/{file_id}/reports": "listReports",
    "GET /api/v1/reports/{report_id}": "getReport",
    "GET /api/v1/reports/{report_id}/download": "downloadReport",
}
ERROR_REF = "#/components/schemas/Error"


@pytest.fixture(scope="module")
def document(api) -> dict[str, Any]:
    return httpx.get(f"{api.url}/openapi.json", timeout=10).json()


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": op
        for path, item in document["paths"].items()
        for method, op in item.items()
    }


def _registry(document: dict[str, Any]) -> Registry:
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return Registry().with_resource("urn:openapi", resource)


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Validator:
    # Component references resolve inside the document itself.
    text = json.dumps(schema).replace('"#/components/', '"urn:openapi#/components/')
    return jsonschema.Draft202012Validator(json.loads(text), registry=_registry(document))


def test_document_is_valid_with_stable_ids_and_declared_errors(document):
    validate(document)  # raises on any violation of the OpenAPI 3.1 specification
    operations = _operations(document)
    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids)), "operation ids must be unique"
    for where, op in operations.items():
        assert re.match(r"^[a-z][A-Za-z0-9]{2,40}\Z", op["operationId"]), where
    for where, expected in OPERATION_IDS.items():
        assert where in operations, f"{where} disappeared"
        assert operations[where]["operationId"] == expected, where
    secured = [w for w, op in operations.items() if op.get("security")]
    assert len(secured) >= 22
    for where in secured:
        assert "401" in operations[where]["responses"], where
    for where, op in operations.items():
        for status, response in op["responses"].items():
            if int(status) >= 400:
                assert response["description"] and response["description"] != "Additional Response"
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"] in (ERROR_REF, "#/components/schemas/Readiness"), where
    assert "text/event-stream" in operations["GET /api/v1/stream"]["responses"]["200"]["content"]
    events = operations["GET /api/v1/events/{channel}"]["responses"]["200"]["content"]
    assert events["application/json"]["schema"] == {"$ref": "#/components/schemas/EventList"}
    ready = operations["GET /readyz"]["responses"]
    assert ready["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Readiness")


def test_every_schema_has_an_example_that_fits_it(document):
    for name, schema in document["components"]["schemas"].items():
        examples = schema.get("examples")
        assert examples, f"{name} has no example"
        if name == "EventStream":
            continue
        for example in examples:
            errors = list(_validator(document, schema).iter_errors(example))
            assert not errors, f"{name}: {errors[0].message}"


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def _body(document: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        schema = content["application/json"]["schema"]
        return {"json": example_of(schema, document["components"]["schemas"])}
    if "multipart/form-data" in content:
        return {"files": {"file": ("q.csv", b"period,statement\n", "text/csv")}}
    return {}


def test_every_refusal_is_declared(api, document, token, user, make_file):
    """Each route, called without a token, on someone else's file and on unknown ids: every
    status it answers is one it declares (so a generated client knows every outcome)."""
    mine, theirs = make_file(user), make_file(f"o{user}")
    cases = {
        "someone else's": {
            "file_id": str(theirs),
            "channel": f"file:{theirs}",
            "notification_id": str(uuid.uuid4()),
            "report_id": "2147483000",
            "name": "growth",
            "index": "0",
        },
        "unknown": {
            "file_id": "999999999",
            "channel": f"user:{user}",
            "notification_id": "not-a-uuid",
            "report_id": "2147483001",
            "name": "no_such_parameter",
            "index": "7",
        },
        "own": {
            "file_id": str(mine),
            "channel": f"user:{user}",
            "notification_id": str(uuid.uuid4()),
            "report_id": "1",
            "name": "growth",
            "index": "1",
        },
    }
    undeclared: list[str] = []
    with httpx.Client(base_url=api.url, timeout=10) as client:
        for where, op in _operations(document).items():
            method, path = where.split(" ", 1)
            if path.startswith("/api/v1/stream") and method == "GET":
                continue  # streams: covered by tests/api/test_auth.py and the stream fuzzing
            declared = set(op["responses"])
            for label, values in cases.items():
                url = _fill(path, values)
                for auth in ({}, {"Authorization": f"Bearer {token(user, scope='publish')}"}):
                    r = client.request(method, url, headers=auth, **_body(document, op))
                    if str(r.status_code) not in declared:
                        undeclared.append(
                            f"{where} ({label}, auth={bool(auth)}) -> {r.status_code}"
                        )
                    if r.status_code >= 400 and "application/json" in r.headers.get(
                        "content-type", ""
                    ):
                        assert "detail" in r.json(), where
    assert not undeclared, "statuses missing from /openapi.json:\n" + "\n".join(undeclared)


def test_event_schemas_describe_real_events(api, document, token, user, notify):
    schema = httpx.get(f"{api.url}/api/v1/schemas/events.json", timeout=10)
    assert schema.status_code == 200
    assert schema.headers["content-type"].startswith("application/schema+json")
    body = schema.json()
    jsonschema.Draft202012Validator.check_schema(body)
    validator = jsonschema.Draft202012Validator(body)
    for name, sub in body["$defs"].items():
        for example in sub.get("examples", []):
            if name != "Envelope" and name in (
                s["if"]["properties"]["type"]["const"] for s in body["allOf"][1:]
            ):
                event = {
                    "id": "1-0",
                    "channel": "user:a",
                    "type": name,
                    "data": example,
                    "created_at": "2026-11-25T17:40:12.123456Z",
                }
                validator.validate(event)

    notify(user)
    auth = {"Authorization": f"Bearer {token(user)}"}
    with httpx.Client(base_url=api.url, headers=auth, timeout=10) as client:
        listed = client.get("/api/v1/notifications").json()["notifications"]
        client.post(f"/api/v1/notifications/{listed[0]['id']}/read")
        client.post("/api/v1/notifications/mark-all-read")
        client.post(f"/api/v1/notifications/{listed[0]['id']}/dismiss")
        events = client.get(f"/api/v1/events/user:{user}").json()["events"]
        reset = client.get(f"/api/v1/events/user:{user}", params={"after": "1-0"}).json()["events"]
    assert [e["type"] for e in events] == [
        "notification",
        "notification_read",
        "notification_dismissed",
    ]
    assert reset and reset[0]["type"] == "reset"
    for event in [*events, reset[0]]:
        validator.validate(event)
    # A wrong shape is caught: the schema is not a formality.
    broken = {**events[0], "data": {**events[0]["data"], "unread_count": "three"}}
    assert not validator.is_valid(broken)
    # The OpenAPI EventList fits the same events.
    envelope = _validator(document, document["components"]["schemas"]["EventList"])
    envelope.validate({"events": events})
