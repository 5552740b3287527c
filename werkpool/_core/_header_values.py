"""The values of rate-limit header fields as servers write them: non-negative decimals, Go
durations (``1h2m3.5s``), RFC 3339 dates and HTTP dates, each read strictly or not at all.

Each reader returns None for what it does not read, never raises on the text: a header comes from
a server the client may not trust. A number above :data:`MAX_NUMBER` is refused as hostile or
broken, as are NaN, infinity, negatives and dates out of range.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from email.utils import parsedate_tz
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "MAX_NUMBER",
    "parse_decimal",
    "parse_duration",
    "parse_http_date",
    "parse_rfc3339",
]

#: The largest count or number of seconds read (2**53: every integer up to it is exact as a
#: float). Above it a value is taken as hostile or broken, and ignored.
MAX_NUMBER: Final = float(2**53)

# A non-negative decimal: digits, and maybe a fraction. Stricter than float(), which would take
# "nan", "inf", "1e400", "1_000", " +5" and Unicode digits.
_DECIMAL: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)

# A Go duration (time.ParseDuration, which OpenAI's resets are written in): one or more
# number-unit pairs ("1h2m3.5s", "20ms", "6m0s"). "ms" is tried before "m".
_GO_DURATION: Final = re.compile(
    r"(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+", re.ASCII
)
_GO_PART: Final = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)", re.ASCII)
_GO_UNITS: Final[Mapping[str, float]] = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # MICRO SIGN, as Go writes it
    "\u03bcs": 1e-6,  # GREEK SMALL LETTER MU, which Go accepts too
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}

# An RFC 3339 date-time (section 5.6): "2024-01-01T00:00:30Z", "2024-01-01T00:00:30.5+01:00".
_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)


def parse_decimal(text: str) -> float | None:
    """*text* as a non-negative decimal up to :data:`MAX_NUMBER`, or None."""
    if not _DECIMAL.fullmatch(text):
        return None
    value = float(text)
    return value if value <= MAX_NUMBER else None


def parse_duration(text: str) -> float | None:
    """*text* as a Go duration (``1h2m3.5s``) or plain seconds, in seconds, or None."""
    seconds = parse_decimal(text)
    if seconds is not None:
        return seconds
    if not _GO_DURATION.fullmatch(text):
        return None
    total = 0.0
    for number, unit in _GO_PART.findall(text):
        total += float(number) * _GO_UNITS[unit]  # a huge number is inf, refused below
    return total if total <= MAX_NUMBER else None


def parse_rfc3339(text: str) -> float | None:
    """*text* as an RFC 3339 date-time, in epoch seconds, or None."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    fraction, zulu, sign, offset_hours, offset_minutes = match.group(7, 8, 9, 10, 11)
    leap = second == 60  # a leap second (RFC 3339 allows it): the next second's start
    try:
        datetime(year, month, day, hour, minute, 59 if leap else second)  # the ranges
    except ValueError:
        return None
    epoch: float = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if fraction:
        epoch += float(fraction)
    if not zulu:
        hours, minutes = int(offset_hours), int(offset_minutes)
        if hours > 23 or minutes > 59:
            return None
        offset = hours * 3600 + minutes * 60
        epoch -= offset if sign == "+" else -offset
    return float(epoch)


def parse_http_date(text: str) -> float | None:
    """*text* as an HTTP date (RFC 9110, 5.6.7; the obsolete forms too), in epoch seconds, or
    None."""
    try:
        parts = parsedate_tz(text)
    except (TypeError, ValueError, IndexError, OverflowError):  # older Pythons raised some
        return None
    if parts is None:
        return None
    year, month, day, hour, minute, second = parts[:6]
    try:
        datetime(year, month, day, hour, minute, second)  # the ranges
    except (ValueError, OverflowError):
        return None
    offset = parts[9] or 0
    if abs(offset) >= 86400:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset)
