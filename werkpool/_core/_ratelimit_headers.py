"""What a server's rate-limit headers say about its budgets: "limit X has R of L left, reset at T".

A small registry of parsers, one per header dialect, each mapping a response's headers to zero
or more frozen :class:`Budget` records, and :func:`parse_headers`, which runs them and reads
``Retry-After`` beside them. The dialects:

- ``"openai"``: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets written as Go
  durations (``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``);
- ``"anthropic"``: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
  {limit,remaining,reset}``, resets as RFC 3339 dates;
- ``"github"``: ``x-ratelimit-{limit,remaining,used,reset,resource}``, the reset in epoch
  seconds (the common ``X-RateLimit-*`` convention of many other APIs too);
- ``"ietf"``: the ``RateLimit`` and ``RateLimit-Policy`` structured fields of
  draft-ietf-httpapi-ratelimit-headers-10/-11 (``"default";r=50;t=30`` and
  ``"default";q=100;w=10``);
- ``"ietf-draft-old"``: the older drafts' ``RateLimit-Limit``, ``RateLimit-Remaining`` and
  ``RateLimit-Reset``.

Headers come from a server the client may not trust, or through a proxy that mangles them: a
value that is malformed (garbage, a negative, NaN or infinity, a number above 2**53, a date out
of range, a value over :data:`MAX_VALUE_LENGTH` characters) is ignored and its field's name
counted in :attr:`HeaderReport.ignored_fields`; nothing here raises on a header's content. A
reset far in the future (year 9999) is kept as it is: the consumer clamps it.

Times: *now* is the pool's clock (what the budgets' ``reset_at`` and the report's
``retry_after_at`` are on), *wall* is :func:`time.time` at the same moment, used only to turn an
absolute date into a delay. A reset date already past is read as *now*.

No event loop and no import of the rest of werkpool: pure functions of the headers and the
clocks given, so that the pool, the httpx transport and a job reporting its headers share them.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import parsedate_tz
from types import MappingProxyType
from typing import Final, cast, final

__all__ = [
    "ANTHROPIC",
    "DEFAULT_PARSERS",
    "GITHUB",
    "IETF",
    "IETF_DRAFT_OLD",
    "MAX_NUMBER",
    "MAX_VALUE_LENGTH",
    "OPENAI",
    "PARSERS",
    "Budget",
    "HeaderFields",
    "HeaderParser",
    "HeaderReport",
    "less_sent",
    "parse_headers",
]

#: A field value longer than this (in characters) is ignored unread: no dialect needs more, and
#: a megabyte of header must not cost a megabyte of parsing.
MAX_VALUE_LENGTH: Final = 1000

#: The largest count or number of seconds read (2**53: every integer up to it is exact as a
#: float). Above it a value is taken as hostile or broken, and ignored.
MAX_NUMBER: Final = float(2**53)

#: An epoch-or-delay reset (``X-RateLimit-Reset``, ``RateLimit-Reset``) at or above this is
#: read as epoch seconds, below it as seconds from now. 10**9 s is 2001-09-09 as a date, and
#: 31 years as a delay: no server means either of those, so the two readings never overlap.
#: GitHub and GitLab send epoch seconds, the IETF drafts and many others a delay.
EPOCH_THRESHOLD: Final = 1e9

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

# A name taken from a header (GitHub's resource): visible ASCII, not too long.
_NAME: Final = re.compile(r"[!-~]{1,100}", re.ASCII)

_ABSENT: Final = object()


@final
@dataclass(frozen=True, slots=True)
class Budget:
    """
    What a server says of one of its limits: *name* has *remaining* of *limit* left, and more
    comes at *reset_at*.

    The consumer lowers its own limit's level to *remaining* when that is lower (it never raises
    it above what is configured), and clamps a *reset_at* far away.
    """

    #: The dialect that read it: ``"openai"``, ``"anthropic"``, ``"github"``, ``"ietf"`` or
    #: ``"ietf-draft-old"``.
    source: str
    #: The limit's name: ``"requests"``, ``"tokens"``, ``"input-tokens"``, ``"output-tokens"``
    #: (OpenAI, Anthropic), the resource (GitHub: ``"core"``, ``"search"``...), the policy's
    #: name (IETF), or ``"default"`` when the headers name none.
    name: str
    #: The units left (>= 0).
    remaining: float
    #: The limit's size per window, when the headers state it.
    limit: float | None = None
    #: When more units come (a window's reset), on the pool's clock (the *now* given to
    #: :func:`parse_headers`); None when the headers do not say.
    reset_at: float | None = None
    #: The unit counted: None for requests, else ``"tokens"``, ``"input-tokens"``,
    #: ``"output-tokens"``, or an IETF policy's quota unit (``"content-bytes"``...).
    unit: str | None = None
    #: The window's length in seconds, when the headers state it (an IETF policy's ``w``).
    window: float | None = None


@final
@dataclass(frozen=True, slots=True)
class HeaderReport:
    """What :func:`parse_headers` read from one response."""

    #: The budgets stated, in the order of the parsers, then of the headers.
    budgets: tuple[Budget, ...] = ()
    #: When ``Retry-After`` lets the client retry, on the pool's clock (*now* for a date in the
    #: past or ``Retry-After: 0``); None without a readable ``Retry-After``.
    retry_after_at: float | None = None
    #: The names (lower case) of the fields ignored as malformed, each once, in reading order.
    ignored_fields: tuple[str, ...] = ()

    @property
    def ignored(self) -> int:
        """How many fields were ignored as malformed."""
        return len(self.ignored_fields)


@final
class HeaderFields:
    """
    A parser's view of one response's rate-limit fields: lower-case names, and readers that
    check a value and return None for a field that is absent or malformed, counting the latter.

    :param fields: the fields by lower-case name; None stands for a value that is not a str
    :param now: the pool's clock
    :param wall: :func:`time.time` at *now*
    """

    __slots__ = ("_fields", "_ignored", "now", "wall")

    def __init__(self, fields: Mapping[str, str | None], now: float, wall: float) -> None:
        self._fields = fields
        self._ignored: dict[str, None] = {}  # an ordered set
        #: The pool's clock.
        self.now = now
        #: :func:`time.time` at :attr:`now`.
        self.wall = wall

    def __contains__(self, name: object) -> bool:
        return name in self._fields

    def names(self) -> Iterable[str]:
        """The lower-case names of the fields."""
        return self._fields.keys()

    @property
    def ignored(self) -> tuple[str, ...]:
        """The names of the fields ignored so far."""
        return tuple(self._ignored)

    def ignore(self, name: str) -> None:
        """Count field *name* as malformed (once, however often it is called)."""
        self._ignored[name] = None

    def text(self, name: str) -> str | None:
        """The value of field *name*, without surrounding whitespace; None if it is absent, or
        malformed (not a str, or longer than :data:`MAX_VALUE_LENGTH`)."""
        value = self._fields.get(name, _ABSENT)
        if value is _ABSENT:
            return None
        if not isinstance(value, str) or len(value) > MAX_VALUE_LENGTH:
            self.ignore(name)
            return None
        return value.strip(" \t")

    def _read(self, name: str, convert: Callable[[str], float | None]) -> float | None:
        text = self.text(name)
        if text is None:
            return None
        value = convert(text)
        if value is None:
            self.ignore(name)
        return value

    def number(self, name: str) -> float | None:
        """Field *name* as a count: a decimal from 0 to :data:`MAX_NUMBER`."""
        return self._read(name, _decimal)

    def reset_after_seconds(self, name: str) -> float | None:
        """Field *name* as seconds from now (a decimal), made a time on the pool's clock."""
        seconds = self._read(name, _decimal)
        return None if seconds is None else self.now + seconds

    def reset_after_duration(self, name: str) -> float | None:
        """Field *name* as a Go duration (``6m0s``) or plain seconds, made a time on the pool's
        clock."""
        seconds = self._read(name, _duration)
        return None if seconds is None else self.now + seconds

    def reset_at_epoch(self, name: str) -> float | None:
        """Field *name* as epoch seconds, or seconds from now if below
        :data:`EPOCH_THRESHOLD`, or an HTTP date, made a time on the pool's clock."""
        text = self.text(name)
        if text is None:
            return None
        number = _decimal(text)
        if number is not None:
            return self.now + number if number < EPOCH_THRESHOLD else self._at_wall(number)
        when = _http_date(text)
        if when is None:
            self.ignore(name)
            return None
        return self._at_wall(when)

    def reset_at_rfc3339(self, name: str) -> float | None:
        """Field *name* as an RFC 3339 date, made a time on the pool's clock."""
        when = self._read(name, _rfc3339)
        return None if when is None else self._at_wall(when)

    def retry_after_at(self, name: str = "retry-after") -> float | None:
        """Field *name* as a ``Retry-After`` (RFC 9110, 10.2.3): seconds (decimals accepted) or
        an HTTP date, made a time on the pool's clock."""
        text = self.text(name)
        if text is None:
            return None
        seconds = _decimal(text)
        if seconds is not None:
            return self.now + seconds
        when = _http_date(text)
        if when is None:
            self.ignore(name)
            return None
        return self._at_wall(when)

    def structured_list(self, name: str) -> list[tuple[object, dict[str, object]]] | None:
        """Field *name* as a structured-field List (RFC 9651, 4.2): its members, each a bare
        item (or a list, for an inner list) and its parameters."""
        text = self.text(name)
        if text is None:
            return None
        try:
            return _SFParser(text).parse_list()
        except _Malformed:
            self.ignore(name)
            return None

    def _at_wall(self, when: float) -> float:
        # A date already past means "now" (the window has reset), not a time before now.
        return self.now + max(when - self.wall, 0.0)


