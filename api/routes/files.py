"""Files: upload, list, status, dashboard snapshot, parameters, sharing and report schedules."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from sqlalchemy import delete
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from api.deps import BearerToken, CurrentUser, SettingsDep, StateDep
from api.errors import UNPARSABLE_BODY, forbidden, not_found
from api.limits import rate_limited_response
from api.write_gate import write_turn
from core.settings import Settings
from domain.csv_import import CsvRejected, precheck_csv
from models import File, FileSchedule, session_scope
from services import files as service
from services.access import Forbidden, NotFound, file_for_reader, parse_file_id
from services.reports import schedule_public, set_schedule
from streams.envelope import format_id
from workers.enqueue import send_process_file

log = logging.getLogger("finrt.api.files")

router = APIRouter(prefix="/api/v1", tags=["files"])

FileIdPath = Annotated[str, Path(max_length=20, description="the file's id")]
# Multipart boundaries and part headers around the file itself.
UPLOAD_OVERHEAD_BYTES = 64 * 1024


class FileAccepted(BaseModel):
    file_id: int
    job_id: str
    last_event_id: str = Field(
        description="the file channel's position before processing started: open "
        "/stream/files/{file_id} with Last-Event-ID set to it to see every processing event"
    )


class FilePublic(BaseModel):
    id: int
    name: str
    owner_id: str
    role: Literal["owner", "member"]
    status: Literal["queued", "processing", "processed", "failed"]
    rows_total: int
    rows_ok: int
    rows_bad: int
    error: str | None
    created_at: str | None
    updated_at: str | None


class FileList(BaseModel):
    files: list[FilePublic]


class DashboardPublic(BaseModel):
    file_id: int
    status: str
    currency: str | None
    metrics: list[dict[str, Any]]
    charts: list[dict[str, Any]]
    parameters: dict[str, str]
    period: Literal["month", "quarter", "year"] = Field(
        description="the figures' period: month (the file's own periods), quarter or year"
    )
    last_event_id: str = Field(
        description="the stream position this snapshot reflects: resume the file stream "
        "from it (Last-Event-ID) and no later change is missed"
    )


class ParameterUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Any = Field(description="a number, or a string holding one", examples=[0.25])


class ParameterPublic(BaseModel):
    file_id: int
    name: str
    value: str
    previous: str | None
    updated_by: str
    updated_at: str | None
    changed_metrics: list[str]
    changed_charts: list[str]


class MemberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$", examples=["bob@example.com"])


class MemberPublic(BaseModel):
    file_id: int
    user_id: str
    role: str


class ScheduleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frequency: Literal["daily", "weekly"] | None = Field(description="null removes the schedule")
    format: Literal["csv", "xlsx", "pdf"] = "pdf"


class SchedulePublic(BaseModel):
    file_id: int
    frequency: Literal["daily", "weekly"] | None
    format: Literal["csv", "xlsx", "pdf"] | None
    last_period: str | None
    current_period: str | None = None


# -- access ----------------------------------------------------------------------------------


def reader_file(session: Session, user_id: str, raw_id: str) -> File:
    """The file if the user owns it or is a member: 404 unknown, 403 otherwise."""
    try:
        return file_for_reader(session, user_id, parse_file_id(raw_id))
    except NotFound as exc:
        raise not_found(str(exc)) from exc
    except Forbidden as exc:
        raise forbidden(str(exc)) from exc


def owner_file(session: Session, user_id: str, raw_id: str, action: str) -> File:
    file = reader_file(session, user_id, raw_id)
    if file.owner_id != user_id:
        raise forbidden(f"only the file's owner may {action}")
    return file


# -- upload ----------------------------------------------------------------------------------


_REFUSAL_STATUS = {"too_large": 413, "not_text": 415, "invalid": 422}


def _refusal(exc: CsvRejected) -> HTTPException:
    return HTTPException(_REFUSAL_STATUS[exc.kind], exc.reason)


async def _read_upload(request: Request, s: Settings) -> tuple[str, bytes]:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "multipart/form-data":  # media types are case-insensitive (RFC 9110)
        raise HTTPException(415, "send the CSV as multipart/form-data, in the field 'file'")
    declared = request.headers.get("content-length")
    if declared is None or not (declared.isascii() and declared.isdigit()):
        raise HTTPException(411, "the upload needs a Content-Length header")
    too_large = f"the file is too large; the limit is {s.upload_max_bytes} bytes"
    if int(declared) > s.upload_max_bytes + UPLOAD_OVERHEAD_BYTES:
        raise HTTPException(413, too_large)
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if isinstance(upload, str):
            # A part without a filename arrives as a plain value (curl -F "file=<q.csv").
            raise HTTPException(
                422,
                "the multipart field 'file' must be a file with a filename (curl -F file=@q.csv)",
            )
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, "the multipart field 'file' (a CSV file) is missing")
        data = await upload.read(s.upload_max_bytes + 1)
        name = service.clean_file_name(upload.filename)
    if len(data) > s.upload_max_bytes:
        raise HTTPException(413, too_large)
    return name, data


def _precheck(data: bytes, s: Settings) -> None:
    try:
        precheck_csv(data, max_bytes=s.upload_max_bytes, max_rows=s.upload_max_rows)
    except CsvRejected as exc:
        raise _refusal(exc) from exc


def _store_upload(s: Settings, owner: str, name: str, data: bytes, job_id: str) -> int:
    with session_scope(s.database_url) as session:
        file = service.create_upload(session, owner, name, data, job_id)
        session.flush()
        return file.id


def _discard_upload(s: Settings, file_id: int) -> None:
    with session_scope(s.database_url) as session:
        # A file nobody could have followed yet (its id was never returned): not news.
        session.execute(
            delete(File).where(File.id == file_id).execution_options(finrt_events="explicit")
        )


UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "UTF-8 CSV, header "
                            "period,statement,line_item,amount,currency",
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/files",
    status_code=202,
    openapi_extra=UPLOAD_BODY,
    responses={
        **UNPARSABLE_BODY,
        411: {"description": "no Content-Length"},
        413: {"description": "too many bytes or rows"},
        415: {"description": "not multipart, or the file is not UTF-8 CSV text"},
        422: {"description": "no 'file' field, or a wrong header or an empty file"},
        429: rate_limited_response("FINRT_UPLOAD_RATE"),
        503: {"description": "the task queue is unreachable; nothing was stored"},
    },
)
async def upload_file(
    request: Request, state: StateDep, principal: CurrentUser, token: BearerToken
) -> FileAccepted:
    """Upload a CSV; a worker processes it (watch ``/stream/files/{file_id}``).

    Every upload counts against FINRT_UPLOAD_RATE (before its body is read, so also one
    refused later for its content); one refused with 429 does not.
    """
    s = state.settings
    await state.limits.check("upload", token)
    name, data = await _read_upload(request, s)
    await run_in_threadpool(_precheck, data, s)
    job_id = str(uuid.uuid4())
    async with write_turn():
        file_id = await run_in_threadpool(_store_upload, s, principal.user_id, name, data, job_id)
    try:
        # Read before the task is sent, so every processing event lies after this position.
        bounds = await state.hub.history.bounds(service.file_channel(file_id))
        await run_in_threadpool(send_process_file, s, file_id, job_id)
    except Exception:
        log.exception("could not queue file %s; discarding the upload", file_id)
        await run_in_threadpool(_discard_upload, s, file_id)
        raise HTTPException(503, "the task queue is unreachable; try again shortly") from None
    return FileAccepted(file_id=file_id, job_id=job_id, last_event_id=format_id(bounds.head))


# -- reading ---------------------------------------------------------------------------------


@router.get("/files")
def list_files(settings: SettingsDep, principal: CurrentUser) -> FileList:
    """The caller's files, owned and shared, newest first."""
    with session_scope(settings.database_url, read_only=True) as session:
        found = service.files_for(session, principal.user_id)
        return FileList(files=[FilePublic(**service.file_public(f, role)) for f, role in found])


