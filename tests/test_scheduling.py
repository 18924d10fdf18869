"""The "horizon" group (tests/support.py, HORIZON_MODULES) holds what it must, and the run's
scheduler keeps it on one worker (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import HorizonScheduling
from tests.support import HORIZON_MODULES

TESTS = Path(__file__).resolve().parent


def test_every_module_of_the_group_exists() -> None:
    assert {name for name in HORIZON_MODULES if not (TESTS / name).is_file()} == set()


def test_every_event_store_test_module_is_in_the_group() -> None:
    """A reader of events waits on any write transaction of the server: a new module of the
    event store's tests that is not in the group can time out beside an import."""
    readers = {
        path.name
        for path in TESTS.glob("test_*.py")
        if path.name != Path(__file__).name
        and ("event_store_support" in path.read_text() or "event_store" in path.name)
    }
    assert readers - HORIZON_MODULES == set()


def test_the_scheduler_groups_the_modules_and_spreads_the_rest() -> None:
    split = HorizonScheduling._split_scope
    sched = object.__new__(HorizonScheduling)  # _split_scope reads nothing of the instance
    assert split(sched, "tests/test_import_sqlite.py::test_a[x]") == "horizon"
    assert split(sched, "tests/test_event_store.py::test_b") == "horizon"
    assert split(sched, "tests/test_models.py::test_c") == "tests/test_models.py::test_c"
    assert split(sched, "tests/test_models.py::test_d@other") == "other"  # xdist's own marks
