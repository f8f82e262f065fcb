"""continuum_py: durable execution for asyncio.

Write a workflow as an ``async def``; its steps are recorded in a journal, and
a run carries on from its last recorded event after any crash or restart.
"""

from __future__ import annotations

from continuum_py._schedules import ScheduleInfo
from continuum_py.engine import Engine, RunHandle, RunPage, StepStatus
from continuum_py.errors import (
    ChildRunFailed,
    ConfigurationError,
    ContinuumError,
    EncodingError,
    ExportCorrupt,
    ExportTooNew,
    ForkPointNotFound,
    JournalConflict,
    JournalCorrupt,
    JournalError,
    JournalUnavailable,
    LeaseLost,
    MessagesPending,
    NonDeterminismError,
    PlanError,
    PlanFailed,
    PlanTimedOut,
    RunAlreadyExists,
    RunAlreadyFinished,
    RunCancelled,
    RunFailed,
    RunIdTaken,
    RunInFlight,
    RunNotFound,
    RunTimedOut,
    ScheduleNotFound,
    SchemaTooNew,
    SignalTimeout,
    StepError,
    WorkflowNotRegistered,
)
from continuum_py.events import CompensationOutcome
from continuum_py.interceptors import Interceptor
from continuum_py.journal import RunRecord, RunStatus
from continuum_py.plan import BranchStatus, Plan, PlanState, Retry
from continuum_py.queues import Queue, QueuePlace, QueueState
from continuum_py.workflow import (
    Context,
    Registry,
    RetryPolicy,
    StepInfo,
    step,
    step_connection,
    workflow,
)

__version__ = "0.1.0"

__all__ = [
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
