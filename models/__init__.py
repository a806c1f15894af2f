"""Tables (SQLAlchemy 2.0 typed models), sessions and migrations."""

from models import change_events  # noqa: F401  (registers the ORM-level event hooks)
from models.base import Base
from models.db import engine_for, session_scope
from models.financial import (
    DashboardSnapshot,
    FileParameter,
    FileSchedule,
    FileUpload,
    FinancialDataRow,
    ReportExport,
)
from models.notifications import Notification, NotificationJoin, NotificationPreference
from models.outbox import OutboxEvent, enqueue
from models.users import File, FileMember, User

__all__ = [
    "Base",
    "DashboardSnapshot",
    "File",
    "FileMember",
    "FileParameter",
    "FileSchedule",
    "FileUpload",
    "FinancialDataRow",
    "Notification",
    "NotificationJoin",
    "NotificationPreference",
    "OutboxEvent",
    "ReportExport",
    "User",
    "engine_for",
    "enqueue",
    "session_scope",
]
