"""The public API is exactly what __all__ lists, and importing it pulls in no driver."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import continuum_py

# Changing this list changes the public API: update CHANGELOG.md in the same change.
PUBLIC_API = [
    "BranchStatus",
    "ChildRunFailed",
    "CompensationOutcome",
    "ConfigurationError",
    "Context",
    "ContinuumError",
    "EncodingError",
    "Engine",
    "ExportCorrupt",
    "ExportTooNew",
    "ForkPointNotFound",
    "Interceptor",
    "JournalConflict",
    "JournalCorrupt",
    "JournalError",
    "JournalUnavailable",
    "LeaseLost",
    "MessagesPending",
    "NonDeterminismError",
    "Plan",
    "PlanError",
    "PlanFailed",
    "PlanState",
    "PlanTimedOut",
    "Queue",
    "QueuePlace",
    "QueueState",
    "Registry",
    "Retry",
    "RetryPolicy",
    "RunAlreadyExists",
    "RunAlreadyFinished",
    "RunCancelled",
    "RunFailed",
    "RunHandle",
    "RunIdTaken",
    "RunInFlight",
    "RunNotFound",
    "RunPage",
    "RunRecord",
    "RunStatus",
    "RunTimedOut",
    "ScheduleInfo",
    "ScheduleNotFound",
    "SchemaTooNew",
    "SignalTimeout",
    "StepError",
    "StepInfo",
    "StepStatus",
    "WorkflowNotRegistered",
    "__version__",
    "step",
    "step_connection",
    "workflow",
]


def test_all_matches_the_checked_in_list():
    assert sorted(continuum_py.__all__) == PUBLIC_API
    assert len(set(continuum_py.__all__)) == len(continuum_py.__all__)


def test_every_listed_name_exists_and_errors_share_one_base():
    for name in continuum_py.__all__:
        assert hasattr(continuum_py, name), name
    objects = [getattr(continuum_py, n) for n in PUBLIC_API]
    errors = [o for o in objects if isinstance(o, type) and issubclass(o, BaseException)]
    assert len(errors) == 30
    assert all(issubclass(e, continuum_py.ContinuumError) for e in errors)


def test_star_import_gives_exactly_the_public_names():
    namespace: dict[str, object] = {}
    exec("from continuum_py import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC_API


def test_import_leaves_database_drivers_unloaded():
    code = (
        "import json, sys, continuum_py; "
        "print(json.dumps(sorted(m for m in ('aiosqlite', 'asyncpg') if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_import_of_the_testing_tools_leaves_test_frameworks_unloaded():
    # pytest, pytest-asyncio and hypothesis are dev dependencies: only the
    # conformance suite (continuum_py.testing.conformance) may import them.
    code = (
        "import json, sys, continuum_py, continuum_py.testing; "
        "print(json.dumps(sorted(m for m in ('pytest', 'pytest_asyncio', 'hypothesis', "
        "'_pytest', 'aiosqlite', 'asyncpg') if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_the_conformance_suite_is_importable_from_the_package():
    conformance = importlib.import_module("continuum_py.testing.conformance")
    tests = [n for n in dir(conformance.JournalConformance) if n.startswith("test_")]
    assert len(tests) >= 50
    assert "make_journal" in vars(conformance.JournalCase)


def test_adapters_are_importable_under_the_package():
    memory = importlib.import_module("continuum_py.adapters.memory")
    sqlite = importlib.import_module("continuum_py.adapters.sqlite")
    assert memory.MemoryJournal.__name__ == "MemoryJournal"
    assert sqlite.SQLiteJournal.__name__ == "SQLiteJournal"
    assert isinstance(memory.MemoryJournal(), continuum_py.journal.Journal)
    assert isinstance(sqlite.SQLiteJournal(":memory:"), continuum_py.journal.Journal)