@final
@dataclass(frozen=True, slots=True)
class HeaderParser:
    """One header dialect: which fields it reads, and how it reads them."""

    #: The dialect's name, the :attr:`Budget.source` of what it reads.
    source: str
    #: Lower-case prefixes of the field names it reads: a response with no field starting with
    #: one of them is not given to :attr:`read`.
    prefixes: tuple[str, ...]
    #: Reads the budgets from the fields; it counts what it ignores with
    #: :meth:`HeaderFields.ignore` (its readers do) and never raises on a field's content.
    read: Callable[[HeaderFields], Iterable[Budget]]


# --- the dialects --------------------------------------------------------------------------

_OPENAI_KINDS: Final = tuple(
    (
        kind,
        unit,
        f"x-ratelimit-remaining-{kind}",
        f"x-ratelimit-limit-{kind}",
        f"x-ratelimit-reset-{kind}",
    )
    for kind, unit in (("requests", None), ("tokens", "tokens"))
)


def _read_openai(fields: HeaderFields) -> list[Budget]:
    budgets = []
    for kind, unit, remaining_name, limit_name, reset_name in _OPENAI_KINDS:
        if remaining_name not in fields:
            continue
        remaining = fields.number(remaining_name)
        limit = fields.number(limit_name)
        reset_at = fields.reset_after_duration(reset_name)
        if remaining is not None:
            budgets.append(Budget("openai", kind, remaining, limit, reset_at, unit))
    return budgets


