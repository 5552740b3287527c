"""What a server says of its rate limits, as records: :class:`Budget` ("limit X has R of L left,
reset at T"), :class:`HeaderReport` (the budgets and the ``Retry-After`` of one response), and
:func:`less_sent`, which takes off a budget what was sent after the response that stated it.

Pure values: no event loop, no clock read, no import of the rest of werkpool.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["Budget", "HeaderReport", "less_sent"]


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
