"""Storage engines (SQLite, PostgreSQL) behind one protocol, and the schema migrations."""

from tresen.storage.engine import Database, Txn, open_database

__all__ = ["Database", "Txn", "open_database"]
