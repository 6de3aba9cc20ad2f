"""The store: the only place that speaks SQL (registry, messages, rejections, routes, outbox, tokens, audit).

One interface (store.base.Store), two backends: SQLite (store.sqlite, the embedded default) and
PostgreSQL (store.postgres, for agents that scale out), chosen by the config's [store] url.
"""

from __future__ import annotations

from pathlib import Path

from host_agent.store.base import Store

__all__ = ["Store", "open_store"]


def open_store(path: Path, url: str | None = None, max_page_count: int | None = None) -> Store:
    """The store the config names: PostgreSQL at `url` when given, else the SQLite file at `path`."""
    if url:
        from host_agent.store.postgres import PostgresStore  # psycopg only when asked for

        return PostgresStore(url)
    from host_agent.store.sqlite import SQLiteStore

    return SQLiteStore(path, max_page_count)
