"""continuum_py: durable execution for asyncio.

Write a workflow as an ``async def``; its steps are recorded in a journal, and
a run carries on from its last recorded event after any crash or restart.
"""

from __future__ import annotations

from continuum_py.engine import Engine, RunHandle
from continuum_py.errors import (
    ConfigurationError,
    ContinuumError,
    EncodingError,
    JournalConflict,
    JournalCorrupt,
    JournalError,
    JournalUnavailable,
    LeaseLost,
    NonDeterminismError,
    RunAlreadyExists,
    RunCancelled,
    RunFailed,
    RunNotFound,
    SchemaTooNew,
    StepError,
    WorkflowNotRegistered,
)
from continuum_py.journal import RunRecord, RunStatus
from continuum_py.workflow import Context, Registry, RetryPolicy, StepInfo, step, workflow

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "Context",
    "ContinuumError",
    "EncodingError",
    "Engine",
    "JournalConflict",
    "JournalCorrupt",
    "JournalError",
    "JournalUnavailable",
    "LeaseLost",
    "NonDeterminismError",
    "Registry",
    "RetryPolicy",
    "RunAlreadyExists",
    "RunCancelled",
    "RunFailed",
    "RunHandle",
    "RunNotFound",
    "RunRecord",
    "RunStatus",
    "SchemaTooNew",
    "StepError",
    "StepInfo",
    "WorkflowNotRegistered",
    "__version__",
    "step",
    "workflow",
]