_ANTHROPIC_KINDS: Final = tuple(
    (
        kind,
        unit,
        f"anthropic-ratelimit-{kind}-remaining",
        f"anthropic-ratelimit-{kind}-limit",
        f"anthropic-ratelimit-{kind}-reset",
    )
    for kind, unit in (
        ("requests", None),
        ("tokens", "tokens"),
        ("input-tokens", "input-tokens"),
        ("output-tokens", "output-tokens"),
    )
)


def _read_anthropic(fields: HeaderFields) -> list[Budget]:
    budgets = []
    for kind, unit, remaining_name, limit_name, reset_name in _ANTHROPIC_KINDS:
        if remaining_name not in fields:
            continue
        remaining = fields.number(remaining_name)
        limit = fields.number(limit_name)
        reset_at = fields.reset_at_rfc3339(reset_name)
        if remaining is not None:
            budgets.append(Budget("anthropic", kind, remaining, limit, reset_at, unit))
    return budgets


def _read_github(fields: HeaderFields) -> list[Budget]:
    if "x-ratelimit-remaining" not in fields and "x-ratelimit-used" not in fields:
        return []
    limit, window = _limit_and_window(fields, "x-ratelimit-limit")
    remaining = fields.number("x-ratelimit-remaining")
    if remaining is None:
        # GitHub sends both; from limit and used, the remaining can be worked out.
        used = fields.number("x-ratelimit-used")
        if used is None or limit is None:
            return []
        remaining = max(limit - used, 0.0)
    name = "default"
    resource = fields.text("x-ratelimit-resource")
    if resource is not None:
        if _NAME.fullmatch(resource):
            name = resource
        else:
            fields.ignore("x-ratelimit-resource")
    reset_at = fields.reset_at_epoch("x-ratelimit-reset")
    return [Budget("github", name, remaining, limit, reset_at, None, window)]


