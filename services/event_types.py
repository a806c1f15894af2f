"""The event types this service produces itself. Publishing them over HTTP is refused: a
client could otherwise fake a notification toast, a badge count or a metric (and a ``key``
that supersedes the real event)."""

from __future__ import annotations

SERVICE_EVENT_TYPES: frozenset[str] = frozenset(
    {
        # notifications (services/notify.py, services/notifications.py)
        "notification",
        "notification_read",
        "notification_dismissed",
        "notifications_read_all",
        # inbox states, digests, actions and preferences (services/inbox_states.py, digests.py,
        # notification_actions.py, preferences.py)
        "notifications_seen",
        "notification_archived",
        "notification_unarchived",
        "notification_snoozed",
        "notification_expired",
        "notification_updated",
        "notification_action_done",
        "preferences_updated",
        # presence (streams/presence_live.py): a member must not fake another's arrival
        "presence",
        "presence_join",
        "presence_leave",
        "presence_count",
        # files, dashboards and reports (workers/, services/files.py, services/reports.py)
        "file_processing",
        "file_members",
        "file_deleted",
        "job_progress",
        "financial_data_update",
        "metric_update",
        "chart_data_update",
        "parameter_update",
        "report_status",
        # made by the streams themselves, or WebSocket replies an event must not look like
        "reset",
        "auth_expired",
        "access_revoked",
        "ping",
        "pong",
        "subscribed",
        "unsubscribed",
        "error",
    }
)


def is_reserved(event_type: str) -> bool:
    return event_type in SERVICE_EVENT_TYPES
