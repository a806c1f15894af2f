"""database events: a file deleted from outside announces itself once, not its rows after it

Revision ID: 0015
Revises: 0014

``DELETE FROM files`` from psql cascades to the file's financial rows and parameters, whose
triggers then announced the rows as deleted (one ``financial_data_update`` per statement type,
a ``parameter_update`` per parameter, and a wake-up that queued a recalculation of a file that
no longer exists), all after the file's own ``file_deleted``: a page watching it refetched a
dashboard that was gone. The members' trigger already kept quiet when the file went; now the
financial rows' and the parameters' do the same: rows deleted with their file are covered by
its ``file_deleted``.
"""

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# The deleted rows a DELETE's summaries are made of, without those whose file went with them.
DELETED_ROWS = (
    "(SELECT file_id, statement, period FROM finrt_old) AS changed",
    "(SELECT o.file_id, o.statement, o.period FROM finrt_old AS o\n"
    "                WHERE EXISTS (SELECT 1 FROM files AS f WHERE f.id = o.file_id)) AS changed",
)
PARAMETER_DELETED = (
    "  IF TG_OP = 'DELETE' THEN\n    cur := OLD;",
    "  IF TG_OP = 'DELETE' THEN\n"
    "    IF NOT EXISTS (SELECT 1 FROM files WHERE id = OLD.file_id) THEN\n"
    "      RETURN NULL;  -- the file itself went (its file_deleted says so)\n"
    "    END IF;\n"
    "    cur := OLD;",
)


def _sibling(filename: str) -> ModuleType:
    """An earlier migration's module (its functions are what this one rewrites, and what the
    downgrade restores)."""
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(f"finrt_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parameter_function() -> str:
    functions: str = _sibling("0006_db_events.py").FUNCTIONS
    start = functions.index("CREATE OR REPLACE FUNCTION finrt_parameter_changed()")
    end = functions.index("END $$;", start) + len("END $$;")
    return functions[start:end] + "\n"


def _replaced(text: str, change: tuple[str, str], count: int) -> str:
    before, after = change
    if text.count(before) != count:
        raise RuntimeError(f"migration 0015: expected {count} of {before!r}")
    return text.replace(before, after)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    financial: str = _sibling("0013_one_file_summary_hashed.py")._functions()
    sql = _replaced(financial, DELETED_ROWS, 2) + "\n"
    sql += _replaced(_parameter_function(), PARAMETER_DELETED, 1)
    # Driver SQL: text() would take ":MI" in a format string for a bind parameter.
    op.get_bind().exec_driver_sql(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    financial: str = _sibling("0013_one_file_summary_hashed.py")._functions()
    op.get_bind().exec_driver_sql(financial + "\n" + _parameter_function())