@router.get("/files/{file_id}", responses={403: {}, 404: {}})
def get_file(file_id: FileIdPath, settings: SettingsDep, principal: CurrentUser) -> FilePublic:
    """A file's status and row counts."""
    with session_scope(settings.database_url, read_only=True) as session:
        file = reader_file(session, principal.user_id, file_id)
        return FilePublic(**service.file_public(file, service.role_of(file, principal.user_id)))


def _dashboard(s: Settings, user_id: str, file_id: str, period: str) -> dict[str, Any]:
    with session_scope(s.database_url, read_only=True) as session:
        return service.dashboard_public(session, reader_file(session, user_id, file_id), period)


def _check_reader(s: Settings, user_id: str, file_id: str) -> int:
    with session_scope(s.database_url, read_only=True) as session:
        return reader_file(session, user_id, file_id).id


@router.get(
    "/files/{file_id}/dashboard",
    responses={403: {}, 404: {}, 503: {"description": "Redis is unreachable"}},
)
async def get_dashboard(
    file_id: FileIdPath,
    state: StateDep,
    principal: CurrentUser,
    period: Annotated[
        Literal["month", "quarter", "year"],
        Query(description="monthly (the file's own periods), quarterly or yearly figures"),
    ] = "month",
) -> DashboardPublic:
    """The dashboard snapshot of ``period`` and the stream position it reflects."""
    s = state.settings
    ident = await run_in_threadpool(_check_reader, s, principal.user_id, file_id)
    # Position first, snapshot second: every change committed after the snapshot read is
    # published after the position, so resuming from it misses nothing (it may repeat some).
    try:
        bounds = await state.hub.history.bounds(service.file_channel(ident))
    except (RedisError, OSError) as exc:
        raise HTTPException(503, "Redis is unreachable; try again shortly") from exc
    snapshot = await run_in_threadpool(_dashboard, s, principal.user_id, file_id, period)
    return DashboardPublic(**snapshot, last_event_id=format_id(bounds.head))


