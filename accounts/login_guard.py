"""Slow down password guessing: too many failed logins and the next attempts are refused.

Counted in the shared cache (Redis in production), so every web process sees the same count.
Two counters: one per username and client address, so an attacker cannot lock a real user
out from elsewhere, and a higher one per address, so spraying many usernames is caught too.
While either is over its limit the password is not even checked.
"""

from __future__ import annotations

import hashlib

from django.core.cache import cache

KEY_PREFIX = "login-failures"
FAILURE_WINDOW_SECONDS = 15 * 60
FAILURES_PER_USERNAME_AND_ADDRESS = 10
FAILURES_PER_ADDRESS = 50


def _keys(username: str, ip: str | None) -> tuple[str, str]:
    address = ip or "-"
    # Hashed: cache keys must be short and safe, and the cache need not hold typed usernames.
    pair = hashlib.sha256(f"{username.casefold()}\0{address}".encode()).hexdigest()
    return f"{KEY_PREFIX}:pair:{pair}", f"{KEY_PREFIX}:ip:{address}"


def login_locked(*, username: str, ip: str | None) -> bool:
    pair_key, ip_key = _keys(username, ip)
    counts = cache.get_many([pair_key, ip_key])
    return (
        counts.get(pair_key, 0) >= FAILURES_PER_USERNAME_AND_ADDRESS
        or counts.get(ip_key, 0) >= FAILURES_PER_ADDRESS
    )


def login_failure_note(*, username: str, ip: str | None) -> None:
    for key in _keys(username, ip):
        # add() starts the window on the first failure; incr() keeps it (no sliding).
        cache.add(key, 0, timeout=FAILURE_WINDOW_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add() and incr()
            cache.set(key, 1, timeout=FAILURE_WINDOW_SECONDS)


def login_failures_clear(*, username: str, ip: str | None) -> None:
    """A correct password resets the count for that username and address."""
    cache.delete(_keys(username, ip)[0])
