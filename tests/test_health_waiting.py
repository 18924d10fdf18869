"""The health report counts the requests waiting for a connection now, not those that gave up."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from persistence.errors import DatabaseUnavailable
from tests.support import every_connection_busy


def test_a_waiter_that_gave_up_is_not_reported_waiting(
    open_database: Callable[..., Any], database_url: str
) -> None:
    with (
        open_database(database_url, min_size=1, max_size=1, acquire_timeout=0.3) as db,
        every_connection_busy(db),
    ):
        with pytest.raises(DatabaseUnavailable, match="no database connection became free"):
            db.ping()  # queues for the only connection, held elsewhere, and gives up
        report = db.health_check(timeout=2)
        assert report.status == "degraded"
        assert report.pool["waiting"] == 0
        assert report.error is not None and "0 requests waiting" in report.error


def test_a_request_still_waiting_is_reported(
    open_database: Callable[..., Any], database_url: str
) -> None:
    """The count is not simply 0: a waiter that is still queued counts."""
    with (
        open_database(database_url, min_size=1, max_size=1, acquire_timeout=3) as db,
        every_connection_busy(db),
    ):
        failed: list[BaseException] = []

        def wait_for_a_connection() -> None:
            try:
                db.ping()
            except DatabaseUnavailable as exc:
                failed.append(exc)

        waiter = threading.Thread(target=wait_for_a_connection)
        waiter.start()
        for _ in range(100):
            report = db.health_check(timeout=2)
            if report.pool["waiting"]:
                break
            threading.Event().wait(0.02)
        assert report.pool["waiting"] == 1
        assert report.error is not None and "1 requests waiting" in report.error
    waiter.join()  # the connection was freed: it got it
    assert failed == []
