"""Pure pieces of the transport: Retry-After parsing, backoff bounds, the token bucket and the adaptive budget."""

from __future__ import annotations

import email.utils
import itertools

import pytest

from aisearch_ingest.ratelimit import (
    _BUDGETS,
    RateLimiter,
    Stamp,
    credential_fingerprint,
    limiters_for,
    reset_budgets,
)
from aisearch_ingest.transport import RetryPolicy, parse_retry_after

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "12.5"}, 0.0125),
        # x-acs-retry-after is integer milliseconds, as alibabacloud_tea_openapi reads it: 1000 is one second
        ({"x-acs-retry-after": "1000"}, 1.0),
        ({"x-acs-retry-after": "3"}, 0.003),
        ({"x-acs-retry-after": "1500"}, 1.5),
        ({"x-acs-retry-after": "0.5"}, None),  # not an integer: the SDK ignores it, so do we
        ({"x-acs-retry-after": "0"}, None),
        ({"x-acs-retry-after": "-5"}, None),
        ({"x-acs-retry-after": "soon"}, None),
        ({"x-acs-retry-after": "1000", "Retry-After": "1"}, 1.0),  # what the gateway sends: both agree
        ({"x-acs-retry-after": "garbage", "Retry-After": "2"}, 2.0),  # a bad hint falls through to the next
        ({"Retry-After": email.utils.formatdate(NOW + 4, usegmt=True)}, 4.0),
        ({"Retry-After": email.utils.formatdate(NOW - 30, usegmt=True)}, None),  # a past date: own backoff
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "0"}, None),
        ({"Retry-After": "-1"}, None),
        ({}, None),
        ({"retry-after-ms": "100", "Retry-After": "9"}, 0.1),  # the precise hint wins
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    got = parse_retry_after(headers, now=NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0, jitter=0.25)
    for n, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        samples = [policy.backoff(n) for _ in range(200)]
        assert max(samples) <= ceiling + 1e-9
        assert min(samples) >= ceiling * 0.75 - 1e-9


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_spaces_calls_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, margin=0.0, clock=clock)
    delays = [limiter.reserve() for _ in range(5)]
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    clock.now += 10  # idle time does not accumulate beyond the burst
    assert limiter.reserve() == 0.0
    assert limiter.reserve() == pytest.approx(0.1)


async def test_no_one_second_window_exceeds_qps() -> None:
    clock = FakeClock()

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    limiter = RateLimiter(10, clock=clock)
    starts = []
    for _ in range(100):
        await limiter.acquire(fake_sleep)
        starts.append(clock.now)
    for t in starts:
        assert len([u for u in starts if t <= u < t + 1.0]) <= 10


def test_burst_allows_that_many_immediately() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, burst=3, margin=0.0, clock=clock)
    assert [limiter.reserve() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 0.2])


def test_disabled_limiter_never_waits() -> None:
    limiter = RateLimiter(None)
    assert all(limiter.reserve() == 0.0 for _ in range(100))


def test_window_rule_uses_real_send_times() -> None:
    """A call sent late must not let the next second's calls crowd into its window."""
    clock = FakeClock()
    limiter = RateLimiter(2, margin=0.05, clock=clock)
    assert limiter.admit() == 0.0  # t=100.0
    clock.now = 100.9  # the second call was delayed by a busy loop
    assert limiter.admit() == 0.0
    clock.now = 101.0  # by spacing alone the third call would go now: 3 calls within (100.0, 101.0]
    assert limiter.admit() == pytest.approx(0.05)
    clock.now = 101.05
    assert limiter.admit() == 0.0
    clock.now = 101.5
    assert limiter.admit() == pytest.approx(0.45)  # 100.9 + 1.05 - 101.5


async def test_acquire_waits_for_both_rules() -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    limiter = RateLimiter(4, margin=0.0, clock=clock)
    starts = []
    for _ in range(9):
        await limiter.acquire(fake_sleep)
        starts.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([0.25] * 8)


# --- the adaptive budget


