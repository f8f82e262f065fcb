"""Runs one step attempt and says how it ended: no journal writes, no replay.

A plain step runs its body under its timeout and has its result encoded (and
decoded again, so a value that would not replay fails now). A transactional
step runs inside a journal transaction that stays open after the body: the
runner appends the step's completion in it, so the step's own SQL commits
with that record or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import msgspec

from continuum_py import _codec
from continuum_py._calls import StepCall
from continuum_py.errors import ConfigurationError, EncodingError, JournalError
from continuum_py.interceptors import Interceptor
from continuum_py.journal import AppendBatch, Journal, JournalTransaction, TransactionalJournal
from continuum_py.workflow import CURRENT_STEP, StepDef, StepInfo, in_transaction

_DECODERS: dict[StepDef[Any, Any], Callable[[msgspec.Raw], Any]] = {}
"""Each step's result decoder, looked up once per step, not per attempt (bounded: cleared when full)."""


def _decoder(step: StepDef[Any, Any]) -> Callable[[msgspec.Raw], Any]:
    if len(_DECODERS) >= 1024:
        _DECODERS.clear()
    decode = _DECODERS[step] = _codec.value_decoder(step.return_type)
    return decode


class OpenTransaction:
    """A transactional step's journal transaction, open until its completion is written."""

    def __init__(self, stack: contextlib.AsyncExitStack, tx: JournalTransaction) -> None:
        self._stack = stack
        self._tx = tx

    async def append(self, batch: AppendBatch) -> JournalError | None:
        """Write ``batch`` (the step's completion) inside the transaction."""
        return await self._tx.append(batch)

    async def commit(self) -> None:
        """End the transaction: it commits, unless an append in it was refused."""
        await self._stack.aclose()

    async def rollback(self, exc: BaseException) -> None:
        """End the transaction with nothing of it kept."""
        await self._stack.__aexit__(type(exc), exc, exc.__traceback__)


class Outcome(msgspec.Struct):
    """How one attempt of a step ended.

    A ``msgspec.Struct`` for its constructor, made in C: one per step.
    """

    call: StepCall
    attempt: int
    ok: bool
    value: Any
    """The encoded result (``msgspec.Raw``) when ``ok``, else the exception."""
    retryable: bool = True
    tx: OpenTransaction | None = None
    """A transactional step's open transaction: its completion commits in it."""
    decoded: tuple[Any] | None = None
    """``(value,)``: the encoded result decoded again (what replay will give)."""


async def _attempt(call: StepCall) -> Any:
    """The step body under its timeout: its value, or what it raised."""
    step = call.step
    if step.timeout is None:
        return await step.fn(*call.args, **call.kwargs)
    cm = asyncio.timeout(step.timeout)
    try:
        async with cm:
            value = await step.fn(*call.args, **call.kwargs)
    except TimeoutError as exc:
        if not cm.expired():
            raise  # a TimeoutError the body raised itself is recorded as it is
        raise _timed_out(call) from exc
    if cm.expired():
        # The body swallowed the cancellation at its deadline and returned: a
        # timed-out attempt failed, whatever it returned.
        raise _timed_out(call)
    return value


def _timed_out(call: StepCall) -> TimeoutError:
    step = call.step
    return TimeoutError(f"step {step.name!r} took longer than its timeout of {step.timeout}s")


def cancelled(call: StepCall) -> asyncio.CancelledError:
    """The error recorded for a step cancelled with its run."""
    return asyncio.CancelledError(f"step {call.step.name!r} was cancelled with its run")


