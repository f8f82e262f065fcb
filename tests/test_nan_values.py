"""NaN and infinity are refused at record time, everywhere a user value is recorded.

JSON has no NaN or infinity, and msgspec writes them as ``null``: unchecked, an
unannotated NaN came back as ``None`` and a ``-> float`` one failed to decode
after the step's side effect ran, with a message about ``null``. Now each is an
``EncodingError`` naming the value's owner, the path to the number and NaN,
raised before anything is written, and a step is not retried for it.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from helpers import journal_state

from continuum_py import (
    Context,
    EncodingError,
    Engine,
    Registry,
    RunFailed,
    RunNotFound,
    StepError,
    step,
    workflow,
)
from continuum_py.events import RunFailedEvent, StepFailed

reg = Registry()
side_effects: list[str] = []


class Reading(msgspec.Struct):
    sensor: str
    values: list[float]


BAD_VALUES = {
    "nan": math.nan,
    "inf": math.inf,
    "minus-inf": -math.inf,
    "in-list": [1.0, math.nan],
    "in-dict": {"ok": 1.0, "bad": {"deep": math.inf}},
    "in-struct": Reading(sensor="t1", values=[20.5, math.nan]),
}


@step
async def measure(kind: str):  # unannotated: decoded as plain JSON
    side_effects.append(f"measured {kind}")
    return BAD_VALUES[kind]


@step
async def measure_float() -> float:
    side_effects.append("measured float")
    return math.nan


@step
async def takes(value: Any) -> int:
    side_effects.append("takes ran")
    return 1


@workflow(registry=reg)
async def reads(ctx: Context, kind: str) -> Any:
    return await measure(kind)


@workflow(registry=reg)
async def reads_float(ctx: Context) -> float:
    return await measure_float()


@workflow(registry=reg)
async def catches(ctx: Context) -> str:
    try:
        await measure("nan")
    except StepError as exc:
        return f"{exc.error_type}: {exc.message}"
    return "not refused"


@workflow(registry=reg)
async def passes_nan_to_a_step(ctx: Context) -> int:
    return await takes([math.nan])


@workflow(registry=reg)
async def returns_nan(ctx: Context) -> float:
    return math.inf


@workflow(registry=reg)
async def echo(ctx: Context, x: Any) -> Any:
    return x


@workflow(registry=reg)
async def publishes_nan(ctx: Context) -> str:
    try:
        ctx.set_event("score", {"value": math.nan})
    except EncodingError as exc:
        return str(exc)
    return "not refused"


@workflow(registry=reg)
async def child(ctx: Context, x: float) -> float:
    return x


@workflow(registry=reg)
async def starts_child_with_nan(ctx: Context) -> str:
    try:
        await child(math.nan)
    except EncodingError as exc:
        return str(exc)
    return "not refused"


@workflow(registry=reg)
async def continues_with_nan(ctx: Context) -> str:
    try:
        ctx.continue_as_new(math.nan)
    except EncodingError as exc:
        return str(exc)
    return "not refused"


@workflow(registry=reg)
async def waits(ctx: Context) -> Any:
    return await ctx.wait_for_signal("go")


@pytest.fixture(autouse=True)
def _reset():
    side_effects.clear()


@pytest.fixture
async def engine(journal_url):
    async with Engine(journal_url, registry=reg, worker_id="w1", poll_interval=0.05) as e:
        # Something already recorded, that no refused value may touch.
        assert await (await e.start(echo, [1.5, None], run_id="kept")).result(timeout=10) == [
            1.5,
            None,
        ]
        yield e


def _names(history) -> list[str]:
    return [type(e).__name__ for e in history]


async def _kept(engine) -> tuple:
    rec = await engine.journal.get_run("kept")
    return rec.status, rec.last_seq, await engine.history("kept")


@pytest.mark.parametrize("kind", list(BAD_VALUES))
async def test_a_step_result_with_nan_fails_the_step_once_naming_it(engine, kind):
    kept = await _kept(engine)
    h = await engine.start(reads, kind, run_id="r")
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=10)
    assert ei.value.error_type == "continuum_py.errors.EncodingError"
    assert "step 'measure'" in ei.value.message
    assert "NaN" in ei.value.message
    # Not retried (the default policy allows 3 attempts): the same value cannot encode.
    assert side_effects == [f"measured {kind}"]
    hist = await engine.history("r")
    assert _names(hist) == ["RunStarted", "StepScheduled", "StepFailed", "RunFailed"]
    failed = hist[2]
    assert isinstance(failed, StepFailed) and failed.final and failed.attempt == 1
    assert failed.error.type == "continuum_py.errors.EncodingError"
    assert "NaN" in failed.error.message and "measure" in failed.error.message
    assert isinstance(hist[3], RunFailedEvent)
    assert await _kept(engine) == kept


async def test_the_error_says_where_the_nan_is(engine):
    h = await engine.start(reads, "in-struct", run_id="r")
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=10)
    assert "value['values'][1] is nan" in ei.value.message


async def test_a_float_step_returning_nan_names_nan_not_null(engine):
    h = await engine.start(reads_float, run_id="r")
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=10)
    assert "step 'measure_float'" in ei.value.message
    assert "NaN" in ei.value.message
    assert side_effects == ["measured float"]
    assert _names(await engine.history("r")) == [
        "RunStarted",
        "StepScheduled",
        "StepFailed",
        "RunFailed",
    ]


async def test_the_workflow_sees_the_refusal_as_a_step_error(engine):
    h = await engine.start(catches, run_id="r")
    result = await h.result(timeout=10)
    assert result.startswith("continuum_py.errors.EncodingError: step 'measure'")
    assert "NaN" in result
    assert side_effects == ["measured nan"]


async def test_a_step_argument_with_nan_fails_before_the_step_runs(engine):
    h = await engine.start(passes_nan_to_a_step, run_id="r")
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=10)
    assert "step 'takes'" in ei.value.message
    assert "args[0][0] is nan" in ei.value.message
    assert side_effects == []


async def test_a_workflow_result_with_infinity_fails_the_run(engine):
    h = await engine.start(returns_nan, run_id="r")
    with pytest.raises(RunFailed) as ei:
        await h.result(timeout=10)
    assert ei.value.error_type == "continuum_py.errors.EncodingError"
    assert "workflow 'returns_nan'" in ei.value.message
    assert "NaN" in ei.value.message


@pytest.mark.parametrize("arg", [math.nan, {"x": [math.inf]}], ids=["nan", "nested-inf"])
async def test_a_workflow_argument_with_nan_records_nothing(engine, arg):
    before = await journal_state(engine)
    with pytest.raises(EncodingError) as ei:
        await engine.start(echo, arg, run_id="never")
    assert "workflow 'echo'" in str(ei.value) and "NaN" in str(ei.value)
    assert await journal_state(engine) == before
    with pytest.raises(RunNotFound):
        await engine.get("never")


async def test_a_signal_payload_with_nan_is_not_sent(engine):
    h = await engine.start(waits, run_id="r")
    with pytest.raises(EncodingError) as ei:
        await h.signal("go", {"reading": math.nan})
    assert "signal 'go'" in str(ei.value) and "NaN" in str(ei.value)
    await h.signal("go", {"reading": 1.0})
    # The refused payload never reached the run: the first signal it gets is the good one.
    assert await h.result(timeout=10) == {"reading": 1.0}


@pytest.mark.parametrize(
    ("flow", "owner"),
    [
        (publishes_nan, "set_event('score')"),
        (starts_child_with_nan, "workflow 'child'"),
        (continues_with_nan, "workflow 'continues_with_nan'"),
    ],
    ids=["set_event", "child-args", "continue_as_new"],
)
async def test_workflow_values_with_nan_raise_in_the_workflow(engine, flow, owner):
    h = await engine.start(flow, run_id="r")
    message = await h.result(timeout=10)
    assert owner in message and "NaN" in message
    # Nothing of the refused value was recorded: no event, no child run.
    assert _names(await engine.history("r")) == ["RunStarted", "RunCompleted"]
    assert sorted(r.run_id for r in await engine.list_runs()) == ["kept", "r"]
