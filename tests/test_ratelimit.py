"""The shared rate limit, with a fake clock and sleep so no test waits."""

from __future__ import annotations

import asyncio

from batchsync.ratelimit import RateLimiter


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def limiter(fake: FakeTime, rate: float, burst: int = 1, *, adaptive: bool = False) -> RateLimiter:
    """Return a RateLimiter on the fake clock."""
    return RateLimiter(rate, burst, adaptive=adaptive, clock=fake.clock, sleep=fake.sleep)


class TestSchedule:
    """Slots follow the configured rate after the burst."""

    async def test_burst_then_rate(self):
        """With burst 5 at 10/s, five slots are immediate and the next ten take one second."""
        fake = FakeTime()
        limit = limiter(fake, rate=10, burst=5)
        for _ in range(5):
            await limit.acquire()
        assert fake.now == 1000.0
        for _ in range(10):
            await limit.acquire()

        assert abs(fake.now - 1001.0) < 1e-9
        assert limit.stats.acquired == 15

    async def test_idle_time_refills_only_the_burst(self):
        """A long idle period gives back at most ``burst`` immediate slots."""
        fake = FakeTime()
        limit = limiter(fake, rate=10, burst=3)
        fake.now += 3600
        start = fake.now
        for _ in range(4):
            await limit.acquire()

        assert abs(fake.now - start - 0.1) < 1e-9

    async def test_concurrent_workers_share_the_rate(self):
        """Eight workers taking 100 slots at 50/s need about two seconds together."""
        fake = FakeTime()
        limit = limiter(fake, rate=50, burst=1)

        async def worker() -> None:
            for _ in range(25):
                await limit.acquire()

        await asyncio.gather(*(worker() for _ in range(4)))

        assert abs(fake.now - 1000.0 - 99 / 50) < 1e-6


class TestPause:
    """Retry-After pauses every worker, not only the one that received it."""

    async def test_pause_holds_every_acquire(self):
        """After pause(2), the next slot is two seconds away for any worker."""
        fake = FakeTime()
        limit = limiter(fake, rate=100, burst=10)
        limit.pause(2.0)
        await limit.acquire()

        assert fake.now >= 1002.0
        assert limit.stats.paused_seconds == 2.0
        assert limit.stats.pauses == 1

    async def test_no_burst_after_pause(self):
        """The slots after a pause come at the rate, not as a burst."""
        fake = FakeTime()
        limit = limiter(fake, rate=10, burst=10)
        limit.pause(1.0)
        for _ in range(3):
            await limit.acquire()

        assert abs(fake.now - 1001.2) < 1e-9

    def test_shorter_pause_does_not_shorten(self):
        """A shorter pause inside a longer one changes nothing."""
        fake = FakeTime()
        limit = limiter(fake, rate=10)
        limit.pause(5.0)
        limit.pause(1.0)

        assert limit.paused_until == 1005.0
        assert limit.stats.pauses == 1


class TestAdaptation:
    """The rate goes down under pressure and on 429, and recovers slowly."""

    def test_throttled_halves_the_rate(self):
        """A 429 halves the current rate."""
        fake = FakeTime()
        limit = limiter(fake, rate=100, adaptive=True)
        limit.on_throttled()

        assert limit.rate == 50

    def test_pressure_lowers_the_rate(self):
        """A limit percentage of 0.99 lowers the rate before any 429."""
        fake = FakeTime()
        limit = limiter(fake, rate=100, adaptive=True)
        fake.now += 1
        limit.on_response(0.99)

        assert limit.rate < 100

    def test_recovery_never_exceeds_configured(self):
        """Responses without pressure raise the rate back, but never above the configured one."""
        fake = FakeTime()
        limit = limiter(fake, rate=100, adaptive=True)
        limit.on_throttled()
        for _ in range(1000):
            fake.now += 1
            limit.on_response(None)

        assert limit.rate == 100

    def test_fixed_rate_ignores_signals(self):
        """With adaptation off, neither 429s nor pressure change the rate."""
        fake = FakeTime()
        limit = limiter(fake, rate=100, adaptive=False)
        limit.on_throttled()
        limit.on_response(1.5)

        assert limit.rate == 100
