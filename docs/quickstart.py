"""continuum_py quickstart: a durable five-step order workflow on the embedded SQLite journal.

Run it, kill it with `kill -9` (or Ctrl-C) while it works, and run it again:
the run carries on from its last recorded step; finished steps do not run again.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from continuum_py import Context, Engine, RetryPolicy, StepInfo, step, workflow

# The engine is silent unless the application asks: show its run lifecycle
# (run.started, run.resumed, run.completed) on stderr, without its per-step debug lines.
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


@step(retry=RetryPolicy(max_attempts=3, initial_interval=0.5), timeout=30)
async def work(order_id: str, name: str, seconds: float) -> str:
    info = StepInfo.current()
    attempt = info.attempt if info else 1
    print(f"  step {name!r} running (attempt {attempt})...", flush=True)
    await asyncio.sleep(seconds)  # stands in for a real side effect: an API call, an email
    return f"{name} done for {order_id}"


@workflow
async def process_order(ctx: Context, order_id: str) -> list[str]:
    done = []
    for name in ("reserve stock", "charge card", "pack", "ship", "send receipt"):
        done.append(await work(order_id, name, 1.0))
    return done


async def main(run_id: str) -> None:
    # No URL: the default journal is sqlite:///continuum.db in the current folder.
    async with Engine() as engine:
        handle = await engine.start(process_order, "o-1", run_id=run_id)
        print(f"run {handle.run_id}: {(await handle.status()).value}", flush=True)
        result = await handle.result()
        print(f"run {handle.run_id} finished: {result}", flush=True)
        steps = [e for e in await engine.history(run_id) if type(e).__name__ == "StepCompleted"]
        print(f"history holds {len(steps)} completed steps", flush=True)


if __name__ == "__main__":
    run_id = sys.argv[1] if len(sys.argv) > 1 else "quickstart"
    try:
        asyncio.run(main(run_id))
    except KeyboardInterrupt:
        # The engine has recorded every finished step; nothing is lost.
        print(
            f"\ninterrupted: run {run_id} is recorded and resumes when you run this command again",
            file=sys.stderr,
        )
        sys.exit(130)
