"""database events: a statement's rows of one file and statement type are summarised without a sort

Revision ID: 0013
Revises: 0012

PL/pgSQL keeps the plan of a trigger's statement for the session, and PostgreSQL plans it for
the size its transition table has at the first call. When a session's first statement on
financial rows touched no row or one (an admin's first fix in psql, an empty ``UPDATE``), the
plan sorted every row by file, statement type and period to group them, and every later
statement of the session sorted its rows too: measured (docs/performance.md, "Database events",
2026-12-04), a 500-row UPDATE in such a session took about 0.19 ms more server CPU than it
takes under this migration, and a re-import sorts all its rows (on disk past ``work_mem``).

Now the usual statement, whose rows are all of one file and one statement type, is written by an
``INSERT ... SELECT`` with no ``GROUP BY`` over the periods' counts and no ``ORDER BY``: the
periods are grouped by a hash whatever size the plan was made for, and its ``HAVING`` keeps the
summary only when the rows are of one file and one statement type. When it wrote nothing (rows
of several files or statement types, or none), migration 0012's statement writes the summaries
as before. The events are the same: the same outbox rows (one per file and statement type, in
(file, statement) order), payloads, tokens and ``{"recalc" : file}`` notifications.
"""

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# What migration 0012's summaries statement becomes when its rows are of one file and one
# statement type: a single aggregate (no grouping of its own, so no sort) over the periods'
# counts, kept only if the rows' file and statement type are each one value.
ONE_SUMMARY = (
    (
        "FROM (SELECT nextval('outbox_id_seq') AS id, file_id, statement, sum(n)::bigint AS n,",
        "FROM (SELECT nextval('outbox_id_seq') AS id, min(file_id) AS file_id,\n"
        "                 min(statement) AS statement, sum(n)::bigint AS n,",
    ),
    (
        "GROUP BY file_id, statement ORDER BY file_id, statement) AS summary",
        "HAVING min(file_id) = max(file_id) AND min(statement) = max(statement)) AS summary",
    ),
)


def _previous() -> ModuleType:
    """Migration 0012's module (its functions are what this one rewrites and the downgrade
    restores)."""
    path = Path(__file__).with_name("0012_lean_financial_summaries.py")
    spec = importlib.util.spec_from_file_location("finrt_migration_0012", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_summary(template: str) -> str:
    for before, after in ONE_SUMMARY:
        if before not in template:
            raise RuntimeError(f"migration 0013: {before!r} is not in 0012's statement")
        template = template.replace(before, after)
    return template


def _functions() -> str:
    previous = _previous()
    template: str = previous.SUMMARIES
    functions: str = previous._functions()
    earlier = previous._previous()  # migration 0011's module, which names the rows' queries
    for rows in (earlier.NEW_ROWS, earlier.OLD_ROWS):
        general = template.format(rows=rows).strip() + ";"
        if general not in functions:
            raise RuntimeError("migration 0013: a static summaries statement of 0012 is missing")
        first = _one_summary(template).format(rows=rows).strip() + ";"
        functions = functions.replace(
            general,
            f"{first}\n    GET DIAGNOSTICS written = ROW_COUNT;\n"
            f"    IF written = 0 THEN\n      {general}\n    END IF;",
        )
    # Both functions now read the row count of the first statement.
    declared = functions.replace(
        "RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN",
        "RETURNS trigger LANGUAGE plpgsql AS $$\nDECLARE\n  written bigint;\nBEGIN",
    )
    if declared.count("written bigint") != 2:
        raise RuntimeError("migration 0013: expected two functions to declare")
    return declared


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Driver SQL: text() would take ":MI" in a format string for a bind parameter.
    op.get_bind().exec_driver_sql(_functions())


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(_previous()._functions())