def _read_ietf(fields: HeaderFields) -> list[Budget]:
    # RateLimit-Policy only adds to what RateLimit says (the quota and window of a policy): on
    # its own it states no remaining, so it is not read.
    items = fields.structured_list("ratelimit")
    if not items:
        return []
    policies = _ietf_policies(fields) if "ratelimit-policy" in fields else {}
    budgets = []
    for value, params in items:
        if not _is_name(value):
            fields.ignore("ratelimit")
            continue
        assert isinstance(value, str)
        remaining = _sf_number(params.get("r"))
        reset = params.get("t")
        seconds = None if reset is None else _sf_number(reset)
        if remaining is None or (reset is not None and seconds is None):
            fields.ignore("ratelimit")
            continue
        limit, window, unit = policies.get(value, (None, None, None))
        reset_at = None if seconds is None else fields.now + seconds
        budgets.append(Budget("ietf", value, remaining, limit, reset_at, unit, window))
    return budgets


def _ietf_policies(fields: HeaderFields) -> dict[str, tuple[float, float | None, str | None]]:
    """RateLimit-Policy's policies by name: quota, window, and unit (None for requests)."""
    policies: dict[str, tuple[float, float | None, str | None]] = {}
    for value, params in fields.structured_list("ratelimit-policy") or ():
        if type(value) is int:
            continue  # an older draft's policy ("100;w=10"): RateLimit-Limit's business
        quota = _sf_number(params.get("q"))
        window_value = params.get("w")
        window = None if window_value is None else _sf_number(window_value)
        unit_value = params.get("qu", "requests")
        if (
            not _is_name(value)
            or quota is None
            or (window_value is not None and not window)  # absent, or > 0
            or not _is_name(unit_value)
        ):
            fields.ignore("ratelimit-policy")
            continue
        assert isinstance(value, str)
        assert isinstance(unit_value, str)
        unit = None if unit_value in ("requests", "request") else str(unit_value)
        policies.setdefault(value, (quota, window, unit))  # the first of a name wins
    return policies


def _read_ietf_draft_old(fields: HeaderFields) -> list[Budget]:
    if "ratelimit-remaining" not in fields:
        return []
    remaining = fields.number("ratelimit-remaining")
    limit, window = _limit_and_window(fields, "ratelimit-limit")
    # A delay by the drafts; some servers (GitLab) send epoch seconds in it.
    reset_at = fields.reset_at_epoch("ratelimit-reset")
    if remaining is None:
        return []
    return [Budget("ietf-draft-old", "default", remaining, limit, reset_at, None, window)]


