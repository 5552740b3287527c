"""What the transport reads from a request and from its response: a request's key (:func:`by_host`,
the default ``key=``) and job label, which methods may be retried (:data:`IDEMPOTENT_METHODS`,
the default ``retry_methods=``), and the pushback a response asks for (:func:`default_classify`,
the default ``classify=``, and its parser :func:`retry_after_seconds`).

Functions of one request or one response: no pool, no event loop.
"""

from __future__ import annotations

import math
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final

from .._core._exceptions import RetryAfter
from .._core._ratelimit_headers import parse_headers

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CLASSIFY_BODY_LIMIT",
    "IDEMPOTENT_METHODS",
    "by_host",
    "default_classify",
    "request_label",
    "retry_after_seconds",
    "small_body",
]

#: The methods that are safe to send twice (RFC 9110, 9.2.2): the only ones retried by default.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

#: The statuses that push back (the server asks for a pause): 429 Too Many Requests and
#: 503 Service Unavailable.
_PUSHBACK: Final = frozenset({429, 503})

#: The largest body (its ``Content-Length``, in bytes) read for ``classify=`` before a retry:
#: a refusal's body is small (``{"limits": ["tpm"]}``); a bigger or unsized one is not read.
CLASSIFY_BODY_LIMIT: Final = 64 * 1024


def default_classify(response: httpx.Response) -> RetryAfter | None:
    """The pushback a response asks for, as :class:`PoolTransport` reads it by default.

    - A 429 or 503 with a readable ``Retry-After`` (seconds or an HTTP date): a pushback of
      that delay;
    - a 429 without one, whose rate-limit headers show a budget exhausted (``remaining`` 0)
      with a reset: a pushback until the latest such reset;
    - else None (the transport still pushes back on a 429, for as long as the backoff says).

    Its scope is None: the request's key if it has one, else the pool. Only the headers are
    read, never the body. Wrap it to scope a refusal by what the server said::

        def classify(response):
            pushback = default_classify(response)
            if pushback is not None and response.json().get("limits") == ["tpm"]:
                return RetryAfter(pushback.seconds, scope="tpm")
            return pushback

    .. versionadded:: 0.3
    """
    status = response.status_code
    if status not in _PUSHBACK:
        return None
    delay = retry_after_seconds(response)
    if delay is None and status == 429:
        # On a clock of 0: each reset_at is then the delay to it.
        report = parse_headers(response.headers, 0.0, time.time())
        resets = [
            budget.reset_at
            for budget in report.budgets
            if budget.remaining < 1 and budget.reset_at is not None
        ]
        if resets:
            delay = max(resets)
    return None if delay is None else RetryAfter(delay)


def by_host(request: httpx.Request) -> str:
    """The default key of a request: its host, with the port when it is not the scheme's
    default (``"api.example.com"``, ``"127.0.0.1:8000"``)."""
    url = request.url
    port = url.port
    return url.host if port is None else f"{url.host}:{port}"


def retry_after_seconds(response: httpx.Response, now: float | None = None) -> float | None:
    """The delay a response's ``Retry-After`` asks for, in seconds (>= 0), or None.

    Both forms of RFC 9110 (10.2.3) are read: a number of seconds (decimals are accepted), or an
    HTTP date, counted from *now* (default: :func:`time.time`). A date in the past gives 0; a
    missing or unreadable header gives None.
    """
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(seconds, 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def request_label(request: httpx.Request) -> str:
    """The job label of *request*: ``"GET https://example.com/a"``, without the URL's user
    info or query (a label goes to logs and spans, and API keys often travel in a query
    string: ``?key=...``)."""
    url = request.url
    if url.userinfo or url.query:
        url = url.copy_with(username=None, password=None, query=None)
    return f"{request.method} {url}"


def small_body(response: httpx.Response) -> bool:
    """True if *response* states a body of at most :data:`CLASSIFY_BODY_LIMIT` bytes."""
    length = response.headers.get("content-length", "")
    return length.isdigit() and int(length) <= CLASSIFY_BODY_LIMIT
