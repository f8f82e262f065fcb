"""The workflows the golden histories in ``histories/`` were recorded from.

The goldens stand for runs in flight when a new version of this library (or of
this code) is deployed: every one must still replay with no
``NonDeterminismError``. A change here that alters which steps a workflow
calls, in what order or with what arguments, is exactly what they catch. If
the change is deliberate, keep the old golden alongside a new one, since runs
of the old shape may still be in flight; regenerate with ``make_golden.py``
only for new histories.

Step bodies are deterministic so ``make_golden.py`` writes the same files each
time; replaying never runs them.
"""

from __future__ import annotations

import asyncio

from continuum_py import Context, Registry, RetryPolicy, StepError, StepInfo, step, workflow

registry = Registry()

NO_WAIT = RetryPolicy(max_attempts=3, initial_interval=0.01, backoff=2.0, jitter=0)


class CardDeclined(Exception):
    """The card was refused."""


# ---- sequential: three steps, each using the last one's result ----


@step(name="reserve")
async def reserve(order_id: str) -> str:
    return f"res-{order_id}"


@step(name="charge")
async def charge(order_id: str, cents: int) -> str:
    return f"rcpt-{order_id}-{cents}"


@step(name="ship")
async def ship(reservation: str, receipt: str) -> dict[str, str]:
    return {"reservation": reservation, "receipt": receipt, "tracking": f"trk-{reservation}"}


@workflow(name="order", registry=registry)
async def order(ctx: Context, order_id: str, cents: int) -> dict[str, str]:
    reservation = await reserve(order_id)
    receipt = await charge(order_id, cents)
    return await ship(reservation, receipt)


# ---- gather: steps finish in the reverse of call order ----


@step(name="price")
async def price(item: str, rank: int) -> int:
    await asyncio.sleep(0.02 * rank)  # the last called finishes first
    return 100 * len(item)


@step(name="total")
async def total(prices: list[int]) -> int:
    return sum(prices)


@workflow(name="basket", registry=registry)
async def basket(ctx: Context, items: list[str]) -> dict[str, object]:
    n = len(items)
    prices = await asyncio.gather(*(price(item, n - i) for i, item in enumerate(items)))
    return {"prices": list(prices), "total": await total(list(prices))}


# ---- positions that depend on which step finished first ----


@step(name="fetch")
async def fetch(key: str, delay: float) -> str:
    await asyncio.sleep(delay)
    return key


@step(name="enrich")
async def enrich(value: str) -> str:
    return value.upper()


@workflow(name="two_chains", registry=registry)
async def two_chains(ctx: Context) -> list[str]:
    # "b" finishes first live, so its follower takes position 3 and "a"'s takes 4.
    async def chain(key: str, delay: float) -> str:
        return await enrich(await fetch(key, delay))

    return list(await asyncio.gather(chain("a", 0.05), chain("b", 0.0)))


# ---- a retried step that succeeds on its third attempt ----


@step(name="quote", retry=NO_WAIT)
async def quote(sku: str) -> int:
    info = StepInfo.current()
    attempt = info.attempt if info else 1
    if attempt < 3:
        raise TimeoutError(f"pricing service busy (attempt {attempt})")
    return 4200


@workflow(name="retry_then_succeed", registry=registry)
async def retry_then_succeed(ctx: Context, sku: str) -> int:
    return await quote(sku)


# ---- a step that fails for good, caught by the workflow ----


@step(name="charge_card", retry=RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=0))
async def charge_card(cents: int) -> str:
    raise CardDeclined(f"card declined for {cents} cents")


@step(name="issue_credit")
async def issue_credit(cents: int) -> str:
    return f"credit-{cents}"


@workflow(name="caught_failure", registry=registry)
async def caught_failure(ctx: Context, cents: int) -> dict[str, str]:
    try:
        return {"paid": await charge_card(cents)}
    except StepError as exc:
        return {"credit": await issue_credit(cents), "error": exc.error_type}


# ---- a step failure the workflow lets through: the run fails ----


@workflow(name="uncaught_failure", registry=registry)
async def uncaught_failure(ctx: Context, cents: int) -> str:
    receipt = await charge(f"o-{cents}", cents)
    return receipt + await charge_card(cents)


GOLDEN_RUNS: dict[str, tuple[str, tuple[object, ...]]] = {
    # file stem: (workflow name, arguments)
    "sequential": ("order", ("o-1", 500)),
    "gather": ("basket", (["tea", "milk", "honey"],)),
    "completion_order": ("two_chains", ()),
    "retry_then_success": ("retry_then_succeed", ("sku-9",)),
    "caught_step_failure": ("caught_failure", (750,)),
    "failed_run": ("uncaught_failure", (300,)),
}
"""The goldens ``make_golden.py`` records."""
