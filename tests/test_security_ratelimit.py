"""Token-bucket rate limits with a hand-moved clock (fedguard.security.ratelimit)."""

import pytest

from fedguard.errors import ConfigError, RateLimitedError
from fedguard.security.ratelimit import RateLimiter, RateLimitExceededError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_burst_then_refusal_with_retry_after(clock: Clock) -> None:
    limiter = RateLimiter(3, 0.5, now=clock)

    for _ in range(3):
        limiter.acquire("c-a")
    with pytest.raises(RateLimitExceededError, match=r"retry after 2 s") as caught:
        limiter.acquire("c-a")

    assert isinstance(caught.value, RateLimitedError)
    assert caught.value.http_status == 429
    assert caught.value.retry_after == pytest.approx(2.0)


def test_bucket_refills_with_time_up_to_capacity(clock: Clock) -> None:
    limiter = RateLimiter(2, 1.0, now=clock)
    limiter.acquire("c-a")
    limiter.acquire("c-a")

    clock.now += 1.0
    limiter.acquire("c-a")
    with pytest.raises(RateLimitExceededError):
        limiter.acquire("c-a")

    clock.now += 3600.0
    limiter.acquire("c-a")
    limiter.acquire("c-a")
    with pytest.raises(RateLimitExceededError):
        limiter.acquire("c-a")


def test_keys_have_separate_buckets(clock: Clock) -> None:
    limiter = RateLimiter(1, 1.0, now=clock)
    limiter.acquire("c-a")

    limiter.acquire("c-b")
    with pytest.raises(RateLimitExceededError):
        limiter.acquire("c-a")


def test_retry_after_takes_nothing(clock: Clock) -> None:
    limiter = RateLimiter(1, 0.25, now=clock)

    assert limiter.retry_after("c-a") == 0.0
    assert limiter.retry_after("c-a") == 0.0
    limiter.acquire("c-a")
    assert limiter.retry_after("c-a") == pytest.approx(4.0)
    clock.now += 1.0
    assert limiter.retry_after("c-a") == pytest.approx(3.0)


def test_retry_after_header_value_is_a_whole_second_at_least() -> None:
    assert RateLimitExceededError(0.01).retry_after_seconds == 1
    assert RateLimitExceededError(2.2).retry_after_seconds == 3


def test_clock_going_backwards_never_adds_tokens(clock: Clock) -> None:
    limiter = RateLimiter(1, 1.0, now=clock)
    limiter.acquire("c-a")

    clock.now -= 100.0
    with pytest.raises(RateLimitExceededError):
        limiter.acquire("c-a")


def test_full_buckets_are_dropped_first_when_memory_is_bounded(clock: Clock) -> None:
    limiter = RateLimiter(2, 0.1, now=clock, max_keys=3)
    for key in ("idle-1", "idle-2"):
        limiter.acquire(key)
    clock.now += 20.0  # both idle buckets are full again
    limiter.acquire("busy", cost=2)

    limiter.acquire("new")

    assert len(limiter) == 2  # the full buckets went, the spent one stayed
    with pytest.raises(RateLimitExceededError):
        limiter.acquire("busy")


def test_memory_stays_bounded_under_many_keys(clock: Clock) -> None:
    limiter = RateLimiter(2, 0.1, now=clock, max_keys=3)

    for index in range(50):
        limiter.acquire(f"key-{index}")

    assert len(limiter) == 3
    with pytest.raises(RateLimitExceededError):
        limiter.acquire("key-49", cost=2)


@pytest.mark.parametrize(
    ("capacity", "rate", "max_keys", "message"),
    [
        (0, 1.0, 10, r"capacity must be > 0; got 0"),
        (1, 0.0, 10, r"refill_per_second must be > 0; got 0.0"),
        (1, 1.0, 0, r"max_keys must be >= 1; got 0"),
    ],
)
def test_bad_settings_are_refused(
    capacity: float, rate: float, max_keys: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        RateLimiter(capacity, rate, max_keys=max_keys)
