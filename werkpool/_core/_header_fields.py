"""What a header parser sees of one response: :class:`HeaderFields`, the rate-limit fields by
lower-case name with readers that check each value, and :class:`HeaderParser`, one dialect's
record (which fields it reads, and how).

Headers come from a server the client may not trust, or through a proxy that mangles them: a
value that is malformed (garbage, a negative, NaN or infinity, a number above 2**53, a date out
of range, a value over :data:`MAX_VALUE_LENGTH` characters) is read as absent, and its field's
name counted (:attr:`HeaderFields.ignored`); no reader raises on a header's content. A reset far
in the future (year 9999) is kept as it is: the consumer clamps it.

Times: *now* is the pool's clock (what the budgets' ``reset_at`` and the report's
``retry_after_at`` are on), *wall* is :func:`time.time` at the same moment, used only to turn an
absolute date into a delay. A reset date already past is read as *now*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from ._header_values import parse_decimal, parse_duration, parse_http_date, parse_rfc3339
from ._structured_fields import Malformed, SFParser

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from ._budgets import Budget

__all__ = ["EPOCH_THRESHOLD", "MAX_VALUE_LENGTH", "HeaderFields", "HeaderParser"]

#: A field value longer than this (in characters) is ignored unread: no dialect needs more, and
#: a megabyte of header must not cost a megabyte of parsing.
MAX_VALUE_LENGTH: Final = 1000

#: An epoch-or-delay reset (``X-RateLimit-Reset``, ``RateLimit-Reset``) at or above this is
#: read as epoch seconds, below it as seconds from now. 10**9 s is 2001-09-09 as a date, and
#: 31 years as a delay: no server means either of those, so the two readings never overlap.
#: GitHub and GitLab send epoch seconds, the IETF drafts and many others a delay.
EPOCH_THRESHOLD: Final = 1e9

_ABSENT: Final = object()


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
        return self._read(name, parse_decimal)

    def reset_after_seconds(self, name: str) -> float | None:
        """Field *name* as seconds from now (a decimal), made a time on the pool's clock."""
        seconds = self._read(name, parse_decimal)
        return None if seconds is None else self.now + seconds

    def reset_after_duration(self, name: str) -> float | None:
        """Field *name* as a Go duration (``6m0s``) or plain seconds, made a time on the pool's
        clock."""
        seconds = self._read(name, parse_duration)
        return None if seconds is None else self.now + seconds

    def reset_at_epoch(self, name: str) -> float | None:
        """Field *name* as epoch seconds, or seconds from now if below
        :data:`EPOCH_THRESHOLD`, or an HTTP date, made a time on the pool's clock."""
        text = self.text(name)
        if text is None:
            return None
        number = parse_decimal(text)
        if number is not None:
            return self.now + number if number < EPOCH_THRESHOLD else self._at_wall(number)
        when = parse_http_date(text)
        if when is None:
            self.ignore(name)
            return None
        return self._at_wall(when)

    def reset_at_rfc3339(self, name: str) -> float | None:
        """Field *name* as an RFC 3339 date, made a time on the pool's clock."""
        when = self._read(name, parse_rfc3339)
        return None if when is None else self._at_wall(when)

    def retry_after_at(self, name: str = "retry-after") -> float | None:
        """Field *name* as a ``Retry-After`` (RFC 9110, 10.2.3): seconds (decimals accepted) or
        an HTTP date, made a time on the pool's clock."""
        text = self.text(name)
        if text is None:
            return None
        seconds = parse_decimal(text)
        if seconds is not None:
            return self.now + seconds
        when = parse_http_date(text)
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
            return SFParser(text).parse_list()
        except Malformed:
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
