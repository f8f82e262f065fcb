"""Public errors: one base class, fields a caller can act on, messages that say what to do."""

from __future__ import annotations

import copy
import pickle

import pytest

import continuum_py
from continuum_py import (
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

EXAMPLES = [
    ConfigurationError("bad"),
    WorkflowNotRegistered("checkout", ["b", "a"]),
    EncodingError("charge", "Opaque", "detail"),
    RunNotFound("r1"),
    RunAlreadyExists("r1", "checkout", "refund"),
    LeaseLost("r1", 3, 4),
    JournalConflict("r1", 5, 7),
    MessagesPending("r1", 2),
    JournalCorrupt("r1", 9, "bad bytes"),
    JournalUnavailable("connection refused"),
    SchemaTooNew("r1", 9, 3, 1),
    NonDeterminismError("order-o-1", 7, "StepScheduled(charge)", "StepScheduled(refund)"),
    StepError("charge", 2, "app.Declined", "no funds", "Traceback ...", 3),
    RunFailed("r1", "app.Declined", "no funds", "Traceback ..."),
    RunCancelled("r1", "user asked"),
    RunAlreadyFinished("r1", "completed", "signal"),
    RunTimedOut("r1", "passed its deadline"),
    SignalTimeout("approve", 60.0),
    ChildRunFailed("p.1", "kid", "ValueError", "negative", "Traceback ..."),
    RunIdTaken("r1"),
    RunInFlight("r1", "running"),
    ForkPointNotFound("r1", "position 9", "it is beyond the history"),
    ExportCorrupt("it is cut short", "r1"),
    ExportTooNew("format", 2, 1),
    PlanError("plan 'p': cycle a -> b -> a"),
    PlanFailed("r1", "plan 'p' branch 'b' failed", rolled_back=["a"], skipped=["c"]),
    PlanTimedOut("r1", "plan 'p' passed its timeout of 60s", rolled_back=["a"]),
    ScheduleNotFound("nightly"),
]


def test_every_public_error_derives_from_continuum_error():
    public = [
        getattr(continuum_py, n)
        for n in continuum_py.__all__
        if isinstance(getattr(continuum_py, n), type)
        and issubclass(getattr(continuum_py, n), BaseException)
    ]
    assert public and all(issubclass(t, ContinuumError) for t in public)
    assert {type(e) for e in EXAMPLES} == set(public) - {ContinuumError, JournalError}


def test_journal_errors_share_a_base():
    for t in (LeaseLost, JournalConflict, JournalCorrupt, SchemaTooNew, MessagesPending):
        assert issubclass(t, JournalError)
    assert issubclass(SchemaTooNew, JournalCorrupt)


def test_non_determinism_error_names_run_position_history_and_code():
    err = NonDeterminismError("order-o-1", 7, "StepCompleted(charge)", "TimerStarted(3600s)")
    assert (err.run_id, err.position, err.recorded, err.requested) == (
        "order-o-1",
        7,
        "StepCompleted(charge)",
        "TimerStarted(3600s)",
    )
    assert str(err).startswith(
        "run order-o-1 position 7: history has StepCompleted(charge), "
        "code asked for TimerStarted(3600s)."
    )
    assert "parked" in str(err) and "deterministic" in str(err)


def test_lease_lost_and_conflict_carry_tokens_and_seqs():
    lost = LeaseLost("r1", 3, None)
    assert (lost.run_id, lost.token, lost.current_token) == ("r1", 3, None)
    assert "token 3 is stale" in str(lost) and "nothing was written" in str(lost)
    conflict = JournalConflict("r1", 5, 7)
    assert (conflict.expected_seq, conflict.actual_seq) == (5, 7)
    assert "seq 5" in str(conflict) and "7" in str(conflict)


@pytest.mark.parametrize(
    ("err", "where"),
    [
        (JournalCorrupt("r1", 9, "x"), "run 'r1' event seq 9 is unreadable: x"),
        (JournalCorrupt("r1", None, "x"), "run 'r1' snapshot is unreadable: x"),
        (JournalCorrupt(None, None, "x"), "journal is unreadable: x"),
    ],
)
def test_journal_corrupt_says_where(err, where):
    assert str(err) == where


def test_schema_too_new_says_to_upgrade():
    err = SchemaTooNew(None, None, 3, 1)
    assert (err.found, err.supported, err.run_id, err.seq) == (3, 1, None, None)
    assert "schema version 3" in str(err) and "reads up to 1" in str(err)
    assert "upgrade continuum-py" in str(err)


def test_step_error_and_run_failed_keep_the_original_error():
    err = StepError("charge", 2, "app.Declined", "no funds", "tb", 3)
    assert (err.step, err.position, err.error_type, err.message, err.attempts) == (
        "charge",
        2,
        "app.Declined",
        "no funds",
        3,
    )
    assert err.traceback_text == "tb"
    assert (
        str(err) == "step 'charge' (position 2) failed after 3 attempt(s): app.Declined: no funds"
    )
    failed = RunFailed("r1", "app.Declined", "no funds", "tb")
    assert str(failed) == "run r1 failed: app.Declined: no funds"
    assert failed.traceback_text == "tb"


def test_workflow_not_registered_lists_what_is_and_says_how_to_fix():
    err = WorkflowNotRegistered("checkout", ["b", "a"])
    assert err.name == "checkout"
    assert "registered: a, b" in str(err)
    assert "Import the module that defines it" in str(err)
    assert "registered:" not in str(WorkflowNotRegistered("checkout"))


def test_encoding_error_names_the_step_and_type():
    err = EncodingError("charge", "Opaque")
    assert (err.step, err.type_name) == ("charge", "Opaque")
    assert (err.owner, err.owner_kind) == ("charge", "step")
    assert "step 'charge': cannot encode a value of type 'Opaque'" in str(err)
    assert "value: cannot encode" in str(EncodingError(None, "Opaque"))


def test_run_already_exists_and_cancelled():
    err = RunAlreadyExists("r1", "checkout", "refund")
    assert (err.run_id, err.workflow, err.requested) == ("r1", "checkout", "refund")
    assert "Pick another run_id" in str(err)
    assert str(RunCancelled("r1")) == "run r1 was cancelled"
    assert str(RunCancelled("r1", "user asked")) == "run r1 was cancelled: user asked"


@pytest.mark.parametrize("err", EXAMPLES, ids=lambda e: type(e).__name__)
def test_errors_survive_pickling_and_copying_with_their_fields(err):
    # Errors cross process boundaries (process pools, multiprocessing logging).
    for back in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
        assert type(back) is type(err)
        assert str(back) == str(err)
        assert vars(back) == vars(err)


def test_recorded_error_type_names_are_the_strings_journals_hold():
    # Journals and golden histories store these names: a moved or renamed class
    # would otherwise change what old runs decode to without anyone noticing.
    from continuum_py.errors import error_type

    assert error_type(continuum_py.RunTimedOut) == "continuum_py.errors.RunTimedOut"
    assert error_type(continuum_py.JournalCorrupt) == "continuum_py.errors.JournalCorrupt"
    assert error_type(ValueError) == "ValueError"
    assert continuum_py.RunTimedOut("r").error_type == "continuum_py.errors.RunTimedOut"