class StepExecutor:
    """Runs the step attempts of one run.

    Args:
        run_id: the run.
        journal: its journal, for transactional steps.
    """

    def __init__(
        self, run_id: str, journal: Journal, interceptors: Sequence[Interceptor] = ()
    ) -> None:
        self.run_id = run_id
        self._journal = journal
        self._interceptors = interceptors
        self._inline: asyncio.Task[Any] | None = None
        self._interrupted = False
        self._driver: asyncio.Task[Any] | None = None

    @property
    def running_inline(self) -> bool:
        """Whether a step runs now in the caller's own task (see :meth:`run_inline`)."""
        return self._inline is not None

    def interrupt(self) -> None:
        """Cancel the step running inline now (a cancellation reached its run)."""
        if self._inline is not None and not self._interrupted:
            self._interrupted = True
            self._inline.cancel()

    async def run_inline(self, call: StepCall, attempt: int) -> Outcome:
        """Run a step in the caller's task, interruptible by :meth:`interrupt`.

        The interruption is a cancellation of the caller's task that this
        method takes back (``uncancel``), as ``asyncio.timeout`` does, without
        a timeout's handle per step; a cancellation from elsewhere propagates.
        """
        task = self._driver
        if task is None:
            # Always the run's driver task (a run's executor lives in one pass of it).
            task = self._driver = asyncio.current_task()
            assert task is not None
        before = task.cancelling()
        self._inline, self._interrupted = task, False
        try:
            # run(), in line: a plain step's body without a frame to choose it.
            if call.step.transactional:
                out = await self._run_in_transaction(call, attempt)
            else:
                out = await self._run_body(call, attempt)
        except asyncio.CancelledError:
            if self._interrupted and task.uncancel() <= before:
                return Outcome(call, attempt, False, cancelled(call), retryable=False)
            raise
        finally:
            self._inline = None
        if self._interrupted:
            # The body swallowed the interruption and returned: take it back.
            task.uncancel()
        return out

    def run(self, call: StepCall, attempt: int) -> Coroutine[Any, Any, Outcome]:
        """Run one attempt of ``call``'s step (the coroutine that does: no frame of its own)."""
        if call.step.transactional:
            return self._run_in_transaction(call, attempt)
        return self._run_body(call, attempt)

    async def _run_in_transaction(self, call: StepCall, attempt: int) -> Outcome:
        journal = self._journal
        if not isinstance(journal, TransactionalJournal):
            return self._refuse(call, attempt, "has no transactions")
        stack = contextlib.AsyncExitStack()
        tx = await stack.enter_async_context(journal.transaction())
        if tx.connection is None:
            # The memory journal has transactions (for its batches) but no
            # database to lend the step: refuse rather than run it without one.
            await stack.aclose()
            return self._refuse(call, attempt, "has no database connection for it")
        open_tx = OpenTransaction(stack, tx)
        try:
            with in_transaction(tx):
                out = await self._run_body(call, attempt)
        except BaseException as exc:
            await open_tx.rollback(exc)
            raise
        refusal = getattr(tx.connection, "refusal", None)
        if refusal is not None:
            # Its SQL tried to end the transaction: fail the step even if it caught
            # the refusal, and never retry (the same SQL would be refused again).
            out = Outcome(call, attempt, False, refusal, retryable=False)
        if not out.ok:
            # The step's own writes go with its failure: nothing of it commits.
            await open_tx.rollback(RuntimeError("step failed"))
            return out
        out.tx = open_tx
        return out

    def _refuse(self, call: StepCall, attempt: int, why: str) -> Outcome:
        err = ConfigurationError(
            f"step {call.step.name!r} is transactional, but {type(self._journal).__name__} "
            f"{why}; use the SQLite or Postgres journal"
        )
        return Outcome(call, attempt, False, err, retryable=False)

    async def _run_body(self, call: StepCall, attempt: int) -> Outcome:
        step = call.step
        key = (self.run_id, call.position, attempt, step.name)
        token = CURRENT_STEP.set(key)
        try:
            if self._interceptors:
                info = StepInfo.current()
                assert info is not None
                value = await self._intercepted(info, functools.partial(_attempt, call))
            elif step.timeout is None:
                value = await step.fn(*call.args, **call.kwargs)
            else:
                value = await _attempt(call)
        except Exception as exc:
            return Outcome(call, attempt, False, exc)
        finally:
            CURRENT_STEP.reset(token)
        try:
            raw = _codec.encode_value(value, what=step.name)
            # Decode now, so a result that would not replay fails at record time;
            # the workflow gets this decoded copy, as a replay would give it.
            decode = _DECODERS.get(step) or _decoder(step)
            return Outcome(call, attempt, True, raw, decoded=(decode(raw),))
        except EncodingError as exc:
            return Outcome(call, attempt, False, exc, retryable=False)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            enc = EncodingError(
                step.name,
                _codec.type_name(value),
                f"does not match the return annotation: {exc}",
            )
            return Outcome(call, attempt, False, enc, retryable=False)

    def _intercepted(self, info: StepInfo, attempt: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        # The first interceptor given is the outermost.
        for interceptor in reversed(self._interceptors):
            attempt = functools.partial(interceptor.step, info, attempt)
        return attempt()