def _send(limiter: RateLimiter, clock: FakeClock) -> Stamp:
    assert limiter.admit() == 0.0
    stamp = limiter._sent[-1]
    assert stamp.at == clock.now
    return stamp


def test_429_lowers_the_rate_to_what_the_service_accepted() -> None:
    clock = FakeClock()
    limiter = RateLimiter(12, adaptive=True, margin=0.0, clock=clock)
    stamps = []
    for _ in range(11):  # a 12/s pace against a service that takes 10 in any second
        stamps.append(_send(limiter, clock))
        clock.now += 1 / 12
    for stamp in stamps[:10]:
        limiter.feedback(stamp, throttled=False)
    limiter.feedback(stamps[10], throttled=True, hint=0.2)
    assert limiter.rate == pytest.approx(10.0, abs=0.01)
    assert limiter.decreases == 1 and limiter.throttled == 1
    # the hint pauses everyone, not only the refused call
    assert limiter.admit() == pytest.approx(0.2)


def test_calls_in_flight_before_a_decrease_do_not_lower_it_again() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, adaptive=True, margin=0.0, clock=clock)
    burst = []
    for _ in range(5):
        burst.append(_send(limiter, clock))
        clock.now += 0.1
    limiter.feedback(burst[0], throttled=False)
    for stamp in burst[1:]:
        limiter.feedback(stamp, throttled=True)  # a 1/s limit: all but the first refused
    assert limiter.decreases == 1
    assert limiter.rate == pytest.approx(1.0, abs=0.01)  # one call accepted in the window before the refusal
    assert limiter.throttled == 4


def test_nothing_accepted_halves_the_rate_and_the_floor_holds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, adaptive=True, margin=0.0, probe=1e9, clock=clock)  # no recovery in this test
    rates = []
    for _ in range(30):
        clock.now += 100.0  # far apart: each is a fresh decrease with nothing accepted around it
        stamp = _send(limiter, clock)
        limiter.feedback(stamp, throttled=True)
        rates.append(limiter.rate)
    assert rates[:3] == pytest.approx([5.0, 2.5, 1.25])
    assert rates[-1] == pytest.approx(10 / 200)  # default floor: ceiling / 200


def test_rate_climbs_back_quadratically_to_the_ceiling() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, adaptive=True, margin=0.0, probe=20.0, clock=clock)
    first = _send(limiter, clock)
    limiter.feedback(first, throttled=False)
    clock.now += 0.5
    refused = _send(limiter, clock)
    limiter.feedback(refused, throttled=True)
    assert limiter.rate == pytest.approx(1.0)
    clock.now += 20.0
    assert limiter.rate == pytest.approx(2.0)
    clock.now += 20.0
    assert limiter.rate == pytest.approx(5.0)
    clock.now += 60.0
    assert limiter.rate == 10.0


def test_non_adaptive_limiter_keeps_its_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, margin=0.0, clock=clock)
    stamp = _send(limiter, clock)
    limiter.feedback(stamp, throttled=True)
    assert limiter.rate == 10.0 and limiter.throttled == 1 and limiter.decreases == 0


async def test_retries_skip_the_spacing_queue() -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = RateLimiter(2, adaptive=True, margin=0.0, clock=clock)
    for _ in range(3):
        limiter.reserve()  # three new calls queued: the next spacing slot is 1.5 s away
    assert limiter.reserve() == pytest.approx(1.5)
    await limiter.acquire(fake_sleep, retry=True)  # a retry goes now: the window has room
    assert slept == []


def test_sub_one_qps_window_spans_the_interval() -> None:
    clock = FakeClock()
    limiter = RateLimiter(0.5, margin=0.0, clock=clock)
    _send(limiter, clock)
    clock.now += 1.5
    assert limiter.admit() == pytest.approx(0.5)  # one call per 2 s, even for a retry that skips the spacing


