"""The notification types, in the foundation layer so that settings (and the metrics) can check
names against them without importing the tables."""

from __future__ import annotations

NOTIFICATION_TYPES = (
    "report_ready",
    "file_processed",
    "error_alert",
    "system_update",
    "collaboration_invite",
    "data_quality_issue",
    "scheduled_report",
)
# Types nobody can mute or digest: failures and outages must reach the person. The operator adds
# more with FINRT_CRITICAL_TYPES.
BUILT_IN_CRITICAL_TYPES = ("error_alert", "system_update")