def _limit_and_window(fields: HeaderFields, name: str) -> tuple[float | None, float | None]:
    """A limit field: a count (``100``), or, as the early IETF drafts wrote it and some
    ``X-RateLimit-Limit`` still do, a list of quotas with windows (``100, 100;w=10``): the first
    quota, with the window of that quota's policy if one is given."""
    text = fields.text(name)
    if text is None:
        return None, None
    limit = _decimal(text)
    if limit is not None:
        return limit, None
    try:
        members = _SFParser(text).parse_list()
    except _Malformed:
        members = []
    quotas = [(_sf_number(value), params) for value, params in members]
    if not quotas or any(quota is None for quota, _ in quotas):
        fields.ignore(name)
        return None, None
    first = quotas[0][0]
    window = None
    for quota, params in quotas:
        if quota == first and "w" in params:
            window = _sf_number(params["w"]) or None  # a window must be > 0
            if window is None:
                fields.ignore(name)
            break
    return first, window


OPENAI: Final = HeaderParser("openai", ("x-ratelimit-",), _read_openai)
"""OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (also sent by Groq and
other OpenAI-compatible APIs)."""
ANTHROPIC: Final = HeaderParser("anthropic", ("anthropic-ratelimit-",), _read_anthropic)
"""Anthropic's ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*``."""
GITHUB: Final = HeaderParser("github", ("x-ratelimit-",), _read_github)
"""GitHub's ``x-ratelimit-{limit,remaining,used,reset,resource}``, the common convention."""
IETF: Final = HeaderParser("ietf", ("ratelimit",), _read_ietf)
"""The ``RateLimit`` / ``RateLimit-Policy`` structured fields of the IETF draft (-10, -11)."""
IETF_DRAFT_OLD: Final = HeaderParser("ietf-draft-old", ("ratelimit-",), _read_ietf_draft_old)
"""The older IETF drafts' ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset``."""

#: The parsers :func:`parse_headers` runs by default, all of them.
DEFAULT_PARSERS: Final[tuple[HeaderParser, ...]] = (
    OPENAI,
    ANTHROPIC,
    GITHUB,
    IETF,
    IETF_DRAFT_OLD,
)

#: The parsers by :attr:`HeaderParser.source`.
PARSERS: Final[Mapping[str, HeaderParser]] = MappingProxyType(
    {parser.source: parser for parser in DEFAULT_PARSERS}
)

_RETRY_AFTER: Final = "retry-after"
_DEFAULT_PREFIXES: Final = (
    _RETRY_AFTER,
    *dict.fromkeys(prefix for parser in DEFAULT_PARSERS for prefix in parser.prefixes),
)
_EMPTY: Final = HeaderReport()


