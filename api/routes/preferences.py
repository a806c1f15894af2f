"""``GET/PUT /notifications/preferences``: which types reach the caller's inbox and pop up.

A PUT names only the types it changes; turning a critical type off is a 422 that says why, and
nothing is stored. Each change is a ``preferences_updated`` event on ``user:{id}``, so every
open tab follows at once.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from api.deps import CurrentUser, SessionDep
from api.errors import UNPARSABLE_BODY
from services import preferences as prefs


class TypePreference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inbox: StrictBool = Field(description="kept in the inbox and delivered live")
    toast: StrictBool = Field(description="pops up when it arrives (only if it reaches the inbox)")
    critical: StrictBool | None = Field(
        None,
        description="read-only: critical types (operator's setting) cannot be turned off; "
        "a PUT may repeat the value it read",
    )


class Preferences(BaseModel):
    model_config = ConfigDict(extra="forbid")
    types: dict[str, TypePreference] = Field(
        description="by notification type; a PUT changes only the types it names",
        examples=[{"report_ready": {"inbox": True, "toast": False, "critical": False}}],
    )


_CRITICAL: dict[int | str, dict[str, Any]] = {
    **UNPARSABLE_BODY,
    422: {"description": "an unknown type, or a critical type turned off (the detail says why)"},
}

router = APIRouter(prefix="/api/v1", tags=["notifications"])


@router.get("/notifications/preferences", response_model=Preferences)
def get_preferences(principal: CurrentUser, session: SessionDep) -> Preferences:
    """The caller's choices for every notification type (all on unless changed)."""
    return Preferences.model_validate(prefs.preferences(session, principal.user_id))


@router.put("/notifications/preferences", response_model=Preferences, responses=_CRITICAL)
def put_preferences(body: Preferences, principal: CurrentUser, session: SessionDep) -> Preferences:
    """Change the named types; answers with every type's choice after the change."""
    changes = {type: choice.model_dump(exclude_none=True) for type, choice in body.types.items()}
    try:
        result = prefs.update_preferences(session, principal.user_id, changes)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    session.commit()
    return Preferences.model_validate(result)
