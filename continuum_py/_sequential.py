"""The sequential fast path: a workflow that awaits one step at a time.

While the workflow awaits a lone plain step and nothing else can move it on
(no timer, retry or deadline on the agenda, no signal wait or child run, no
other step in flight or queued, no interceptor, no message arrived), a step
costs: run its body, record its completion (the workflow sees the result and
asks for its next step), record that step's ``StepScheduled``, and append both
in one write. :func:`run_alone` does exactly that in a loop, from the driver's
task, without a turn of the runner's general machinery per step.

It writes the same events, in the same appends, as the general path
(``RunDriver._record_turn`` then ``RunDriver._run_steps``) would at the same
points: ``tests/test_sequential_fast_path.py`` runs random mixes of lone and
gathered steps, failures and retries both ways and compares the histories and
the appends. Anything else hands the run back to the general path, in the state
that path would have left it in: a step that failed, a message or a stop (the
poke), a workflow that returned or asked for anything but one plain step (a
timer, a signal wait, a child, gathered steps, a step with a compensation or a
transaction, arguments that cannot be encoded).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from continuum_py import _codec
from continuum_py._calls import StepCall
from continuum_py._steps import Outcome
from continuum_py.errors import EncodingError
from continuum_py.journal import AppendBatch

if TYPE_CHECKING:
    from continuum_py._replay import ReplayCore
    from continuum_py._runner import RunDriver

YIELD_EVERY = 64
"""Steps written in line (no wait) between two turns given to the event loop."""

ENABLED = True
"""Whether a lone step run in the driver's task goes on to the lone steps after it.

Tests turn it off to compare with the general path: each step then takes a
turn of it, as before this module (the lone step itself still runs in the
driver's task, see :func:`alone`).
"""


def alone(d: RunDriver, core: ReplayCore, call: StepCall) -> bool:
    """Whether ``call``, just scheduled, is all the run waits on: it runs in the driver's task.

    Not while a signal or a child's outcome could win a race with it: a message
    must reach the workflow while the step runs.
    """
    return (
        not call.step.transactional
        and not d._tasks
        and not d._tx_queue
        and d.agenda.empty
        and not d._poke.is_set()
        and not core.awaits_messages()
    )


def _may_go_on(d: RunDriver, core: ReplayCore, call: StepCall) -> bool:
    """Whether the loop may record ``call``'s completion and schedule lone steps after it.

    Checked once: only the general path adds tasks, queued transactions,
    children, retries or agenda entries, interceptors are the engine's, and a
    signal wait or a child made by the code would be a second new call.
    """
    return (
        ENABLED
        and _plain(call)
        and not d._reattempt
        and not d._children
        and not d.cfg.interceptors
        and not core.has_children
    )


def _plain(call: StepCall) -> bool:
    step = call.step
    return not (
        call.kwargs or call.compensates is not None or step.compensate or step.transactional
    )


def _next_step(core: ReplayCore) -> StepCall | None:
    """The workflow's one new call, if it is a plain step the fast path may schedule."""
    new = core._unrecorded  # the calls history does not hold yet (new_calls(), without a list)
    if len(new) != 1 or core.finished:
        return None
    (call,) = new.values()
    if call.__class__ is not StepCall or call.future.done():  # not a step, or abandoned
        return None
    assert isinstance(call, StepCall)
    if not _plain(call):
        return None
    if call.encoded_args is None:
        try:
            call.encoded_args = _codec.encode_args(call.args, what=call.step.name)
        except EncodingError:
            return None  # the general path records the failure
    return call


async def run_alone(
    d: RunDriver, core: ReplayCore, call: StepCall, attempt: int
) -> list[Outcome] | None:
    """Run ``call`` (its ``StepScheduled`` durable), then the lone plain steps that follow it.

    Returns what :meth:`RunDriver._run_steps` would: the outcomes the general
    path still has to record (none if the last one was recorded here), or None
    if the run suspended.
    """
    rec = d.rec
    assert rec is not None
    assert d._tx is None
    events, rows, unsaved = rec.events, rec.rows, d._unsaved
    steps, poke, client = d.steps, d._poke, d.cfg.client
    every = d.cfg.snapshot_every
    go_on = _may_go_on(d, core, call)
    done = 0
    while True:
        out = await steps.run_inline(call, attempt)
        if not go_on or not out.ok or poke.is_set():
            return [out]
        # RunDriver._step_ended, for a step that returned: the workflow sees the
        # result and goes on, to its next call or its end.
        unsaved.append(out)
        if d._debug():
            d.log_completed(out)
        assert out.decoded is not None
        rec.step_completed_alone(call, attempt, out.value, out.decoded[0])
        nxt = _next_step(core)
        if nxt is None:
            return []  # the general path records what the workflow asked for
        call, attempt = nxt, nxt.attempt + 1
        rec.step_scheduled_alone(call, attempt)
        # RunDriver._record_turn's append, of [StepCompleted, StepScheduled].
        snapshot = None
        if every > 0 and rec.durable_seq + len(events) - d._snap_seq >= every:
            snapshot = d._maybe_snapshot(core)
        batch = AppendBatch(
            lease=d.lease,
            expected_seq=rec.durable_seq,
            events=[*rows],
            snapshot=snapshot,
            inbox_seen=core.inbox_seen,
        )
        d.letting_go = False
        if not client.append_at_once(batch):
            await client.append(batch)
        else:
            done += 1
            if done % YIELD_EVERY == 0:
                # A journal written in line (memory://) never waits: let other runs,
                # the heartbeat and messages in now and then.
                await asyncio.sleep(0)
        rec.durable_seq += len(rows)
        events.clear()
        rows.clear()
        unsaved.clear()
        if poke.is_set():
            # A message came during the write: this step starts the general way.
            d._to_start = [(call, attempt)]
            return await d._run_steps(core)
