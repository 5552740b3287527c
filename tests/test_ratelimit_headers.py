"""Servers' rate-limit headers read as budgets (issue #22, item 3): pure functions, no event loop.

The header sets are written as servers send them (names and values as the providers' docs and
recorded responses show them); every malformed field must be ignored and counted, never raised.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from werkpool._core._budgets import Budget, HeaderReport
from werkpool._core._header_dialects import (
    ANTHROPIC,
    DEFAULT_PARSERS,
    GITHUB,
    IETF,
    IETF_DRAFT_OLD,
    OPENAI,
    PARSERS,
)
from werkpool._core._header_fields import MAX_VALUE_LENGTH, HeaderFields, HeaderParser
from werkpool._core._ratelimit_headers import parse_headers

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

#: The pool's clock at the response.
NOW = 1000.0
#: time.time() at the response: 2024-01-01T00:00:00Z.
WALL = 1704067200.0


def read(
    headers: Mapping[str, str], parsers: Iterable[HeaderParser] = DEFAULT_PARSERS
) -> HeaderReport:
    return parse_headers(headers, NOW, WALL, parsers)


# --- recorded header sets --------------------------------------------------------------------

OPENAI_200 = {
    "date": "Mon, 01 Jan 2024 00:00:00 GMT",
    "content-type": "application/json",
    "transfer-encoding": "chunked",
    "connection": "keep-alive",
    "access-control-expose-headers": "X-Request-ID",
    "openai-organization": "user-abc123",
    "openai-processing-ms": "412",
    "openai-version": "2020-10-01",
    "strict-transport-security": "max-age=15724800; includeSubDomains",
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
    "x-request-id": "req_7f3a9c0e1b2d4e5f6a7b8c9d0e1f2a3b",
    "cf-cache-status": "DYNAMIC",
    "server": "cloudflare",
    "cf-ray": "83e0f1a2b3c4d5e6-AMS",
    "alt-svc": 'h3=":443"; ma=86400',
}

OPENAI_429 = {
    "date": "Mon, 01 Jan 2024 00:00:00 GMT",
    "content-type": "application/json; charset=utf-8",
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-limit-tokens": "2000000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-remaining-tokens": "0",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-reset-tokens": "1m2.345s",
    "retry-after": "20",
    "x-request-id": "req_0a1b2c3d4e5f",
}

ANTHROPIC_200 = {
    "date": "Mon, 01 Jan 2024 00:00:00 GMT",
    "content-type": "application/json",
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-requests-reset": "2024-01-01T00:00:01Z",
    "anthropic-ratelimit-input-tokens-limit": "40000",
    "anthropic-ratelimit-input-tokens-remaining": "39000",
    "anthropic-ratelimit-input-tokens-reset": "2024-01-01T00:00:02Z",
    "anthropic-ratelimit-output-tokens-limit": "8000",
    "anthropic-ratelimit-output-tokens-remaining": "7500",
    "anthropic-ratelimit-output-tokens-reset": "2024-01-01T00:00:04Z",
    "anthropic-ratelimit-tokens-limit": "48000",
    "anthropic-ratelimit-tokens-remaining": "46500",
    "anthropic-ratelimit-tokens-reset": "2024-01-01T00:00:02Z",
    "request-id": "req_011CPwZ5j5sLt9yQk4mN1s2T",
    "anthropic-organization-id": "5e3b1c2a-0000-4000-8000-000000000000",
    "via": "1.1 google",
    "cf-cache-status": "DYNAMIC",
    "x-robots-tag": "none",
    "server": "cloudflare",
    "cf-ray": "8f1e2d3c4b5a6978-FRA",
}

ANTHROPIC_429 = {
    "date": "Mon, 01 Jan 2024 00:00:00 GMT",
    "content-type": "application/json",
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "0",
    "anthropic-ratelimit-requests-reset": "2024-01-01T00:00:30Z",
    "anthropic-ratelimit-tokens-limit": "48000",
    "anthropic-ratelimit-tokens-remaining": "48000",
    "anthropic-ratelimit-tokens-reset": "2024-01-01T00:00:00Z",
    "retry-after": "30",
    "x-should-retry": "true",
    "request-id": "req_011CPwZ6",
}

GITHUB_200 = {
    "server": "GitHub.com",
    "date": "Mon, 01 Jan 2024 00:00:00 GMT",
    "content-type": "application/json; charset=utf-8",
    "cache-control": "private, max-age=60, s-maxage=60",
    "etag": 'W/"2c5a8d2e7f5b9a3c1d0e"',
    "x-github-media-type": "github.v3; format=json",
    "x-github-api-version-selected": "2022-11-28",
    "x-ratelimit-limit": "5000",
    "x-ratelimit-remaining": "4987",
    "x-ratelimit-reset": "1704070800",
    "x-ratelimit-used": "13",
    "x-ratelimit-resource": "core",
    "access-control-expose-headers": "ETag, Link, Location, Retry-After, X-GitHub-OTP, "
    "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Used, X-RateLimit-Resource, "
    "X-RateLimit-Reset, X-OAuth-Scopes, X-Accepted-OAuth-Scopes, X-Poll-Interval",
    "x-github-request-id": "C0DE:1A2B:3C4D5E:6F7A8B:65920000",
}

GITHUB_SEARCH_403 = {
    "server": "GitHub.com",
    "date": "Mon, 01 Jan 2024 00:00:00 GMT",
    "x-ratelimit-limit": "30",
    "x-ratelimit-remaining": "0",
    "x-ratelimit-reset": "1704067260",
    "x-ratelimit-used": "30",
    "x-ratelimit-resource": "search",
}

#: draft-ietf-httpapi-ratelimit-headers-10/-11, sections 3.2 and 4.2.
IETF_200 = {
    "date": "Mon, 01 Jan 2024 00:00:00 GMT",
    "content-type": "application/json",
    "RateLimit-Policy": '"permin";q=50;w=60,"perhr";q=1000;w=3600',
    "RateLimit": '"permin";r=20;t=30, "perhr";r=985;t=2400',
}

IETF_DRAFT_OLD_200 = {
    "date": "Mon, 01 Jan 2024 00:00:00 GMT",
    "RateLimit-Limit": "100",
    "RateLimit-Remaining": "50",
    "RateLimit-Reset": "30",
}

#: GitLab: the old draft's names, with the reset in epoch seconds.
GITLAB_429 = {
    "RateLimit-Limit": "60",
    "RateLimit-Name": "throttle_authenticated_web",
    "RateLimit-Observed": "67",
    "RateLimit-Remaining": "0",
    "RateLimit-Reset": "1704067230",
    "RateLimit-ResetTime": "Mon, 01 Jan 2024 00:00:30 GMT",
    "Retry-After": "30",
}


class TestRecorded:
    def test_openai(self) -> None:
        """OpenAI: a budget of requests and one of tokens, resets as Go durations."""
        assert read(OPENAI_200) == HeaderReport(
            (
                Budget("openai", "requests", 59, 60, NOW + 1),
                Budget("openai", "tokens", 149984, 150000, NOW + 360, "tokens"),
            )
        )

    def test_openai_429(self) -> None:
        """OpenAI's 429: the tokens are spent, and Retry-After says when to come back."""
        assert read(OPENAI_429) == HeaderReport(
            (
                Budget("openai", "requests", 9999, 10000, NOW + 0.006),
                Budget("openai", "tokens", 0, 2000000, NOW + 62.345, "tokens"),
            ),
            retry_after_at=NOW + 20,
        )

    def test_anthropic(self) -> None:
        """Anthropic: four budgets, resets as RFC 3339 dates made times on the pool's clock."""
        assert read(ANTHROPIC_200) == HeaderReport(
            (
                Budget("anthropic", "requests", 49, 50, NOW + 1),
                Budget("anthropic", "tokens", 46500, 48000, NOW + 2, "tokens"),
                Budget("anthropic", "input-tokens", 39000, 40000, NOW + 2, "input-tokens"),
                Budget("anthropic", "output-tokens", 7500, 8000, NOW + 4, "output-tokens"),
            )
        )

    def test_anthropic_429(self) -> None:
        """Anthropic's 429: the requests are spent; a reset at the response's second is now."""
        assert read(ANTHROPIC_429) == HeaderReport(
            (
                Budget("anthropic", "requests", 0, 50, NOW + 30),
                Budget("anthropic", "tokens", 48000, 48000, NOW, "tokens"),
            ),
            retry_after_at=NOW + 30,
        )

    def test_github(self) -> None:
        """GitHub: the resource names the budget, the reset is in epoch seconds."""
        assert read(GITHUB_200) == HeaderReport((Budget("github", "core", 4987, 5000, NOW + 3600),))

    def test_github_search_spent(self) -> None:
        """GitHub's search resource, spent: 0 left until its minute is over."""
        assert read(GITHUB_SEARCH_403) == HeaderReport(
            (Budget("github", "search", 0, 30, NOW + 60),)
        )

    def test_ietf(self) -> None:
        """The IETF draft: each RateLimit item a budget, its policy's quota and window added."""
        assert read(IETF_200) == HeaderReport(
            (
                Budget("ietf", "permin", 20, 50, NOW + 30, None, 60),
                Budget("ietf", "perhr", 985, 1000, NOW + 2400, None, 3600),
            )
        )

    def test_ietf_draft_old(self) -> None:
        """The older drafts' three fields, the reset a delay."""
        assert read(IETF_DRAFT_OLD_200) == HeaderReport(
            (Budget("ietf-draft-old", "default", 50, 100, NOW + 30),)
        )

    def test_gitlab(self) -> None:
        """GitLab's RateLimit-Reset is epoch seconds: read as a date, not 54 years from now."""
        assert read(GITLAB_429) == HeaderReport(
            (Budget("ietf-draft-old", "default", 0, 60, NOW + 30),), retry_after_at=NOW + 30
        )

    def test_httpx_headers(self) -> None:
        """An httpx.Headers reads as the dict it was built from."""
        for recorded in (OPENAI_200, ANTHROPIC_200, GITHUB_200, IETF_200, GITLAB_429):
            assert read(httpx.Headers(recorded)) == read(recorded)


