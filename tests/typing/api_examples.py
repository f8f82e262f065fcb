"""DESIGN.md's checkout example, written as a user would; CI runs mypy --strict on it."""

from __future__ import annotations

import asyncio
from typing import Any

from continuum_py import (
    Context,
    Engine,
    ExportCorrupt,
    Plan,
    PlanFailed,
    PlanState,
    Retry,
    RetryPolicy,
    RunFailed,
    RunHandle,
    RunIdTaken,
    RunRecord,
    StepInfo,
    step,
    workflow,
)


@step(retry=RetryPolicy(max_attempts=5, initial_interval=0.2, backoff=2.0), timeout=30)
async def charge(order_id: str, cents: int) -> str:
    info = StepInfo.current()
    key = info.idempotency_key if info else "local"
    return f"receipt-{order_id}-{cents}-{key}"


@workflow
async def checkout(ctx: Context, order_id: str, cents: int) -> dict[str, str]:
    receipt: str = await charge(order_id, cents)
    a, b = await asyncio.gather(charge(order_id, 1), charge(order_id, 2))
    ctx.logger.info("charged", receipt=receipt)
    return {"receipt": receipt, "a": a, "b": b}


async def main() -> None:
    async with Engine("sqlite:///runs.db") as engine:
        handle: RunHandle[dict[str, str]] = await engine.start(
            checkout, "o-1", 500, run_id="order-o-1"
        )
        try:
            result: dict[str, str] = await handle.result(timeout=60)
        except RunFailed as exc:
            print(exc.error_type, exc.message)
        else:
            print(result["receipt"])


async def debug_a_failed_run() -> None:
    # Fork a failed run from its failed step after a fix, and take a run to another journal.
    async with Engine("sqlite:///runs.db") as engine:
        fork: RunHandle[Any] = await engine.fork("order-o-1", failed=True)
        forks: list[RunRecord] = await engine.forks("order-o-1")
        print(fork.run_id, (await fork.record()).forked_from, [r.run_id for r in forks])
        data: bytes = await engine.export_run("order-o-1", children=True)
    async with Engine("sqlite:///laptop.db") as laptop:
        try:
            imported: list[str] = await laptop.import_run(data)
        except (ExportCorrupt, RunIdTaken) as exc:
            print(exc)
        else:
            print(imported)


# ---- a plan, as DESIGN.md writes it ----


async def create_network(state: PlanState) -> str:
    state["cidr"] = "10.0.0.0/16"
    return f"net-{state.input[0]}"


async def delete_network(state: PlanState) -> None:
    return None


async def deploy(state: PlanState) -> str:
    return f"app on {state.results['network']}"


def retry_later(state: PlanState, exc: Exception, attempt: int) -> Retry | None:
    return Retry(after=30) if attempt < 3 else None


plan = Plan("provision", continue_on_error=False, timeout=600)
plan.add("network", create_network, rollback=delete_network)
plan.add("app", deploy, after=["network"], retry=RetryPolicy(max_attempts=3), on_error=retry_later)
plan.pause("network", 60)


async def provision() -> None:
    async with Engine("sqlite:///runs.db") as engine:
        handle = await engine.start(plan, "eu-1")
        try:
            applied: dict[str, object] = await handle.result()
            print(applied)
        except PlanFailed as exc:
            print(exc.failures, exc.rolled_back, exc.rollback_errors, exc.skipped)
        for branch in await handle.branches():
            print(branch.branch, branch.status, branch.attempts)
