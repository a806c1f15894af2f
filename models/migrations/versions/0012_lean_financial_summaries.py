"""database events: a financial summary's token comes from its row id, its payload by concatenation

Revision ID: 0012
Revises: 0011

The statement triggers of financial rows write one outbox row per file and statement type of a
SQL statement (migration 0011). Most of what that costs a small statement is fixed per
statement, not per row; measured (docs/performance.md, "Database events", 2026-12-04): a
single-row UPDATE of an amount took about 0.11 ms more server CPU with the triggers than
without, and ``gen_random_uuid()`` for the row's token (OpenSSL's random generator) was about
13 µs of it, ``jsonb_build_object`` and ``to_jsonb`` for a payload that is sent as text anyway a
few more.

Now the token is ``db-`` and the row's id (drawn from the outbox's own sequence in the same
statement: unique like the id, and never equal to an application token, which is 32 hex digits),
and the payload text is concatenated, its strings and the periods written by ``to_json`` (JSON
escaping included). The events are the same: one ``financial_data_update`` per file and
statement type per SQL statement, in (file, statement) order, with the same fields and values
(the keys in another order, which JSON does not fix; spaced as PostgreSQL prints JSON), the
moved rows' old places included, the same ``{"recalc" : file}`` notifications (the same text)
in the same order.
"""

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The summaries of the rows in ``{rows}`` (a query of file_id, statement, period), written to the
# outbox in (file, statement) order: ``nextval`` and ``pg_notify`` are volatile, so PostgreSQL
# evaluates them after the sort, one summary after another. ``attempts`` is 0; the CASE only
# carries the file's pg_notify (which returns void, never NULL), its text built as every other
# trigger builds it: PostgreSQL drops a notification that repeats one of the same transaction,
# so a file gets one wake-up however many of its tables changed.
SUMMARIES = """
    INSERT INTO outbox (id, token, channel, type, data, key, created_at, attempts)
    SELECT id, 'db-' || id, 'file:' || file_id, 'financial_data_update',
           '{{"file_id": ' || file_id || ', "statement_id": ' || to_json(statement)::text
           || ', "updated_at": "' || to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                             'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
           || '", "rows": ' || n || ', "periods": ' || to_json(periods[1:100])::text
           || ', "periods_total": ' || cardinality(periods) || ', "source": "database"}}',
           NULL, clock_timestamp(),
           CASE WHEN pg_notify('finrt_outbox', json_build_object('recalc', file_id)::text) IS NULL
                THEN 0 ELSE 0 END
    FROM (SELECT nextval('outbox_id_seq') AS id, file_id, statement, sum(n)::bigint AS n,
                 array_agg(period ORDER BY period) AS periods
          FROM (SELECT file_id, statement, period, count(*) AS n FROM ({rows}) AS changed
                GROUP BY file_id, statement, period) AS by_period
          GROUP BY file_id, statement ORDER BY file_id, statement) AS summary"""


def _previous() -> ModuleType:
    """Migration 0011's module (its statements are what the downgrade restores)."""
    path = Path(__file__).with_name("0011_summaries_in_one_insert.py")
    spec = importlib.util.spec_from_file_location("finrt_migration_0011", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _functions() -> str:
    previous = _previous()
    template: str = previous.SUMMARIES
    functions: str = previous.FUNCTIONS
    # 0011's functions, each of its summaries statements replaced by this one (static SQL and
    # the quoted copy for EXECUTE alike).
    for rows in (
        previous.NEW_ROWS,
        previous.OLD_ROWS,
        previous.NEW_AND_LEFT,
        previous.NEW_AND_MOVED,
    ):
        old, new = template.format(rows=rows).strip(), SUMMARIES.format(rows=rows).strip()
        for before, after in ((old, new), (old.replace("'", "''"), new.replace("'", "''"))):
            functions = functions.replace(before, after)
    if template.strip().splitlines()[0] in functions:
        raise RuntimeError("migration 0012: a summaries statement of 0011 was left unreplaced")
    return functions


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Driver SQL: text() would take ":MI" in a format string for a bind parameter.
    op.get_bind().exec_driver_sql(_functions())


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(_previous().FUNCTIONS)
