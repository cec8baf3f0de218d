"""Errors of the database layer. None of them carries SQL text or parameters, only what went wrong."""

from __future__ import annotations


class DatabaseError(Exception):
    """A database operation failed (the server answered with an error, or gave bad data)."""


class DatabaseUnavailable(DatabaseError):
    """The server cannot be reached, refused the login, or does not have the database.

    Raised at once (without touching the network) while the database is known to be down;
    one request per retry interval probes it, so service resumes by itself when it is back.
    """


class DatabaseTimeout(DatabaseUnavailable):
    """A query (including waiting for a connection) took longer than the query timeout."""