# -- changes ---------------------------------------------------------------------------------


@router.put(
    "/files/{file_id}/parameters/{name}",
    responses={**UNPARSABLE_BODY, 403: {}, 404: {}, 422: {}},
)
def put_parameter(
    file_id: FileIdPath,
    name: Annotated[str, Path(max_length=32)],
    body: ParameterUpdate,
    settings: SettingsDep,
    principal: CurrentUser,
) -> ParameterPublic:
    """Set a what-if parameter (owner or member); recomputed metrics follow on the stream."""
    with session_scope(settings.database_url) as session:
        file = reader_file(session, principal.user_id, file_id)
        try:
            stored = service.set_parameter(session, file, name, body.value, principal.user_id)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
    return ParameterPublic(**stored)


@router.post(
    "/files/{file_id}/members",
    status_code=201,
    responses={
        **UNPARSABLE_BODY,
        200: {"description": "already a member"},
        403: {},
        404: {},
        422: {},
    },
)
def add_member(
    file_id: FileIdPath,
    body: MemberCreate,
    response: Response,
    settings: SettingsDep,
    principal: CurrentUser,
) -> MemberPublic:
    """Share the file (owner only); the invitee gets a ``collaboration_invite``."""
    with session_scope(settings.database_url) as session:
        file = owner_file(session, principal.user_id, file_id, "share it")
        try:
            member, created = service.add_member(session, file, body.user_id, principal.user_id)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        result = MemberPublic(file_id=file.id, user_id=member.user_id, role=member.role)
    if not created:
        response.status_code = 200
    return result


@router.get("/files/{file_id}/schedule", responses={403: {}, 404: {}})
def get_schedule(
    file_id: FileIdPath, settings: SettingsDep, principal: CurrentUser
) -> SchedulePublic:
    """The file's recurring report, if any."""
    with session_scope(settings.database_url, read_only=True) as session:
        file = reader_file(session, principal.user_id, file_id)
        return SchedulePublic(**schedule_public(file.id, session.get(FileSchedule, file.id)))


@router.put("/files/{file_id}/schedule", responses={**UNPARSABLE_BODY, 403: {}, 404: {}, 422: {}})
def put_schedule(
    file_id: FileIdPath,
    settings: SettingsDep,
    principal: CurrentUser,
    body: Annotated[ScheduleUpdate, Body()],
) -> SchedulePublic:
    """Set the recurring report (owner only): daily or weekly, in UTC; null removes it."""
    with session_scope(settings.database_url) as session:
        file = owner_file(session, principal.user_id, file_id, "schedule its reports")
        schedule = set_schedule(session, file, principal.user_id, body.frequency, body.format)
        return SchedulePublic(**schedule_public(file.id, schedule))
