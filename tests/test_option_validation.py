"""Every option of RetryPolicy, @step, @workflow and Engine is checked up front.

A bad value is a ConfigurationError whose message names the option and the
value, raised where the option is given: never a bare TypeError from deep inside,
and never a NaN or infinity that quietly means "no limit".
"""

from __future__ import annotations

import math

import pytest

from continuum_py import ConfigurationError, Engine, Registry, RetryPolicy, step, workflow

NAN, INF = math.nan, math.inf


def _check(exc: ConfigurationError, option: str, value: object) -> None:
    text = str(exc)
    assert option in text
    assert repr(value) in text


RETRY_BAD = [
    ("max_attempts", None),
    ("max_attempts", 0),
    ("max_attempts", -3),
    ("max_attempts", True),
    ("max_attempts", 2.5),
    ("max_attempts", "3"),
    ("initial_interval", -1),
    ("initial_interval", NAN),
    ("initial_interval", INF),
    ("initial_interval", None),
    ("initial_interval", "1"),
    ("backoff", 0.5),
    ("backoff", NAN),
    ("backoff", INF),
    ("backoff", True),
    ("max_interval", -0.1),
    ("max_interval", NAN),
    ("max_interval", INF),
    ("jitter", -0.1),
    ("jitter", 1.5),
    ("jitter", NAN),
    ("non_retryable", ValueError),
    ("non_retryable", "ValueError"),
    ("non_retryable", None),
    ("non_retryable", (1,)),
    ("non_retryable", ("",)),
    ("non_retryable", (int,)),
]


@pytest.mark.parametrize(("option", "value"), RETRY_BAD, ids=lambda v: repr(v))
def test_a_bad_retry_policy_option_is_named(option, value):
    with pytest.raises(ConfigurationError) as ei:
        RetryPolicy(**{option: value})
    _check(ei.value, f"RetryPolicy.{option}", value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 1},
        {"initial_interval": 0, "max_interval": 0},
        {"backoff": 1},
        {"jitter": 0},
        {"jitter": 1},
        {"non_retryable": (ValueError, "httpx.ConnectError")},
    ],
    ids=repr,
)
def test_good_retry_policy_options_are_kept(kwargs):
    policy = RetryPolicy(**kwargs)
    for key, value in kwargs.items():
        assert getattr(policy, key) == value


def test_a_list_of_non_retryable_errors_is_kept_as_a_tuple():
    policy = RetryPolicy(non_retryable=[KeyError, "x.Y"])
    assert policy.non_retryable == (KeyError, "x.Y")
    assert not policy.is_retryable(KeyError())
    hash(policy)  # still a frozen, hashable value


async def _fn() -> None:
    pass


STEP_BAD = [
    ("timeout", NAN),
    ("timeout", INF),
    ("timeout", 0),
    ("timeout", -1),
    ("timeout", True),
    ("timeout", "30"),
    ("name", ""),
    ("name", "   "),
    ("name", 3),
    ("retry", 3),
    ("retry", {"max_attempts": 1}),
    ("transactional", "yes"),
    ("transactional", 1),
    ("transactional", None),
]


@pytest.mark.parametrize(("option", "value"), STEP_BAD, ids=lambda v: repr(v))
def test_a_bad_step_option_is_named(option, value):
    with pytest.raises(ConfigurationError) as ei:
        step(**{option: value})(_fn)
    _check(ei.value, f"@step {option}", value)


def test_good_step_options_are_kept():
    policy = RetryPolicy(max_attempts=1)
    s = step(name="charge", retry=policy, timeout=2.5, transactional=True)(_fn)
    assert (s.name, s.retry, s.timeout, s.transactional) == ("charge", policy, 2.5, True)
    assert step(timeout=1)(_fn).timeout == 1


@pytest.mark.parametrize(
    ("option", "value"),
    [("name", ""), ("name", 5), ("registry", object()), ("registry", "default")],
    ids=repr,
)
def test_a_bad_workflow_option_is_named(option, value):
    async def flow(ctx) -> None:
        pass

    with pytest.raises(ConfigurationError) as ei:
        workflow(**{option: value})(flow)
    text = str(ei.value)
    assert f"@workflow {option}" in text
    assert repr(value)[:20] in text


ENGINE_BAD = [
    ("lease_ttl", 0),
    ("lease_ttl", -1),
    ("lease_ttl", NAN),
    ("lease_ttl", INF),
    ("lease_ttl", True),
    ("lease_ttl", "30"),
    ("snapshot_every", -1),
    ("snapshot_every", 1.5),
    ("snapshot_every", True),
    ("snapshot_every", NAN),
    ("concurrency", 0),
    ("concurrency", 2.0),
    ("concurrency", True),
    ("concurrency", None),
    ("poll_interval", 0),
    ("poll_interval", -1),
    ("poll_interval", NAN),
    ("poll_interval", INF),
    ("hold", -1),
    ("hold", NAN),
    ("hold", INF),
    ("worker", "no"),
    ("worker", None),
    ("worker_id", ""),
    ("worker_id", 7),
    ("url", 5),
]


@pytest.mark.parametrize(("option", "value"), ENGINE_BAD, ids=lambda v: repr(v))
def test_a_bad_engine_option_is_named_and_nothing_is_created(tmp_path, option, value):
    db = tmp_path / "runs.db"
    kwargs = {"url": f"sqlite:///{db}", option: value}
    with pytest.raises(ConfigurationError) as ei:
        Engine(**kwargs)
    _check(ei.value, f"Engine {option}", value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "value"), [("registry", object()), ("clock", object())], ids=repr
)
def test_a_bad_engine_object_is_named(option, value):
    with pytest.raises(ConfigurationError, match=f"Engine {option}"):
        Engine("memory://", **{option: value})


def test_good_engine_options_are_kept():
    reg = Registry()
    engine = Engine(
        "memory://",
        worker_id="w-1",
        lease_ttl=5,
        snapshot_every=0,
        concurrency=1,
        registry=reg,
        worker=False,
        poll_interval=0.5,
        hold=0,
    )
    assert (engine.worker_id, engine.lease_ttl, engine.snapshot_every) == ("w-1", 5, 0)
    assert (engine.concurrency, engine.registry, engine.poll_interval) == (1, reg, 0.5)
