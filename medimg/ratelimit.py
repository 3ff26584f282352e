"""Fixed-window counters in the shared cache: how many times something happened per client per
window (registrations per address per hour, anonymous refusals per address per minute).

The cache is Redis in production (settings refuse to start without it), so every process
counts together; `cache.add` then `cache.incr` is atomic there and in the local-memory cache.
A counter lives one window (plus a little), so nothing needs purging.
"""

from __future__ import annotations

import time

from django.core.cache import cache

# Part of every key. Tests give each test its own (`rate_limits_reset`), so one test's
# requests never use up another's allowance; production never changes it.
_namespace = "v1"


def _window(window_seconds: int, at: float | None = None) -> int:
    return int((time.time() if at is None else at) // window_seconds)


def _key(scope: str, ident: str, window: int) -> str:
    return f"ratelimit:{_namespace}:{scope}:{ident}:{window}"


def rate_limit_hit(scope: str, ident: str, *, window_seconds: int) -> int:
    """Count one event of `scope` for `ident` (a client address) in the current window and
    return how many there have been in it, this one included."""
    key = _key(scope, ident, _window(window_seconds))
    cache.add(key, 0, timeout=window_seconds + 5)
    try:
        return int(cache.incr(key))
    except ValueError:  # The entry expired between add and incr: a new window.
        cache.add(key, 1, timeout=window_seconds + 5)
        return 1


def rate_limit_count(scope: str, ident: str, *, window_seconds: int, windows_ago: int = 0) -> int:
    """How many events of `scope` `ident` had in the current window (or one before it)."""
    window = _window(window_seconds) - windows_ago
    return int(cache.get(_key(scope, ident, window)) or 0)


def rate_limit_retry_after(window_seconds: int) -> int:
    """Seconds until the current window ends."""
    return max(1, int(window_seconds - time.time() % window_seconds))


def rate_limits_reset() -> None:
    """Start every counter from zero (tests): later keys use a new namespace; the old ones
    expire on their own."""
    global _namespace
    _namespace = f"t{time.monotonic_ns()}"
