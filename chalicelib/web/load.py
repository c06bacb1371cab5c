"""Load: per-caller rate limits (429) and refusals when the process is full (503), both
with Retry-After."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator

from ..config import Settings, settings


class ServiceBusy(Exception):
    """Our capacity, not the caller's mistake: 503 with Retry-After (429 when the caller
    went over its own rate)."""

    def __init__(self, message: str, retry_after: float, status: int = 503):
        super().__init__(message)
        self.retry_after, self.status = retry_after, status


# Synchronous queries run at once per process (settings().sync_slots), beyond which callers
# are refused (503 and Retry-After) rather than queued until their time limit.
SYNC_WAIT_S = 2.0
_slots_lock = threading.Lock()
_sync_slots: threading.BoundedSemaphore | None = None  # made on first use


def _slots() -> threading.BoundedSemaphore:
    global _sync_slots
    with _slots_lock:
        if _sync_slots is None:
            _sync_slots = threading.BoundedSemaphore(settings().sync_slots)
        return _sync_slots


@contextlib.contextmanager
def sync_slot(wait: float = SYNC_WAIT_S) -> Iterator[None]:
    """Hold one of the process's synchronous query slots, or raise ServiceBusy."""
    slots = _slots()
    if not slots.acquire(timeout=wait):
        raise ServiceBusy(f"all {settings().sync_slots} synchronous query slots are busy; "
                          f"retry shortly, or submit the query as an asynchronous job", 5.0)
    try:
        yield
    finally:
        slots.release()


def rate_limiter(conf: Settings | None = None) -> RateLimiter | None:
    """The process's limiter: RATE_LIMIT requests a second per caller (bursts of
    RATE_BURST); 0 turns it off. One per pair of values, kept between requests. On AWS,
    API Gateway's stage throttling and usage plans limit first."""
    conf = conf or settings()
    return _limiter(conf.rate_limit, conf.rate_burst) if conf.rate_limit > 0 else None


@functools.cache
def _limiter(rate: float, burst: float) -> RateLimiter:
    return RateLimiter(rate, burst)


class RateLimiter:
    """A token bucket per caller: `rate` requests a second on average, bursts of `burst`.
    At most `max_callers` buckets are kept (the least recently seen are forgotten: a
    forgotten caller starts with a full bucket, which only errs on the generous side)."""

    def __init__(self, rate: float, burst: float, max_callers: int = 10_000):
        self.rate, self.burst, self.max_callers = rate, burst, max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, caller: str, now: float | None = None) -> None:
        """Take one token for `caller`, or raise ServiceBusy(429) saying when to retry."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            admitted = tokens >= 1.0
            self._buckets[caller] = (tokens - 1.0 if admitted else tokens, now)
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        if not admitted:
            wait = (1.0 - tokens) / self.rate
            raise ServiceBusy(f"too many requests from this client: at most {self.rate:g} a "
                              f"second (bursts of {self.burst:g}); retry in {wait:.1f} s",
                              wait, 429)


def client_key(headers: dict[str, str], context: dict | None, caller: str | None) -> str:
    """Who a rate limit counts against: the caller's identity, else its address (API
    Gateway's sourceIp; the local server's X-Client-Address, which it sets itself)."""
    if caller:
        return caller
    h = {k.lower(): v for k, v in (headers or {}).items()}
    ip = ((context or {}).get("identity") or {}).get("sourceIp")
    local = h.get("x-client-address")
    return "ip:" + str(local if local and ip in (None, "127.0.0.1") else ip)
