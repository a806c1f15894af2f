"""Tables (SQLAlchemy 2.0 typed models), sessions and migrations."""

from models.base import Base
from models.db import engine_for, session_scope
from models.users import File, FileMember, User

__all__ = ["Base", "File", "FileMember", "User", "engine_for", "session_scope"]
