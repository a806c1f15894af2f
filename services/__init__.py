"""Application services: plain functions over a database session, no HTTP inside.

Each change is stored and its events enqueued in the same transaction (the outbox), so they
reach Redis only after the commit.
"""
