"""What a server's rate-limit headers say about its budgets: :func:`parse_headers`, which runs
the dialects' parsers over one response's headers and reads ``Retry-After`` beside them.

The concept's parts, each in its own module of ``_core``: the records it returns
(:mod:`._budgets`: :class:`Budget`, :class:`HeaderReport`, and :func:`less_sent`, re-exported
here for the callers of :func:`parse_headers`), the checked view of the fields a parser reads
(:mod:`._header_fields`), the dialects (:mod:`._header_dialects`), the value readers
(:mod:`._header_values`) and the structured-field parser (:mod:`._structured_fields`).

No event loop and no import of the rest of werkpool: pure functions of the headers and the
clocks given, so that the pool, the httpx transport and a job reporting its headers share them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final, cast

from ._budgets import Budget, HeaderReport, less_sent
from ._header_dialects import DEFAULT_PARSERS
from ._header_fields import HeaderFields, HeaderParser

__all__ = [
    "Budget",
    "HeaderReport",
    "less_sent",
    "parse_headers",
]

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
    given = cast("object", headers)  # checked at run time: untyped callers pass anything
    if not isinstance(given, Mapping):
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
    chosen: list[HeaderParser] = []
    for parser in cast("Iterable[object]", parsers):
        if not isinstance(parser, HeaderParser):
            raise TypeError(f"parsers must hold HeaderParser, not {type(parser).__name__}")
        chosen.append(parser)
    return tuple(chosen)
