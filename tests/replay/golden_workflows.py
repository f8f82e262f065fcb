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

from continuum_py import (
    Context,
    Registry,
    RetryPolicy,
    SignalTimeout,
    StepError,
    StepInfo,
    step,
    workflow,
)

registry = Registry()
"""Today's code: every golden must replay against it."""

legacy = Registry()
"""Old versions of workflows in ``registry``: only ``make_golden.py`` runs them,
to record histories that runs started before a change still have."""

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


# ---- durable time: a sleep between two steps ----


@step(name="note")
async def note(text: str) -> str:
    return f"noted {text}"


@workflow(name="nap", registry=registry)
async def nap(ctx: Context, hours: int) -> list[str]:
    before = await note("before")
    await ctx.sleep(hours * 3600)
    return [before, await note("after")]


# ---- a signal wait with a timeout: answered, timed out, or answered before it began ----


@workflow(name="approval", registry=registry)
async def approval(ctx: Context, order_id: str) -> dict[str, object]:
    try:
        decision = await ctx.wait_for_signal("approve", timeout=86400)
    except SignalTimeout:
        return {"order": order_id, "approved": None}
    return {"order": order_id, "approved": decision}


# ---- a signal raced against a timer: which won is history ----


@workflow(name="race", registry=registry)
async def race(ctx: Context) -> str:
    index, value = await ctx.wait_first(ctx.wait_for_signal("go"), ctx.sleep(600))
    return f"signal:{value}" if index == 0 else "timer"


# ---- values that must not change on replay: now, random, uuid4 ----


@workflow(name="stamp", registry=registry)
async def stamp(ctx: Context) -> dict[str, object]:
    started = ctx.now()
    token = ctx.uuid4()
    roll = ctx.random()
    receipt = await note(str(token))
    return {"started": started.isoformat(), "token": str(token), "roll": roll, "note": receipt}


# ---- values published for callers with set_event ----


@workflow(name="progress", registry=registry)
async def progress(ctx: Context, items: list[str]) -> int:
    for done, item in enumerate(items, 1):
        await note(item)
        ctx.set_event("done", done)
    return len(items)


# ---- versioning: invoice v1 (legacy) and v2, which adds a fee behind ctx.patched ----


@step(name="add_fee")
async def add_fee(cents: int) -> int:
    return cents + 30


@workflow(name="invoice", registry=legacy)
async def invoice_v1(ctx: Context, cents: int) -> dict[str, object]:
    return {"receipt": await charge("inv", cents), "cents": cents}


@workflow(name="invoice", registry=registry)
async def invoice(ctx: Context, cents: int) -> dict[str, object]:
    if ctx.patched("add-fee"):
        cents = await add_fee(cents)
    # The old path is what follows: v1 runs in flight replay it unchanged.
    return {"receipt": await charge("inv", cents), "cents": cents}


# ---- a child run: the parent waits for a workflow of its own ----


@workflow(name="pack", registry=registry)
async def pack(ctx: Context, items: list[str]) -> list[str]:
    return [await note(item) for item in items]


@workflow(name="fulfil", registry=registry)
async def fulfil(ctx: Context, order_id: str, items: list[str]) -> dict[str, object]:
    packed = await pack(items)
    return {"order": order_id, "packed": packed, "shipped": await note(order_id)}


# ---- cancellation: the workflow cleans up with a step, then lets the cancel through ----


@step(name="release_hold")
async def release_hold(reservation: str) -> str:
    return f"released {reservation}"


@workflow(name="held_order", registry=registry)
async def held_order(ctx: Context, order_id: str) -> str:
    reservation = await reserve(order_id)
    try:
        await ctx.sleep(7 * 86400)
    except asyncio.CancelledError:
        await release_hold(reservation)
        raise
    return await charge(order_id, 100)


# ---- continue-as-new: a countdown that restarts itself with a fresh history ----


@step(name="tick")
async def tick(n: int) -> int:
    return n * 10


@workflow(name="countdown", registry=registry)
async def countdown(ctx: Context, n: int, total: int) -> int:
    total += await tick(n)
    if n > 1:
        ctx.continue_as_new(n - 1, total)
    return total


# ---- issue 8: a losing signal wait gives back its signal ----


@step(name="handle_item")
async def handle_item(item: str) -> str:
    return item.upper()