# --- each dialect in detail ------------------------------------------------------------------


class TestOpenAI:
    @pytest.mark.parametrize(
        ("reset", "seconds"),
        [
            ("1s", 1.0),
            ("6m0s", 360.0),
            ("20ms", 0.02),
            ("1h2m3.5s", 3723.5),
            ("0s", 0.0),
            ("2m59.56s", 179.56),
            ("7.66s", 7.66),
            ("500us", 0.0005),
            ("500\u00b5s", 0.0005),
            ("1500ns", 0.0000015),
            ("1.5h", 5400.0),
            (".5s", 0.5),
            ("1s1h", 3601.0),  # Go takes the units in any order
            ("30", 30.0),  # plain seconds, as some compatible servers write them
            ("0.25", 0.25),
        ],
    )
    def test_reset_durations(self, reset: str, seconds: float) -> None:
        """A reset written as a Go duration (or plain seconds) is that long from now."""
        report = read({"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": reset})
        (budget,) = report.budgets
        assert budget.reset_at == pytest.approx(NOW + seconds, abs=1e-9)
        assert report.ignored == 0

    @pytest.mark.parametrize(
        "reset",
        [
            "",
            "s",
            "-1s",
            "+1s",
            "1x",
            "1 s",
            "1h-2m",
            "nan",
            "infs",
            "1e3s",
            "\u0661s",
            "1.2.3s",
            "9" * 400 + "h",
            "1" * 17 + "s",
        ],
    )
    def test_bad_reset_ignored(self, reset: str) -> None:
        """A reset that is no duration is ignored and counted; the budget stays, without it."""
        report = read({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": reset})
        assert report.budgets == (Budget("openai", "requests", 5),)
        assert report.ignored_fields == ("x-ratelimit-reset-requests",)

    def test_limit_without_remaining_is_no_budget(self) -> None:
        """A limit and a reset without a remaining count state no budget."""
        report = read({"x-ratelimit-limit-tokens": "1000", "x-ratelimit-reset-tokens": "1s"})
        assert report == HeaderReport()

    def test_bad_remaining_drops_the_budget(self) -> None:
        """A remaining count that is garbage: no budget, and the field counted."""
        report = read({"x-ratelimit-remaining-tokens": "lots", "x-ratelimit-limit-tokens": "100"})
        assert report == HeaderReport((), None, ("x-ratelimit-remaining-tokens",))

    def test_decimal_counts(self) -> None:
        """Counts with a fraction are read as they are."""
        (budget,) = read({"x-ratelimit-remaining-tokens": "12.5"}).budgets
        assert budget.remaining == 12.5


class TestAnthropic:
    @pytest.mark.parametrize(
        ("reset", "seconds"),
        [
            ("2024-01-01T00:00:30Z", 30.0),
            ("2024-01-01T00:00:30.250Z", 30.25),
            ("2024-01-01T00:00:30.123456789Z", 30.123456789),
            ("2024-01-01t00:00:30z", 30.0),
            ("2024-01-01 00:00:30Z", 30.0),
            ("2024-01-01T01:00:30+01:00", 30.0),
            ("2023-12-31T23:30:30-00:30", 30.0),
            ("2023-12-31T23:59:60Z", 0.0),  # a leap second: the next second's start
            ("2023-12-31T23:59:00Z", 0.0),  # past: the window has reset already
            ("1970-01-01T00:00:00Z", 0.0),
        ],
    )
    def test_reset_dates(self, reset: str, seconds: float) -> None:
        """A reset written in RFC 3339 is made a time on the pool's clock."""
        report = read(
            {
                "anthropic-ratelimit-requests-remaining": "3",
                "anthropic-ratelimit-requests-reset": reset,
            }
        )
        (budget,) = report.budgets
        assert budget.reset_at == pytest.approx(NOW + seconds, abs=1e-6)
        assert report.ignored == 0

    def test_reset_in_year_9999_is_kept(self) -> None:
        """A reset far in the future is kept (the consumer clamps it), not a crash."""
        report = read(
            {
                "anthropic-ratelimit-tokens-remaining": "0",
                "anthropic-ratelimit-tokens-reset": "9999-12-31T23:59:59-23:59",
            }
        )
        (budget,) = report.budgets
        assert budget.reset_at == NOW + (253402387139 - WALL)
        assert report.ignored == 0

    @pytest.mark.parametrize(
        "reset",
        [
            "2024-13-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:61:00Z",
            "2024-01-01T00:00:61Z",
            "0000-01-01T00:00:00Z",
            "10000-01-01T00:00:00Z",
            "2024-01-01T00:00:30",  # no offset
            "2024-01-01T00:00:30+24:00",
            "2024-01-01T00:00:30+01:60",
            "2024-01-01",
            "1704067230",
            "tomorrow",
            "2024-01-01T00:00:30.Z",
            "\u0662024-01-01T00:00:30Z",
        ],
    )
    def test_bad_reset_ignored(self, reset: str) -> None:
        """A reset that is no RFC 3339 date, or out of range, is ignored and counted."""
        report = read(
            {
                "anthropic-ratelimit-requests-remaining": "3",
                "anthropic-ratelimit-requests-reset": reset,
            }
        )
        assert report.budgets == (Budget("anthropic", "requests", 3),)
        assert report.ignored_fields == ("anthropic-ratelimit-requests-reset",)


class TestGitHub:
    def test_remaining_from_used(self) -> None:
        """Without a remaining count, limit - used is what is left."""
        report = read({"x-ratelimit-limit": "60", "x-ratelimit-used": "58"})
        assert report.budgets == (Budget("github", "default", 2, 60),)

    def test_used_beyond_limit_leaves_none(self) -> None:
        """More used than the limit leaves 0, not a negative."""
        report = read({"x-ratelimit-limit": "60", "x-ratelimit-used": "61"})
        assert report.budgets == (Budget("github", "default", 0, 60),)

    def test_without_resource_the_name_is_default(self) -> None:
        """The common X-RateLimit-* of other APIs: no resource, the budget is "default"."""
        report = read({"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "7"})
        assert report.budgets == (Budget("github", "default", 7, 100),)

    def test_small_reset_is_a_delay(self) -> None:
        """A reset below 10**9 is no date of this century: seconds from now."""
        report = read({"x-ratelimit-remaining": "7", "x-ratelimit-reset": "42.5"})
        assert report.budgets == (Budget("github", "default", 7, None, NOW + 42.5),)

    def test_reset_as_http_date(self) -> None:
        """A reset written as an HTTP date is read as one."""
        report = read(
            {"x-ratelimit-remaining": "7", "x-ratelimit-reset": "Mon, 01 Jan 2024 00:01:00 GMT"}
        )
        assert report.budgets == (Budget("github", "default", 7, None, NOW + 60),)

    def test_past_reset_is_now(self) -> None:
        """An epoch reset already past is now."""
        report = read({"x-ratelimit-remaining": "7", "x-ratelimit-reset": "1704000000"})
        assert report.budgets == (Budget("github", "default", 7, None, NOW),)

    def test_limit_with_window(self) -> None:
        """A limit written as the early IETF drafts' quota policy list gives the window too."""
        report = read(
            {
                "x-ratelimit-limit": "30, 30;w=1",
                "x-ratelimit-remaining": "12",
                "x-ratelimit-reset": "1",
            }
        )
        assert report.budgets == (Budget("github", "default", 12, 30, NOW + 1, None, 1),)

    @pytest.mark.parametrize("resource", ["", "a b", "caf\u00e9", "x" * 101])
    def test_bad_resource_ignored(self, resource: str) -> None:
        """A resource name that is not a short visible ASCII word is ignored and counted."""
        report = read({"x-ratelimit-remaining": "1", "x-ratelimit-resource": resource})
        assert report.budgets == (Budget("github", "default", 1),)
        assert report.ignored_fields == ("x-ratelimit-resource",)


class TestIETF:
    @pytest.mark.parametrize(
        ("headers", "budgets"),
        [
            ({"RateLimit": '"default";r=50;t=30'}, [Budget("ietf", "default", 50, None, NOW + 30)]),
            (
                {"RateLimit-Policy": '"default";q=100;w=10', "RateLimit": '"default";r=50;t=30'},
                [Budget("ietf", "default", 50, 100, NOW + 30, None, 10)],
            ),
            (
                {"RateLimit": '"default";r=999;pk=:dHJpYWwxMjEzMjM=:'},
                [Budget("ietf", "default", 999)],
            ),
            (
                {
                    "RateLimit-Policy": (
                        '"peruser";q=65535;qu="content-bytes";w=10;pk=:sdfjLJUOUH==:'
                    ),
                    "RateLimit": '"peruser";r=300000000;t=60;pk=:QXBwLTk5OQ==:',
                },
                [Budget("ietf", "peruser", 300000000, 65535, NOW + 60, "content-bytes", 10)],
            ),
            (
                {
                    "RateLimit-Policy": '"burst";q=100;w=60,"daily";q=1000;w=86400',
                    "RateLimit": '"daily";r=1;t=36400',
                },
                [Budget("ietf", "daily", 1, 1000, NOW + 36400, None, 86400)],
            ),
            (
                {"RateLimit-Policy": '"default";q=10;qu="requests"', "RateLimit": '"default";r=0'},
                [Budget("ietf", "default", 0, 10)],
            ),
            # a Token for a name (the drafts say String): read all the same
            ({"RateLimit": "default;r=5;t=1"}, [Budget("ietf", "default", 5, None, NOW + 1)]),
            # parameters in any order, unknown ones (comments, vendor ones) skipped
            (
                {"RateLimit": '"a";t=2;acme-burst=?1;r=3;comment="hi";x=%"caf%c3%a9";d=@1'},
                [Budget("ietf", "a", 3, None, NOW + 2)],
            ),
            # a decimal where an integer is due: read, it harms nothing
            ({"RateLimit": '"a";r=2.5;t=0.5'}, [Budget("ietf", "a", 2.5, None, NOW + 0.5)]),
            # an empty field: nothing to read
            ({"RateLimit": ""}, []),
        ],
    )
    def test_fields(self, headers: dict[str, str], budgets: list[Budget]) -> None:
        """The draft's examples and tolerated variants."""
        report = read(headers)
        assert report == HeaderReport(tuple(budgets))

    def test_list_split_over_two_fields(self) -> None:
        """A List split over two RateLimit fields (RFC 9651, 3.1) is one List."""
        headers = httpx.Headers([("RateLimit", '"a";r=1'), ("ratelimit", '"b";r=2')])
        assert read(headers).budgets == (Budget("ietf", "a", 1), Budget("ietf", "b", 2))

    def test_policy_alone_states_no_budget(self) -> None:
        """RateLimit-Policy on its own states no remaining: nothing read, nothing counted."""
        assert read({"RateLimit-Policy": '"default";q=100;w=10'}) == HeaderReport()

    def test_old_draft_policy_is_skipped(self) -> None:
        """An older draft's RateLimit-Policy (quotas as integers) is not counted as malformed."""
        report = read({"RateLimit-Policy": "100;w=10", "RateLimit": '"default";r=5'})
        assert report == HeaderReport((Budget("ietf", "default", 5),))

    @pytest.mark.parametrize(
        "value",
        [
            '"a";r=1,',  # a trailing comma
            '"a;r=1',  # no closing quote
            '"a";r=1 "b";r=2',  # no comma
            '"a";R=1',  # a key in upper case
            '"a";r=1234567890123456',  # an Integer of 16 digits
            '"a";r=1.2345',  # a Decimal of 4 fraction digits
            '"a";r=1.',
            '"a";r=--1',
            '"a";r="1\\x"',
            '"caf\u00e9";r=1',
            '"a";r=?2',
            '"a";r=:abc',
            '"a";r=%"%ZZ"',
            '"a";r=%"%ff"',  # not UTF-8
            '("a" "b"',
            '"a";r=1;;',
            "\x00",
            "\u00a0",
            "=r",
        ],
    )
    def test_malformed_field_is_ignored(self, value: str) -> None:
        """A RateLimit field that is no structured List is ignored whole, and counted once."""
        assert read({"RateLimit": value}) == HeaderReport((), None, ("ratelimit",))

    @pytest.mark.parametrize(
        "member",
        [
            '"b"',  # no r
            '"b";r',  # r true, not a number
            '"b";r=-1',
            '"b";r="5"',
            '"b";r=?1',
            '"b";r=5;t=-1',
            '"b";r=5;t="soon"',
            "12;r=5",  # a name that is a number
            '("b" "c");r=5',  # an inner list
            ":Yg==:;r=5",
        ],
    )
    def test_bad_member_is_ignored(self, member: str) -> None:
        """A member without a valid r or t is ignored and the field counted; the others stay."""
        report = read({"RateLimit": f'"a";r=1, {member}, "c";r=3'})
        assert report == HeaderReport(
            (Budget("ietf", "a", 1), Budget("ietf", "c", 3)), None, ("ratelimit",)
        )

    @pytest.mark.parametrize(
        "policy",
        ['"a";w=10', '"a";q=-1', '"a";q=10;w=0', '"a";q=10;w=-5', '"a";q=10;qu=5', "?1;q=10"],
    )
    def test_bad_policy_is_ignored(self, policy: str) -> None:
        """A policy without a valid quota, window or unit adds nothing, and is counted."""
        report = read({"RateLimit-Policy": policy, "RateLimit": '"a";r=1'})
        assert report == HeaderReport((Budget("ietf", "a", 1),), None, ("ratelimit-policy",))

    def test_first_policy_of_a_name_wins(self) -> None:
        """Two policies of one name: the first is the one read."""
        report = read({"RateLimit-Policy": '"a";q=10;w=1, "a";q=99;w=9', "RateLimit": '"a";r=1'})
        assert report.budgets == (Budget("ietf", "a", 1, 10, None, None, 1),)

    def test_largest_structured_numbers(self) -> None:
        """RFC 9651 caps an Integer at 15 digits and a Decimal at 12.3: both are read."""
        report = read({"RateLimit": '"a";r=999999999999999;t=999999999999.999'})
        assert report.budgets == (
            Budget("ietf", "a", 999999999999999, None, NOW + 999999999999.999),
        )


class TestIETFDraftOld:
    def test_limit_as_policy_list(self) -> None:
        """RateLimit-Limit written with its policies (``100, 100;w=10``): the window is read."""
        report = read({"RateLimit-Limit": "100, 100;w=10, 1000;w=3600", "RateLimit-Remaining": "5"})
        assert report.budgets == (Budget("ietf-draft-old", "default", 5, 100, None, None, 10),)

    def test_remaining_missing(self) -> None:
        """A limit and a reset without a remaining: no budget, nothing counted."""
        assert read({"RateLimit-Limit": "100", "RateLimit-Reset": "3"}) == HeaderReport()

    @pytest.mark.parametrize(
        ("name", "value", "limit"),
        [
            ("RateLimit-Limit", "many", None),
            ("RateLimit-Limit", "100, soon", None),
            ("RateLimit-Limit", "100;w=0", 100),  # the quota stays, the window is gone
            ("RateLimit-Limit", "100;w=-1", 100),
            ("RateLimit-Reset", "-3", None),
            ("RateLimit-Reset", "in a while", None),
        ],
    )
    def test_bad_field_is_ignored(self, name: str, value: str, limit: float | None) -> None:
        """A bad limit, window or reset is ignored and counted; the remaining count stays."""
        report = read({"RateLimit-Remaining": "5", name: value})
        assert report.budgets == (Budget("ietf-draft-old", "default", 5, limit),)
        assert report.ignored_fields == (name.lower(),)


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("0", 0.0),
            ("120", 120.0),
            ("1.5", 1.5),
            (" 7 ", 7.0),
            ("Mon, 01 Jan 2024 00:00:30 GMT", 30.0),
            ("Monday, 01-Jan-24 00:00:30 GMT", 30.0),  # RFC 850, obsolete but to be read
            ("Mon Jan  1 00:00:30 2024", 30.0),  # asctime
            ("Sun, 31 Dec 2023 23:00:00 GMT", 0.0),  # past: now
        ],
    )
    def test_values(self, value: str, seconds: float) -> None:
        """Seconds (decimals accepted) or an HTTP date, made a time on the pool's clock."""
        report = read({"Retry-After": value})
        assert report == HeaderReport((), NOW + seconds)

    def test_date_in_year_9999(self) -> None:
        """A date in year 9999 is kept (the consumer clamps it)."""
        report = read({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"})
        assert report.retry_after_at == NOW + (253402300799 - WALL)

    @pytest.mark.parametrize(
        "value",
        [
            "-1",
            "nan",
            "inf",
            "1e3",
            "0x10",
            "1_000",
            "soon",
            "",
            "\u0663",
            "9" * 20,
            "Mon, 32 Jan 2024 00:00:30 GMT",
            "Mon, 01 Foo 2024 00:00:30 GMT",
            "Mon, 01 Jan 2024 25:00:30 GMT",
        ],
    )
    def test_bad_values_ignored(self, value: str) -> None:
        """A Retry-After that is neither is ignored and counted."""
        assert read({"Retry-After": value}) == HeaderReport((), None, ("retry-after",))


# --- hostile input ---------------------------------------------------------------------------

NUMBER_FIELDS = [
    "x-ratelimit-remaining-requests",
    "anthropic-ratelimit-tokens-remaining",
    "x-ratelimit-remaining",
    "ratelimit-remaining",
]


class TestHostile:
    @pytest.mark.parametrize("name", NUMBER_FIELDS)
    @pytest.mark.parametrize(
        "value",
        [
            "-1",
            "-0.5",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "1e400",
            "1e3",
            "9007199254740994",  # above 2**53
            "1" + "0" * 400,
            "0x10",
            "1_000",
            "+5",
            "5 5",
            "\u0665",  # an Arabic-Indic five
            "\uff15",  # a fullwidth five
            "5\x00",
            "",
            "DROP TABLE",
        ],
    )
    def test_bad_count_ignored(self, name: str, value: str) -> None:
        """A count that is negative, not finite, huge or garbage: no budget, field counted."""
        assert read({name: value}) == HeaderReport((), None, (name,))

    @pytest.mark.parametrize(
        ("name", "good", "others"),
        [
            *((name, "1", {}) for name in NUMBER_FIELDS),
            ("x-ratelimit-reset-tokens", "1s", {"x-ratelimit-remaining-tokens": "1"}),
            ("x-ratelimit-limit", "1", {"x-ratelimit-remaining": "1"}),
            ("ratelimit", '"a";r=1', {}),
            ("retry-after", "1", {}),
        ],
    )
    def test_over_long_value_ignored(self, name: str, good: str, others: dict[str, str]) -> None:
        """A value over MAX_VALUE_LENGTH characters is ignored unread, and counted."""
        over = read({**others, name: " " * (MAX_VALUE_LENGTH + 1 - len(good)) + good})
        assert over.ignored_fields == (name,)
        # At the limit it is read (surrounding whitespace counts: the limit is on the value).
        at = read({**others, name: " " * (MAX_VALUE_LENGTH - len(good)) + good})
        assert at.ignored == 0
        assert at.budgets or at.retry_after_at is not None

    def test_value_not_a_str(self) -> None:
        """An untyped caller's value that is not a str is counted, not raised on."""
        headers: dict[object, object] = {
            "x-ratelimit-remaining": 5,
            "retry-after": b"1",
            7: "x",
            "ratelimit": None,
        }
        report = read(headers)  # type: ignore[arg-type]
        assert report == HeaderReport(
            (), None, ("x-ratelimit-remaining", "ratelimit", "retry-after")
        )

    def test_many_fields_counted_once_each(self) -> None:
        """Each malformed field counts once, however many of its parts were bad."""
        report = read(
            {
                "RateLimit": '"a";r=-1, "b";r=-2, "c";r=3',
                "x-ratelimit-remaining-requests": "nan",
                "x-ratelimit-limit-requests": "inf",
                "x-ratelimit-reset-requests": "never",
            }
        )
        assert report.budgets == (Budget("ietf", "c", 3),)
        assert sorted(report.ignored_fields) == [
            "ratelimit",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ]
        assert report.ignored == 4


# --- names in any case -----------------------------------------------------------------------


class TestCase:
    @pytest.mark.parametrize(
        "recorded", [OPENAI_200, ANTHROPIC_200, GITHUB_200, IETF_200, GITLAB_429]
    )
    @pytest.mark.parametrize("case", [str.upper, str.lower, str.title, lambda s: s.swapcase()])
    def test_any_case(self, recorded: dict[str, str], case: Callable[[str], str]) -> None:
        """A plain dict with its names in any case reads as the recorded set."""
        headers = {case(name): value for name, value in recorded.items()}
        assert read(headers) == read(recorded)
        assert read(headers).budgets

    def test_names_differing_in_case_are_one_field(self) -> None:
        """ "RateLimit" and "ratelimit" in one dict are joined, as repeated fields are."""
        report = read({"RateLimit": '"a";r=1', "ratelimit": '"b";r=2'})
        assert report.budgets == (Budget("ietf", "a", 1), Budget("ietf", "b", 2))

    def test_repeated_count_is_malformed(self) -> None:
        """A count given twice (differing in case) is no count: ignored and counted."""
        report = read({"X-RateLimit-Remaining": "1", "x-ratelimit-remaining": "2"})
        assert report == HeaderReport((), None, ("x-ratelimit-remaining",))


# --- the entry point -------------------------------------------------------------------------


class TestParseHeaders:
    def test_nothing_to_read(self) -> None:
        """A response with none of the fields: an empty report, and no parser is run."""

        def refuse(fields: HeaderFields) -> list[Budget]:
            raise AssertionError("a parser ran on a response without its fields")

        parsers = (HeaderParser("spy", ("x-ratelimit-",), refuse),)
        assert read({"content-type": "text/plain", "X-Request-Id": "1"}, parsers) == HeaderReport()
        assert read({}, parsers) == HeaderReport()
        # Retry-After alone is read, still without running the parser.
        assert read({"Retry-After": "3"}, parsers) == HeaderReport((), NOW + 3)

    def test_subset_of_parsers(self) -> None:
        """Only the parsers given are run."""
        headers = {**OPENAI_200, **IETF_200}
        assert {b.source for b in read(headers).budgets} == {"openai", "ietf"}
        assert {b.source for b in read(headers, [IETF]).budgets} == {"ietf"}
        assert {b.source for b in read(headers, []).budgets} == set()

    def test_custom_parser(self) -> None:
        """A parser of one's own reads its fields with the same checked readers."""

        def read_acme(fields: HeaderFields) -> list[Budget]:
            remaining = fields.number("acme-left")
            return [] if remaining is None else [Budget("acme", "default", remaining)]

        acme = HeaderParser("acme", ("acme-",), read_acme)
        assert read({"Acme-Left": "4"}, [acme]).budgets == (Budget("acme", "default", 4),)
        assert read({"Acme-Left": "-4"}, [acme]) == HeaderReport((), None, ("acme-left",))

    def test_registry(self) -> None:
        """The registry holds every dialect under its source name, in DEFAULT_PARSERS order."""
        assert DEFAULT_PARSERS == (OPENAI, ANTHROPIC, GITHUB, IETF, IETF_DRAFT_OLD)
        assert dict(PARSERS) == {p.source: p for p in DEFAULT_PARSERS}
        assert list(PARSERS) == ["openai", "anthropic", "github", "ietf", "ietf-draft-old"]

    def test_all_dialects_at_once(self) -> None:
        """A response with every dialect's fields: every budget, in the parsers' order."""
        headers = {**OPENAI_200, **ANTHROPIC_200, **GITHUB_200, **IETF_200, **IETF_DRAFT_OLD_200}
        sources = [b.source for b in read(headers).budgets]
        assert sources == ["openai"] * 2 + ["anthropic"] * 4 + ["github"] + ["ietf"] * 2 + [
            "ietf-draft-old"
        ]

    def test_budgets_are_frozen(self) -> None:
        """Budgets and reports are values: frozen, equal by content, hashable."""
        (budget, _) = read(OPENAI_200).budgets
        with pytest.raises(AttributeError):
            budget.remaining = 0  # type: ignore[misc]
        assert hash(read(OPENAI_200)) == hash(read(dict(OPENAI_200)))

    @pytest.mark.parametrize(
        ("args", "error", "message"),
        [
            (
                ([("a", "b")], NOW, WALL),
                TypeError,
                "headers must be a mapping of str to str, not list",
            ),
            (("x", NOW, WALL), TypeError, "headers must be a mapping of str to str, not str"),
            (({}, "1", WALL), TypeError, "now must be a finite number of seconds, not str"),
            (({}, True, WALL), TypeError, "now must be a finite number of seconds, not bool"),
            (({}, NOW, None), TypeError, "wall must be a finite number of seconds, not NoneType"),
            (({}, math.nan, WALL), ValueError, "now must be a finite number of seconds, got nan"),
            (({}, NOW, math.inf), ValueError, "wall must be a finite number of seconds, got inf"),
            (
                ({}, NOW, WALL, OPENAI),
                TypeError,
                "parsers must be an iterable of HeaderParser, not HeaderParser",
            ),
            (
                ({}, NOW, WALL, "openai"),
                TypeError,
                "parsers must be an iterable of HeaderParser, not str",
            ),
            (({}, NOW, WALL, ["openai"]), TypeError, "parsers must hold HeaderParser, not str"),
        ],
    )
    def test_bad_arguments(
        self, args: tuple[object, ...], error: type[Exception], message: str
    ) -> None:
        """The caller's mistakes (not the server's) raise at the call, naming the argument."""
        with pytest.raises(error, match=rf"^{re.escape(message)}$"):
            parse_headers(*args)  # type: ignore[arg-type]


# --- properties ------------------------------------------------------------------------------

KNOWN_NAMES = [
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-used",
    "x-ratelimit-reset",
    "x-ratelimit-resource",
    *(
        f"x-ratelimit-{part}-{kind}"
        for part in ("limit", "remaining", "reset")
        for kind in ("requests", "tokens")
    ),
    *(
        f"anthropic-ratelimit-{kind}-{part}"
        for kind in ("requests", "tokens", "input-tokens", "output-tokens")
        for part in ("limit", "remaining", "reset")
    ),
]

#: Characters that make structured fields, numbers, durations and dates.
SF_ALPHABET = '"();,=:*?@%-.+/0123456789abcdeqrtwkuzTZ :\\\t'

values = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=SF_ALPHABET, max_size=60),
    st.from_regex(r"\A[0-9]{0,20}(\.[0-9]{0,5})?[a-zµ]{0,2}\Z"),
    st.builds(
        "{}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}".format,
        st.integers(0, 99999),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.sampled_from(["Z", "+01:00", "-23:59", "+99:99", ""]),
    ),
    st.builds(
        '"{}";r={};t={}, "{}";q={};w={}'.format,
        st.text(alphabet="ab", max_size=2),
        st.integers(-(10**16), 10**16),
        st.integers(-5, 10**16),
        st.text(alphabet="ab", max_size=2),
        st.integers(-5, 10**16),
        st.integers(-5, 10**16),
    ),
)
names = st.one_of(st.sampled_from(KNOWN_NAMES), st.text(max_size=20)).map(
    lambda name: name.upper() if len(name) % 2 else name
)


@given(st.dictionaries(names, values, max_size=12))
def test_never_raises_on_any_header_values(headers: dict[str, str]) -> None:
    """Arbitrary text in any of the fields: a report, never an exception, and sound numbers."""
    report = read(headers)
    lowered = {name.lower() for name in headers}
    assert set(report.ignored_fields) <= lowered
    assert len(set(report.ignored_fields)) == report.ignored
    for budget in report.budgets:
        assert 0 <= budget.remaining <= 2**53
        assert budget.limit is None or 0 <= budget.limit <= 2**53
        assert budget.window is None or 0 < budget.window <= 2**53
        assert budget.reset_at is None or NOW <= budget.reset_at < math.inf
    assert report.retry_after_at is None or NOW <= report.retry_after_at < math.inf
    # An httpx.Headers of the same (latin-1 encodable) fields reads the same.
    try:
        as_httpx = httpx.Headers(headers)
    except (UnicodeEncodeError, ValueError):
        return
    if len({name.lower() for name in headers}) == len(headers):
        assert read(as_httpx) == report


@given(st.integers(0, 10**6), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_go_durations(hours: int, minutes: int, seconds: int, millis: int) -> None:
    """Every duration Go's Duration.String() writes is read back to its seconds."""
    text = f"{hours}h{minutes}m{seconds}.{millis:03d}s" if hours else f"{minutes}m{seconds}s"
    expected = hours * 3600 + minutes * 60 + seconds + (millis / 1000 if hours else 0)
    (budget,) = read(
        {"x-ratelimit-remaining-tokens": "1", "x-ratelimit-reset-tokens": text}
    ).budgets
    assert budget.reset_at == pytest.approx(NOW + expected, abs=1e-6)


@given(
    st.lists(
        st.tuples(
            st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8),
            st.integers(0, 10**15 - 1),
            st.none() | st.integers(0, 10**9),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_ietf_items_read_back(items: list[tuple[str, int, int | None]]) -> None:
    """Any valid RateLimit List (names with quotes and backslashes escaped) reads back."""

    def quoted(name: str) -> str:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

    value = ", ".join(
        f"{quoted(name)};r={r}" + ("" if t is None else f";t={t}") for name, r, t in items
    )
    report = read({"RateLimit": value})
    assert report.ignored == 0
    assert report.budgets == tuple(
        Budget("ietf", name, r, None, None if t is None else NOW + t) for name, r, t in items
    )
