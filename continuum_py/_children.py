"""A parent run's side of its child runs: creating them and cancelling them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from continuum_py._calls import ChildCall
from continuum_py._client import JournalClient, stored
from continuum_py._log import Logger
from continuum_py.errors import RunAlreadyFinished, RunNotFound
from continuum_py.events import RunStarted
from continuum_py.journal import Lease, NewRun


async def start_child(
    client: JournalClient,
    on_child: Callable[[Lease | None], None],
    parent_run_id: str,
    call: ChildCall,
    now: float,
    log: Logger,
) -> None:
    """Create the child run of ``call`` (idempotent: its id is fixed) once its ChildStarted is durable."""
    if call.future.done():
        return  # cancelled before it was created: nobody waits for it
    first = RunStarted(
        seq=1,
        at=now,
        run_id=call.child_run_id,
        workflow=call.workflow.name,
        args=call.encoded_args,
        parent_run_id=parent_run_id,
        parent_position=call.position,
    )
    _, lease, created = await client.start_run(
        NewRun(
            run_id=call.child_run_id,
            workflow=call.workflow.name,
            first_event=stored(call.child_run_id, first),
            parent_run_id=parent_run_id,
            parent_position=call.position,
        ),
    )
    # Not claimed here: a claim whose reply is lost to a cancelled driver
    # (the engine stopping) would hold the child until its lease expired.
    # The worker loop, woken now, claims it at once.
    if created:
        log.info("child.started", child_run_id=call.child_run_id, position=call.position)
    on_child(lease)


async def cancel_child(client: JournalClient, child_run_id: str) -> None:
    """Ask the child (or the run it continued as) to cancel; a finished one is left alone."""
    # Any other error stops the parent's driver before the parent can end, so
    # whoever resumes the parent sends the cancel again.
    with contextlib.suppress(RunAlreadyFinished, RunNotFound):
        await client.send_along_chain(child_run_id, "cancel", "", b"")
