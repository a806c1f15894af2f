"""Migrations keep what is there: a SQLite table rebuilt by a migration loses no row that
refers to it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from models.migrate import upgrade


def test_rebuilding_files_on_sqlite_keeps_every_row_that_refers_to_a_file(tmp_path: Path):
    path = tmp_path / "old.db"
    upgrade(f"sqlite:///{path}", "0017")
    day = "2026-01-01 00:00:00"
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO users (id, created_at) VALUES ('ann', ?), ('bob', ?)", (day, day))
        for file_id in (1, 2):
            db.execute(
                "INSERT INTO files (id, owner_id, name, status, rows_total, rows_ok, rows_bad,"
                " created_at, updated_at) VALUES (?, 'ann', 'q.csv', 'processed', 1, 1, 0, ?, ?)",
                (file_id, day, day),
            )
        db.execute("INSERT INTO file_members VALUES (1, 'bob', 'viewer', ?)", (day,))
        db.execute(
            "INSERT INTO file_parameters (file_id, name, value, updated_by, updated_at)"
            " VALUES (1, 'tax_rate', '0.3', 'ann', ?)",
            (day,),
        )
    upgrade(f"sqlite:///{path}")  # 0018 rebuilds files (AUTOINCREMENT)

    with sqlite3.connect(path) as db:
        db.execute("PRAGMA foreign_keys=ON")
        assert db.execute("SELECT file_id, user_id FROM file_members").fetchall() == [(1, "bob")]
        assert db.execute("SELECT file_id, name FROM file_parameters").fetchall() == [
            (1, "tax_rate")
        ]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        # The newest file deleted: its id is not handed out again.
        db.execute("DELETE FROM files WHERE id = 2")
        db.execute(
            "INSERT INTO files (owner_id, name, status, rows_total, rows_ok, rows_bad,"
            " created_at, updated_at) VALUES ('bob', 'r.csv', 'queued', 0, 0, 0, ?, ?)",
            (day, day),
        )
        assert db.execute("SELECT max(id) FROM files").fetchone() == (3,)
        # The member of file 1 was still removed with it afterwards: foreign keys are whole.
        db.execute("DELETE FROM files WHERE id = 1")
        assert db.execute("SELECT count(*) FROM file_members").fetchone() == (0,)
