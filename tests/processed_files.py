"""Files processed without a Celery worker, for tests whose subject is what comes after."""

from __future__ import annotations

import uuid


def processed_file(owner: str, csv: bytes) -> int:
    """A file uploaded by ``owner`` and processed by the very function the Celery task runs."""
    from models import session_scope
    from services.files import create_upload
    from tests.conftest import DATABASE_URL
    from workers.processing import process_upload

    job_id = uuid.uuid4().hex
    with session_scope(DATABASE_URL) as session:
        file_id = create_upload(session, owner, "figures.csv", csv, job_id).id
    outcome = process_upload(
        DATABASE_URL, file_id, job_id, max_bytes=10 * 1024 * 1024, max_rows=100_000
    )
    assert outcome.status == "processed", outcome
    return file_id
