"""The one small interface every supplier adapter implements, and the retry policy they share.

An adapter names its regions (a cloud's regions, an IDC feed's sites) and fetches one region's
offers at a time, so a refresh can run regions in parallel and keep a failed region's last good
data. Everything downstream sees only ``Offer``s; nothing knows which adapter made them.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gpu_supply.offer import Offer
from pricing.query import Scope

T = TypeVar("T")

RETRY_ATTEMPTS = 5
RETRY_BASE_SECONDS = 0.5  # first back-off; doubles per attempt, with full jitter
RETRY_CAP_SECONDS = 8.0


class MissingCredentials(Exception):
    """The supplier's standard credential chain found nothing: the provider is skipped, not failed."""


class TransientError(Exception):
    """Throttling, a timeout or a 5xx: worth retrying."""


@dataclass(frozen=True)
class RegionFetch:
    """What fetching one unit (a cloud region, an IDC feed) produced: its offers, or the error that
    keeps its last good ones. ``scopes`` are the (provider, region, source) it speaks for."""

    provider: str
    unit: str
    scopes: tuple[Scope, ...]
    offers: tuple[Offer, ...] = ()
    error: str | None = None
    attempts: int = 1
    unknown_gpus: tuple[str, ...] = ()  # supplier GPU names the registry does not know (offers kept raw)
    malformed: tuple[str, ...] = ()  # rows that could not be read, with what they were about
    # (instance type, pricing) whose rows were malformed: their last good offers stay current
    protected: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None


class Adapter(Protocol):
    name: str  # the provider name its offers carry

    def regions(self, wanted: Sequence[str] | None) -> list[str]:
        """Units to fetch (all when ``wanted`` is None); raises MissingCredentials."""

    def scopes(self, unit: str) -> tuple[Scope, ...]:
        """What a unit's fetch speaks for in the store: (provider, region or None, source or None)."""

    def fetch(self, unit: str) -> RegionFetch:
        """One unit's offers; raises on failure (after retrying what may pass)."""


def retrying(call: Callable[[], T], *, is_transient: Callable[[BaseException], bool],
             attempts: int = RETRY_ATTEMPTS, sleep: Callable[[float], None] | None = None,
             jitter: Callable[[], float] = random.random) -> tuple[T, int]:
    """``call()`` with exponential back-off and full jitter on transient errors; returns (result,
    attempts used). The last error propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return call(), attempt
        except Exception as error:  # noqa: BLE001 - classified just below
            if attempt == attempts or not is_transient(error):
                error.attempts = attempt  # for the refresh report
                raise
            (sleep or time.sleep)(jitter() * min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempt - 1)))
    raise AssertionError("unreachable")


# URLs in error messages lose their credentials (user:password@) and query strings (tokens, signatures).
_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?:[^/\s@'\"]+@)?(?P<rest>[^\s?#'\"]*)(?:[?#][^\s'\"]*)?",
                  re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every URL stripped of credentials and query string."""
    return _URL.sub(lambda match: match["scheme"] + match["rest"], text)


def describe(error: BaseException) -> str:
    """A one-line error for reports, logs and the store: the type and message, with URLs redacted
    (never headers or request bodies)."""
    message = redact(" ".join(str(error).split()))
    return f"{type(error).__name__}: {message}"[:300] if message else type(error).__name__