def test_one_budget_per_endpoint_and_credential() -> None:
    reset_budgets()
    doc = limiters_for("https://ep.example", "key-a", "document-analyze")
    img = limiters_for("https://ep.example/", "key-a", "image-analyze", 12)
    other_key = limiters_for("https://ep.example", "key-b", "image-analyze")
    other_host = limiters_for("https://ep2.example", "key-a", "image-analyze")
    assert doc[-1] is img[-1]  # the endpoint budget is shared by the services
    assert doc[0] is not img[0]  # each service keeps its own ceiling
    assert img[0].ceiling == 12 and doc[0].ceiling == 10
    assert doc[-1].ceiling == 12 and doc[-1].adaptive  # the budget goes up to its highest service's ceiling
    assert other_key[-1] is not doc[-1] and other_host[-1] is not doc[-1]
    assert limiters_for("https://ep.example", "key-a", "image-analyze", 0) == ()
    assert "key-a" not in repr(_BUDGETS) and "key-a" not in credential_fingerprint("key-a")
    reset_budgets()


# --- learning when to poll


def test_poll_policy_learns_task_time_per_size() -> None:
    from aisearch_ingest import PollPolicy

    poll = PollPolicy(min_interval=0.2, max_interval=30.0)
    assert poll.predict(1000) is None and poll.first_delay(1000) == pytest.approx(0.2)
    # Tasks that are always done by the first poll: the first poll moves earlier, down to min_interval.
    for _ in range(40):
        first = poll.first_delay(1000)
        poll.observe_task(last_pending=None, done_by=first)
    assert poll.first_delay(1000) == pytest.approx(0.2)
    # Tasks of 1 s + 1 s per MB: learned from the PENDING/done intervals, the first poll lands just after the end.
    poll = PollPolicy(min_interval=0.2, max_interval=30.0)
    for i in range(60):
        size = (i % 6 + 1) * 1_000_000
        true = 1.0 + size / 1e6
        poll.observe_task(last_pending=true - 0.1, done_by=true + 0.1, size=size)
    assert poll.predict(2_000_000) == pytest.approx(3.0, rel=0.02)
    assert poll.predict(6_000_000) == pytest.approx(7.0, rel=0.02)
    assert 7.0 < poll.first_delay(6_000_000) < 7.0 * 1.1
    # Still pending after the predicted end: short, growing waits (a tenth of the prediction, then x factor).
    late = [poll.delay(7.6, 6_000_000, previous=7.6, late=k) for k in range(3)]
    assert late == pytest.approx([0.7, 1.12, 1.792], rel=0.03)


# --- how many sources in flight


def test_in_flight_follows_littles_law() -> None:
    from aisearch_ingest.engine import MAX_CONCURRENCY, _Flow

    flow = _Flow()
    assert flow.target(10.0, initial=64) == 64  # nothing learned yet
    assert flow.target(None, initial=64) == 10  # no budget: the fixed default
    for _ in range(20):
        flow.observe(5.0, 2)  # async tasks: 5 s of service time, 2 calls each
    # 10 calls/s allow 5 sources/s; each takes 5 s: 25 busy at once, doubled plus two
    assert flow.target(10.0) == 52
    assert flow.target(1.0) == 7  # the budget learned a lower rate: fewer in flight
    for _ in range(60):
        flow.observe(0.1, 1)  # quick sync calls: 10 per second, 0.1 s each -> 1 busy, doubled plus two
    assert 4 <= flow.target(10.0) <= 5
    flow.observe(1000.0, 1)
    assert flow.target(10.0) == MAX_CONCURRENCY


async def test_gate_can_grow_and_shrink_while_held() -> None:
    import anyio

    from aisearch_ingest.engine import _Gate

    gate = _Gate(2)
    await gate.acquire()
    await gate.acquire()
    entered = []

    async def third() -> None:
        await gate.acquire()
        entered.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(third)
        await anyio.sleep(0.01)
        assert entered == []  # full
        gate.resize(3)  # room for one more: the waiter gets in
        await anyio.sleep(0.01)
        assert entered == [True]
    gate.resize(1)
    gate.release()
    gate.release()
    assert gate.active == 1  # shrinking never evicts; it only stops new entries