def parse_headers(
    headers: Mapping[str, str],
    now: float,
    wall: float,
    parsers: Iterable[HeaderParser] = DEFAULT_PARSERS,
) -> HeaderReport:
    """
    The budgets and the ``Retry-After`` that a response's *headers* state.

    A malformed field is ignored and counted (:attr:`HeaderReport.ignored_fields`): nothing
    raises on what the headers hold. A response with none of the parsers' fields costs one pass
    over the header names.

    :param headers: the response's headers, any case-insensitive or plain mapping of str (an
        :class:`httpx.Headers`, a dict with names in any case: names that differ only in case
        are joined with ``", "``, as repeated fields are)
    :param now: the pool's clock, which the times of the report are on
    :param wall: :func:`time.time` at *now*, to read absolute dates
    :param parsers: the dialects to read (default: all of :data:`DEFAULT_PARSERS`)
    :raises TypeError: if *headers* is not a mapping, *now* or *wall* not a number, or
        *parsers* holds something else than :class:`HeaderParser`
    :raises ValueError: if *now* or *wall* is not finite
    """
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of str to str, not {type(headers).__name__}")
    _check_time(now, "now")
    _check_time(wall, "wall")
    if parsers is DEFAULT_PARSERS:
        chosen: tuple[HeaderParser, ...] = DEFAULT_PARSERS
        prefixes = _DEFAULT_PREFIXES
    else:
        chosen = _check_parsers(parsers)
        prefixes = (
            _RETRY_AFTER,
            *dict.fromkeys(prefix for parser in chosen for prefix in parser.prefixes),
        )
    fields: dict[str, str | None] = {}
    # Untyped callers and odd mappings may hold anything: a name or value that is not a str is
    # no dialect's (a value not a str is counted as malformed, if its name is a dialect's).
    # The names only, and a value only for a name that matches: httpx.Headers builds its
    # items() with every value joined, which costs more than the whole scan.
    mapping = cast("Mapping[object, object]", headers)
    for key in mapping:
        if not isinstance(key, str):
            continue  # not a name any dialect uses
        name = key.lower()
        if not name.startswith(prefixes):
            continue
        value = mapping[key]
        text = value if isinstance(value, str) else None
        if name in fields:
            # The same field twice (a dict with "RateLimit" and "ratelimit"): one field whose
            # members are both, as HTTP joins repeated fields (RFC 9110, 5.3).
            earlier = fields[name]
            text = None if earlier is None or text is None else f"{earlier}, {text}"
        fields[name] = text
    if not fields:
        return _EMPTY
    reader = HeaderFields(fields, float(now), float(wall))
    budgets: list[Budget] = []
    for parser in chosen:
        if any(name.startswith(parser.prefixes) for name in fields):
            budgets.extend(parser.read(reader))
    retry_after_at = reader.retry_after_at(_RETRY_AFTER)
    return HeaderReport(tuple(budgets), retry_after_at, reader.ignored)


