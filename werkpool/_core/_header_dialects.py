"""The header dialects werkpool reads, each a :class:`HeaderParser` from a response's fields to
its :class:`Budget` records, and their registry (:data:`DEFAULT_PARSERS`, :data:`PARSERS`):

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

Each reads through :class:`HeaderFields`, which ignores and counts a malformed value: no dialect
raises on a header's content.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from ._budgets import Budget
from ._header_fields import HeaderParser
from ._header_values import MAX_NUMBER, parse_decimal
from ._structured_fields import Malformed, SFParser, Token

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._header_fields import HeaderFields

__all__ = [
    "ANTHROPIC",
    "DEFAULT_PARSERS",
    "GITHUB",
    "IETF",
    "IETF_DRAFT_OLD",
    "OPENAI",
    "PARSERS",
]

# A name taken from a header (GitHub's resource): visible ASCII, not too long.
_NAME: Final = re.compile(r"[!-~]{1,100}", re.ASCII)


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
    budgets: list[Budget] = []
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
    budgets: list[Budget] = []
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
    budgets: list[Budget] = []
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
    limit = parse_decimal(text)
    if limit is not None:
        return limit, None
    try:
        members = SFParser(text).parse_list()
    except Malformed:
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


def _is_name(value: object) -> bool:
    """A String or Token bare item, as an IETF policy's name or unit is."""
    return type(value) is str or type(value) is Token


def _sf_number(value: object) -> float | None:
    """A non-negative Integer or Decimal parameter, up to :data:`MAX_NUMBER`, or None."""
    if type(value) is not int and type(value) is not float:
        return None  # absent, or a bool, a string...
    assert isinstance(value, (int, float))
    if not 0 <= value <= MAX_NUMBER:
        return None
    return float(value)
