"""Application services: plain functions over a database session, no HTTP inside.

Each change is stored and its events enqueued in the same transaction (the outbox), so they
reach Redis only after the commit.
"""

# The database-events hooks of the inbox and the files (registered on import).
from services import announce_changes as announce_changes
