"""Reports: request one, follow its status, download it."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.deps import BearerToken, CurrentUser, SettingsDep, StateDep
from api.errors import UNPARSABLE_BODY, forbidden, not_found
from api.limits import rate_limited_response
from api.routes.files import FileIdPath, reader_file
from core.settings import Settings
from domain.reports import REPORT_CONTENT_TYPES
from models import File, ReportExport, session_scope
from services import reports as service
from services.access import Forbidden, NotFound
from workers.enqueue import send_generate_report

log = logging.getLogger("finrt.api.reports")

router = APIRouter(prefix="/api/v1", tags=["reports"])

# A page of a file's reports; also the default, which is what the list gave before it paged.
MAX_REPORTS_PAGE = 100
ReportIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="the report's id")]


class ReportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["csv", "xlsx", "pdf"]


class ReportAccepted(BaseModel):
    report_id: int
    job_id: str


class ReportPublic(BaseModel):
    id: int
    file_id: int
    format: str
    status: Literal["queued", "running", "ready", "failed"]
    job_id: str
    requested_by: str
    scheduled: bool
    error: str | None
    size_bytes: int | None
    download_url: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class ReportList(BaseModel):
    reports: list[ReportPublic]
    total: int = Field(description="how many reports the file has, over all pages")
    page: int
    limit: int


def _report(session: Session, user_id: str, report_id: int) -> tuple[ReportExport, File]:
    try:
        return service.report_for_reader(session, user_id, report_id)
    except NotFound as exc:
        raise not_found(str(exc)) from exc
    except Forbidden as exc:
        raise forbidden(str(exc)) from exc


def _create(s: Settings, user_id: str, file_id: str, fmt: str) -> tuple[int, str]:
    with session_scope(s.database_url) as session:
        file = reader_file(session, user_id, file_id)
        try:
            report = service.request_report(
                session, file, user_id, fmt, str(uuid.uuid4()), announce=False
            )
        except service.FileNotReady as exc:
            raise HTTPException(409, str(exc)) from exc
        return report.id, report.job_id


def _send(s: Settings, report_id: int, job_id: str) -> None:
    service.send_and_announce(
        s.database_url, report_id, lambda: send_generate_report(s, report_id, job_id)
    )


@router.post(
    "/files/{file_id}/reports",
    status_code=202,
    responses={
        **UNPARSABLE_BODY,
        403: {},
        404: {},
        409: {"description": "the file is not processed"},
        429: rate_limited_response("FINRT_REPORT_RATE"),
        503: {"description": "the task queue is unreachable; nothing was stored or sent"},
    },
)
async def request_report(
    file_id: FileIdPath,
    body: ReportCreate,
    state: StateDep,
    principal: CurrentUser,
    token: BearerToken,
) -> ReportAccepted:
    """Request a report (owner or member); ``report_status`` events follow on the file's
    channel and the caller's. Only an accepted request counts against FINRT_REPORT_RATE; one
    refused with 403, 404, 409, 422 or 429 does not."""
    s = state.settings
    await state.limits.room("report", token)
    report_id, job_id = await run_in_threadpool(_create, s, principal.user_id, file_id, body.format)
    # Counted once the request is accepted; when requests of one token race for the last of
    # its budget, the one counted too many leaves nothing (no row, no event).
    try:
        await state.limits.check("report", token)
    except HTTPException:
        await run_in_threadpool(service.discard_report, s.database_url, report_id)
        raise
    # The row is stored without events; they follow only once its task is queued, so a
    # request refused with 503 leaves nothing behind (no row, no event).
    try:
        await run_in_threadpool(_send, s, report_id, job_id)
    except Exception:
        log.exception("could not queue report %s; discarding it", report_id)
        await run_in_threadpool(service.discard_report, s.database_url, report_id)
        raise HTTPException(503, "the task queue is unreachable; try again shortly") from None
    return ReportAccepted(report_id=report_id, job_id=job_id)


@router.get("/files/{file_id}/reports", responses={403: {}, 404: {}})
def list_reports(
    file_id: FileIdPath,
    settings: SettingsDep,
    principal: CurrentUser,
    page: Annotated[int, Query(ge=1, le=2**31 - 1, description="1 for the newest")] = 1,
    limit: Annotated[
        int, Query(ge=1, le=MAX_REPORTS_PAGE, description="page size")
    ] = MAX_REPORTS_PAGE,
) -> ReportList:
    """The file's reports, newest first, a page at a time (as the notifications are)."""
    with session_scope(settings.database_url, read_only=True) as session:
        file = reader_file(session, principal.user_id, file_id)
        of_file = ReportExport.file_id == file.id
        total = session.scalar(select(func.count()).select_from(ReportExport).where(of_file)) or 0
        offset = (page - 1) * limit
        found: list[ReportExport] = []
        if offset < total:  # also keeps a huge page number away from the database's integers
            found = list(
                session.scalars(
                    select(ReportExport)
                    .where(of_file)
                    .order_by(ReportExport.id.desc())
                    .offset(offset)
                    .limit(limit)
                )
            )
        return ReportList(
            reports=[ReportPublic(**service.report_public(r)) for r in found],
            total=total,
            page=page,
            limit=limit,
        )


@router.get("/reports/{report_id}", responses={403: {}, 404: {}})
def get_report(
    report_id: ReportIdPath, settings: SettingsDep, principal: CurrentUser
) -> ReportPublic:
    """A report's status (``queued``, ``running``, ``ready``, ``failed``)."""
    with session_scope(settings.database_url, read_only=True) as session:
        report, _file = _report(session, principal.user_id, report_id)
        return ReportPublic(**service.report_public(report))


@router.get(
    "/reports/{report_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {t: {} for t in REPORT_CONTENT_TYPES.values()}},
        403: {},
        404: {},
        409: {"description": "not ready yet"},
        410: {"description": "the stored file is gone"},
    },
)
def download_report(
    report_id: ReportIdPath, settings: SettingsDep, principal: CurrentUser
) -> FileResponse:
    """The finished report file."""
    with session_scope(settings.database_url, read_only=True) as session:
        report, file = _report(session, principal.user_id, report_id)
        if report.status != "ready":
            raise HTTPException(409, f"the report is {report.status}, not ready")
        path = service.stored_path(settings.reports_dir, report)
        filename = service.download_name(file.name, report)
        media_type = REPORT_CONTENT_TYPES[report.format]
    if path is None or not path.is_file():
        raise HTTPException(410, "the report file is gone; request a new report")
    # nosniff: a browser must take the report for its declared type, never guess HTML in it.
    return FileResponse(
        path,
        media_type=media_type,
        filename=filename,
        content_disposition_type="attachment",
        headers={"X-Content-Type-Options": "nosniff"},
    )
