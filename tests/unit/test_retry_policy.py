"""RetryPolicy maths: delays, caps, jitter and which errors are retried."""

from __future__ import annotations

import random

import pytest

from continuum_py import RetryPolicy, StepError


def test_delays_grow_by_the_backoff_factor_up_to_the_cap():
    policy = RetryPolicy(initial_interval=0.5, backoff=3.0, max_interval=10.0, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10.0, 10.0]


def test_backoff_of_one_keeps_the_interval_constant():
    policy = RetryPolicy(initial_interval=2.0, backoff=1.0, jitter=0)
    assert {policy.delay(n) for n in range(1, 20)} == {2.0}


def test_zero_interval_never_waits_even_with_jitter():
    policy = RetryPolicy(initial_interval=0, jitter=0.5)
    assert [policy.delay(n, random.Random(n)) for n in range(1, 6)] == [0.0] * 5


def test_jitter_spreads_each_delay_within_its_fraction():
    policy = RetryPolicy(initial_interval=1.0, backoff=2.0, max_interval=100, jitter=0.2)
    rng = random.Random(7)
    for n in range(1, 6):
        base = 2.0 ** (n - 1)
        samples = [policy.delay(n, rng) for _ in range(200)]
        assert all(0.8 * base <= d <= 1.2 * base for d in samples)
        assert len(set(samples)) > 100  # really spread, not one value
        assert min(samples) < base < max(samples)


def test_the_same_random_source_gives_the_same_delays():
    policy = RetryPolicy(initial_interval=1.0, jitter=0.3)
    first = [policy.delay(n, random.Random(42)) for n in range(1, 5)]
    again = [policy.delay(n, random.Random(42)) for n in range(1, 5)]
    assert first == again


def test_jitter_can_spread_a_capped_delay_beyond_the_cap_but_never_below_zero():
    policy = RetryPolicy(initial_interval=10, max_interval=10, jitter=1.0)
    delays = [policy.delay(5, random.Random(s)) for s in range(100)]
    assert all(0.0 <= d <= 20.0 for d in delays)


class Declined(Exception):
    pass


class HardDeclined(Declined):
    pass


@pytest.mark.parametrize(
    ("non_retryable", "exc", "retryable"),
    [
        ((), ValueError("x"), True),
        ((ValueError,), ValueError("x"), False),
        ((ValueError,), TypeError("x"), True),
        ((Declined,), HardDeclined("x"), False),  # subclasses too
        ((HardDeclined,), Declined("x"), True),  # not the parent
        (("Declined",), HardDeclined("x"), False),  # by name, through the MRO
        ((f"{__name__}.HardDeclined",), HardDeclined("x"), False),  # module-qualified name
        (("other.module.HardDeclined",), HardDeclined("x"), True),
        (("ValueError",), ValueError("x"), False),
    ],
)
def test_non_retryable_errors(non_retryable, exc, retryable):
    assert RetryPolicy(non_retryable=non_retryable).is_retryable(exc) is retryable


def test_defaults_retry_three_times_in_all():
    policy = RetryPolicy()
    assert policy.max_attempts == 3
    assert policy.is_retryable(StepError("s", 1, "T", "m"))
