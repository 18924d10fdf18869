"""Throwaway databases on the test server, for the tests and the benchmarks."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parents[1]


def admin_url() -> str:
    """``TEST_DATABASE_URL``, else the embedded server's maintenance database."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    from persistence.embedded import EmbeddedServer

    data_dir = os.environ.get("PERSISTENCE_EMBEDDED_DIR") or ROOT / ".postgres-data" / "embedded"
    return EmbeddedServer(data_dir).start().admin_url


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    return make_conninfo(url, dbname=name)


def create_database(admin: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
