"""Financial data of a file: the upload, its rows, the dashboard snapshot, parameters, report
exports and report schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow

REPORT_STATUSES = ("queued", "running", "ready", "failed")
FREQUENCIES = ("daily", "weekly")


class FileUpload(Base):
    """The uploaded bytes, kept in the database (so API and workers need no shared disk) until
    the file is processed."""

    __tablename__ = "file_uploads"

    file_id: Mapped[int] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # How many times its processing was started (a job tried too often ends failed).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class FinancialDataRow(Base):
    """One accepted CSV row. ``amount`` is the exact decimal text: SQLite has no exact decimal
    type, and a float would change 18-digit amounts."""

    __tablename__ = "financial_rows"
    __table_args__ = (Index("ix_financial_rows_file_position", "file_id", "position"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    period: Mapped[str] = mapped_column(String(8))
    statement: Mapped[str] = mapped_column(String(16))
    line_item: Mapped[str] = mapped_column(String(64))
    amount: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))


class DashboardSnapshot(Base):
    """The latest computed dashboard of a file (``Dashboard.to_json()``; None before processing).

    ``version`` grows with every write; a writer bumps it first, which takes the row's lock, so
    concurrent recomputations of one file run one after the other.
    """

    __tablename__ = "dashboards"

    file_id: Mapped[int] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class FileParameter(Base):
    """A what-if parameter of a file (``domain.metrics.PARAMETERS``), as exact decimal text."""

    __tablename__ = "file_parameters"

    file_id: Mapped[int] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(80))
    updated_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ReportExport(Base):
    """A report requested by a user (or by a schedule: ``schedule_key`` is then
    ``"{file_id}:{period}"``, unique, so a period's report is created once)."""

    __tablename__ = "report_exports"
    __table_args__ = (
        Index("ix_report_exports_file", "file_id", "created_at"),
        Index("ix_report_exports_status", "status", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("files.id", ondelete="CASCADE"))
    requested_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    format: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    job_id: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The finished file's name inside FINRT_REPORTS_DIR.
    stored_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    schedule_key: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class FileSchedule(Base):
    """A file's recurring report. ``last_period`` is the last period (``2026-11-25`` or
    ``2026-W48``) a report was started for."""

    __tablename__ = "file_schedules"

    file_id: Mapped[int] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    frequency: Mapped[str] = mapped_column(String(8))
    format: Mapped[str] = mapped_column(String(8))
    last_period: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
