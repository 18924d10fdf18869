"""The "horizon" group (tests/support.py, HORIZON_MODULES) holds what it must, and the run's
scheduler keeps it on one worker (tests/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import HorizonScheduling
from tests.support import HORIZON_MODULES

TESTS = Path(__file__).resolve().parent


def test_every_module_of_the_group_exists() -> None:
    assert {name for name in HORIZON_MODULES if not (TESTS / name).is_file()} == set()


def test_every_event_store_and_import_test_module_is_in_the_group() -> None:
    """A reader of events waits on any write transaction of the server, and an import is one
    long transaction: a new module of either kind outside the group can time a reader out."""
    members = {
        path.name
        for path in TESTS.glob("test_*.py")
        if path.name != Path(__file__).name
        and (
            "event_store_support" in path.read_text()
            or "event_store" in path.name
            or path.name.startswith("test_import_")
        )
    }
    assert members - HORIZON_MODULES == set()


def test_the_scheduler_groups_the_modules_and_spreads_the_rest() -> None:
    split = HorizonScheduling._split_scope
    sched = object.__new__(HorizonScheduling)  # _split_scope reads nothing of the instance
    assert split(sched, "tests/test_import_sqlite.py::test_a[x]") == "horizon"
    assert split(sched, "tests/test_event_store.py::test_b") == "horizon"
    assert split(sched, "tests/test_models.py::test_c") == "tests/test_models.py::test_c"
    assert split(sched, "tests/test_models.py::test_d@other") == "other"  # xdist's own marks


def test_the_options_name_no_dist_mode() -> None:
    """Any --dist in addopts disables pytest-benchmark in bench/, which shares them, even without
    -n; `-n 2` picks the grouping scheduler by itself (tests/conftest.py)."""
    pyproject = (TESTS.parent / "pyproject.toml").read_text()
    (addopts,) = re.findall(r'addopts = """(.*?)"""', pyproject, flags=re.S)
    assert "--dist" not in addopts and "-d " not in addopts