@workflow(name="item_loop", registry=registry)
async def item_loop(ctx: Context) -> list[str]:
    done: list[str] = []
    while True:
        i, v = await ctx.wait_first(ctx.wait_for_signal("item"), ctx.wait_for_signal("exit"))
        if i == 1:
            return [*done, f"exit:{v}"]
        done.append(await handle_item(v))


# ---- issue 10: sagas, compensations undoing completed steps ----


class HotelGone(Exception):
    """The hotel no longer knows the booking."""


@step(name="cancel_flight")
async def cancel_flight(booking: str, trip: str) -> str:
    return f"cancelled {booking}"


@step(name="cancel_hotel", retry=RetryPolicy(max_attempts=1))
async def cancel_hotel(booking: str, trip: str, nights: int) -> str:
    raise HotelGone(f"no booking {booking}")


@step(name="cancel_car")
async def cancel_car(booking: str, trip: str) -> str:
    return f"cancelled {booking}"


@step(name="book_flight", compensate=cancel_flight)
async def book_flight(trip: str) -> str:
    return f"flight-{trip}"


@step(name="book_hotel", compensate=cancel_hotel)
async def book_hotel(trip: str, nights: int) -> str:
    return f"hotel-{trip}-{nights}"


@step(name="book_car", compensate=cancel_car)
async def book_car(trip: str) -> str:
    await asyncio.sleep(0.02)  # completes after the hotel
    return f"car-{trip}"


@step(name="pay_trip", retry=RetryPolicy(max_attempts=1))
async def pay_trip(trip: str) -> str:
    raise CardDeclined(f"card declined for {trip}")


@workflow(name="trip", registry=registry)
async def trip(ctx: Context, trip_id: str) -> str:
    await book_flight(trip_id)
    await asyncio.gather(book_car(trip_id), book_hotel(trip_id, 2))
    return await pay_trip(trip_id)


@workflow(name="held_trip", registry=registry)
async def held_trip(ctx: Context, trip_id: str) -> str:
    await book_flight(trip_id)
    await ctx.sleep(3600)
    return "kept"


@workflow(name="retried_trip", registry=registry)
async def retried_trip(ctx: Context, trip_id: str) -> list[str]:
    await book_flight(trip_id)
    try:
        await pay_trip(trip_id)
    except StepError:
        undone = await ctx.compensate()
        return [f"{o.step}:{o.ok}" for o in undone]
    return []


GOLDEN_RUNS: dict[str, tuple[str, tuple[object, ...]]] = {
    # file stem: (workflow name, arguments)
    "sequential": ("order", ("o-1", 500)),
    "gather": ("basket", (["tea", "milk", "honey"],)),
    "completion_order": ("two_chains", ()),
    "retry_then_success": ("retry_then_succeed", ("sku-9",)),
    "caught_step_failure": ("caught_failure", (750,)),
    "failed_run": ("uncaught_failure", (300,)),
    # issue 3; make_golden.SCENARIOS says how each was driven
    "sleep": ("nap", (2,)),
    "signal_received": ("approval", ("o-7",)),
    "signal_timeout": ("approval", ("o-8",)),
    "signal_before_wait": ("approval", ("o-9",)),
    "race_signal_wins": ("race", ()),
    "race_timer_wins": ("race", ()),
    "side_effects": ("stamp", ()),
    "set_event": ("progress", (["pick", "pack"],)),
    "patch_v1_history": ("invoice", (500,)),
    "patch_v2_history": ("invoice", (500,)),
    "child_parent": ("fulfil", ("o-5", ["cup", "saucer"])),
    "child_child": ("pack", (["cup", "saucer"],)),
    "cancelled_with_cleanup": ("held_order", ("o-6",)),
    "continued_as_new": ("countdown", (2, 0)),
    "continued_last_link": ("countdown", (1, 20)),
    # issue 8
    "signals_given_back": ("item_loop", ()),
    "terminated_while_sleeping": ("held_order", ("o-10",)),
    # issue 10
    "saga_failed": ("trip", ("t-1",)),
    "saga_cancelled": ("held_trip", ("t-2",)),
    "saga_requested": ("retried_trip", ("t-3",)),
}
"""The goldens ``make_golden.py`` records: the workflow and arguments of each recorded run."""

RECORDED_BY: dict[str, Registry] = {"patch_v1_history": legacy}
"""Goldens recorded by old code (default: ``registry``)."""
