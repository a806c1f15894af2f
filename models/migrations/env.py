from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from models import Base
from models.db import make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            _sqlite_foreign_keys(connection, on=False)
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=sqlite
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                _sqlite_check_foreign_keys(connection)
        if sqlite:
            _sqlite_foreign_keys(connection, on=True)
    engine.dispose()


def _sqlite_foreign_keys(connection: Connection, *, on: bool) -> None:
    """SQLite rebuilds a table to change it (batch mode): a new table, the rows copied, the old
    one dropped. With foreign keys on, dropping a table deletes its rows first, and ``ON DELETE
    CASCADE`` would take every row that refers to them along. SQLite's own procedure for
    changing a table: foreign keys off (outside any transaction, hence on the driver's
    connection before SQLAlchemy begins one), checked before the commit, on again after."""
    dbapi = connection.connection.dbapi_connection
    assert dbapi is not None
    dbapi.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def _sqlite_check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"the migration left rows that refer to nothing: {broken[:5]}")


run_migrations()