def _check_time(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a finite number of seconds, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")


def _check_parsers(parsers: object) -> tuple[HeaderParser, ...]:
    if isinstance(parsers, (str, bytes)) or not isinstance(parsers, Iterable):
        raise TypeError(
            f"parsers must be an iterable of HeaderParser, not {type(parsers).__name__}"
        )
    chosen = tuple(parsers)  # pyright: ignore[reportUnknownArgumentType]
    for parser in chosen:
        if not isinstance(parser, HeaderParser):
            raise TypeError(f"parsers must hold HeaderParser, not {type(parser).__name__}")
    return chosen


# --- values ----------------------------------------------------------------------------------


def _decimal(text: str) -> float | None:
    """*text* as a non-negative decimal up to :data:`MAX_NUMBER`, or None."""
    if not _DECIMAL.fullmatch(text):
        return None
    value = float(text)
    return value if value <= MAX_NUMBER else None


def _duration(text: str) -> float | None:
    """*text* as a Go duration (``1h2m3.5s``) or plain seconds, in seconds, or None."""
    seconds = _decimal(text)
    if seconds is not None:
        return seconds
    if not _GO_DURATION.fullmatch(text):
        return None
    total = 0.0
    for number, unit in _GO_PART.findall(text):
        total += float(number) * _GO_UNITS[unit]  # a huge number is inf, refused below
    return total if total <= MAX_NUMBER else None


def _rfc3339(text: str) -> float | None:
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


def _http_date(text: str) -> float | None:
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


def _is_name(value: object) -> bool:
    """A String or Token bare item, as an IETF policy's name or unit is."""
    return type(value) is str or type(value) is _Token


def _sf_number(value: object) -> float | None:
    """A non-negative Integer or Decimal parameter, up to :data:`MAX_NUMBER`, or None."""
    if type(value) is not int and type(value) is not float:
        return None  # absent, or a bool, a string...
    assert isinstance(value, (int, float))
    if not 0 <= value <= MAX_NUMBER:
        return None
    return float(value)


# --- structured fields (RFC 9651, which RFC 8941 was before it) -----------------------------


class _Malformed(Exception):
    """A structured field that does not parse."""


class _Token(str):
    """A Token bare item (``default``), told apart from a String (``"default"``)."""

    __slots__ = ()


class _ByteSequence(str):
    """A Byte Sequence bare item (``:cHsdsRa894=:``), kept as its base64 text (never decoded:
    no dialect uses its bytes)."""

    __slots__ = ()


class _Date(int):
    """A Date bare item (``@1659578233``)."""

    __slots__ = ()


class _DisplayString(str):
    """A Display String bare item (``%"caf%c3%a9"``)."""

    __slots__ = ()


_DIGITS: Final = frozenset("0123456789")
_ALPHA: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LCALPHA: Final = frozenset("abcdefghijklmnopqrstuvwxyz")
_TCHAR: Final = _DIGITS | _ALPHA | frozenset("!#$%&'*+-.^_`|~")
_TOKEN_CHARS: Final = _TCHAR | frozenset(":/")
_KEY_CHARS: Final = _LCALPHA | _DIGITS | frozenset("_-.*")
_BASE64: Final = _ALPHA | _DIGITS | frozenset("+/=")
_HEX_LOWER: Final = frozenset("0123456789abcdef")


@final
class _SFParser:
    """The parsing algorithms of RFC 9651, section 4.2, for a List; raises :exc:`_Malformed`.

    Values: Integer as int, Decimal as float, String as str, Token as :class:`_Token`, Byte
    Sequence as :class:`_ByteSequence`, Boolean as bool, Date as :class:`_Date`, Display String
    as :class:`_DisplayString`; an inner list as a list of (item, parameters).
    """

    __slots__ = ("_at", "_text")

    def __init__(self, text: str) -> None:
        self._text = text.strip(" ")
        self._at = 0

    def _peek(self) -> str:
        return self._text[self._at] if self._at < len(self._text) else ""

    def parse_list(self) -> list[tuple[object, dict[str, object]]]:
        members: list[tuple[object, dict[str, object]]] = []
        text = self._text
        end = len(text)
        while self._at < end:
            if self._peek() == "(":
                members.append(self._inner_list())
            else:
                members.append(self._item())
            while self._at < end and text[self._at] in " \t":
                self._at += 1
            if self._at == end:
                return members
            if text[self._at] != ",":
                raise _Malformed
            self._at += 1
            while self._at < end and text[self._at] in " \t":
                self._at += 1
            if self._at == end:
                raise _Malformed  # a trailing comma
        return members

    def _inner_list(self) -> tuple[object, dict[str, object]]:
        self._at += 1  # "("
        items: list[tuple[object, dict[str, object]]] = []
        while True:
            while self._peek() == " ":
                self._at += 1
            char = self._peek()
            if char == ")":
                self._at += 1
                return items, self._parameters()
            if not char:
                raise _Malformed
            items.append(self._item())
            if self._peek() not in (" ", ")"):
                raise _Malformed

    def _item(self) -> tuple[object, dict[str, object]]:
        value = self._bare_item()
        return value, self._parameters()

    def _parameters(self) -> dict[str, object]:
        params: dict[str, object] = {}
        while self._peek() == ";":
            self._at += 1
            while self._peek() == " ":
                self._at += 1
            key = self._key()
            value: object = True
            if self._peek() == "=":
                self._at += 1
                value = self._bare_item()
            params[key] = value  # a repeated key: the last one wins (4.2.3.2)
        return params

    def _key(self) -> str:
        text = self._text
        start = self._at
        if not (start < len(text) and (text[start] in _LCALPHA or text[start] == "*")):
            raise _Malformed
        self._at += 1
        while self._at < len(text) and text[self._at] in _KEY_CHARS:
            self._at += 1
        return text[start : self._at]

    def _bare_item(self) -> object:
        char = self._peek()
        if char == "-" or char in _DIGITS:
            return self._number()
        if char == '"':
            return self._string()
        if char == "*" or char in _ALPHA:
            return self._token()
        if char == ":":
            return self._byte_sequence()
        if char == "?":
            return self._boolean()
        if char == "@":
            self._at += 1
            number = self._number()
            if type(number) is not int:
                raise _Malformed
            return _Date(number)
        if char == "%":
            return self._display_string()
        raise _Malformed

    def _number(self) -> int | float:
        text = self._text
        sign = 1
        if self._peek() == "-":
            sign = -1
            self._at += 1
        if self._peek() not in _DIGITS:
            raise _Malformed
        start = self._at
        point = -1
        while self._at < len(text):
            char = text[self._at]
            if char in _DIGITS:
                pass
            elif char == "." and point < 0:
                if self._at - start > 12:
                    raise _Malformed
                point = self._at
            else:
                break
            self._at += 1
            length = self._at - start
            if (point < 0 and length > 15) or (point >= 0 and length > 16):
                raise _Malformed
        number = text[start : self._at]
        if point < 0:
            return sign * int(number)
        if number.endswith(".") or len(number) - (point - start) - 1 > 3:
            raise _Malformed
        return sign * float(number)

    def _string(self) -> str:
        text = self._text
        self._at += 1  # the opening quote
        chars: list[str] = []
        while self._at < len(text):
            char = text[self._at]
            self._at += 1
            if char == "\\":
                if self._at >= len(text) or text[self._at] not in '"\\':
                    raise _Malformed
                chars.append(text[self._at])
                self._at += 1
            elif char == '"':
                return "".join(chars)
            elif not " " <= char <= "~":
                raise _Malformed
            else:
                chars.append(char)
        raise _Malformed  # no closing quote

    def _token(self) -> _Token:
        text = self._text
        start = self._at
        self._at += 1
        while self._at < len(text) and text[self._at] in _TOKEN_CHARS:
            self._at += 1
        return _Token(text[start : self._at])

    def _byte_sequence(self) -> _ByteSequence:
        text = self._text
        self._at += 1  # the opening colon
        start = self._at
        while self._at < len(text) and text[self._at] in _BASE64:
            self._at += 1
        if self._peek() != ":":
            raise _Malformed
        self._at += 1
        return _ByteSequence(text[start : self._at - 1])

    def _boolean(self) -> bool:
        self._at += 1  # "?"
        char = self._peek()
        if char not in ("0", "1"):
            raise _Malformed
        self._at += 1
        return char == "1"

    def _display_string(self) -> _DisplayString:
        text = self._text
        if text[self._at : self._at + 2] != '%"':
            raise _Malformed
        self._at += 2
        data = bytearray()
        while self._at < len(text):
            char = text[self._at]
            self._at += 1
            if char == "%":
                digits = text[self._at : self._at + 2]
                if len(digits) != 2 or not set(digits) <= _HEX_LOWER:
                    raise _Malformed
                data.append(int(digits, 16))
                self._at += 2
            elif char == '"':
                try:
                    return _DisplayString(data.decode("utf-8"))
                except UnicodeDecodeError:
                    raise _Malformed from None
            elif not " " <= char <= "~":
                raise _Malformed
            else:
                data.append(ord(char))
        raise _Malformed  # no closing quote


def _unit_name(unit: str) -> str:
    """A unit's name compared: ``input_tokens`` and ``Input-Tokens`` are ``input-tokens``."""
    return unit.lower().replace("_", "-")


def less_sent(budget: Budget, later: Sequence[Mapping[str, float] | None]) -> Budget:
    """*budget* less the units of the attempts sent *later* than the one whose response stated
    it (each's cost, or 1 request): the server had not counted them yet, and without this every
    response in flight would hand out the same units again."""
    unit = budget.unit
    if unit is None:
        used = float(len(later))
    else:
        name = _unit_name(unit)
        used = sum(
            amount
            for cost in later
            if cost is not None
            for cost_unit, amount in cost.items()
            if _unit_name(cost_unit) == name
        )
    if not used:
        return budget
    return replace(budget, remaining=max(budget.remaining - used, 0.0))
