"""Structured fields (RFC 9651, which RFC 8941 was before it): the parser of a List, as the IETF
drafts' ``RateLimit`` and ``RateLimit-Policy`` fields (and some limit fields) are written.

:class:`SFParser` follows the parsing algorithms of RFC 9651, section 4.2, and raises
:exc:`Malformed` on what does not parse; the bare items it returns keep their kind
(:class:`Token` apart from a String, :class:`Date` apart from an Integer...). Nothing here knows
of rate limits.
"""

from __future__ import annotations

from typing import Final, final

__all__ = [
    "ByteSequence",
    "Date",
    "DisplayString",
    "Malformed",
    "SFParser",
    "Token",
]


class Malformed(Exception):
    """A structured field that does not parse."""


class Token(str):
    """A Token bare item (``default``), told apart from a String (``"default"``)."""

    __slots__ = ()


class ByteSequence(str):
    """A Byte Sequence bare item (``:cHsdsRa894=:``), kept as its base64 text (never decoded:
    no dialect uses its bytes)."""

    __slots__ = ()


class Date(int):
    """A Date bare item (``@1659578233``)."""

    __slots__ = ()


class DisplayString(str):
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
class SFParser:
    """The parsing algorithms of RFC 9651, section 4.2, for a List; raises :exc:`Malformed`.

    Values: Integer as int, Decimal as float, String as str, Token as :class:`Token`, Byte
    Sequence as :class:`ByteSequence`, Boolean as bool, Date as :class:`Date`, Display String
    as :class:`DisplayString`; an inner list as a list of (item, parameters).
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
                raise Malformed
            self._at += 1
            while self._at < end and text[self._at] in " \t":
                self._at += 1
            if self._at == end:
                raise Malformed  # a trailing comma
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
                raise Malformed
            items.append(self._item())
            if self._peek() not in (" ", ")"):
                raise Malformed

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
            raise Malformed
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
                raise Malformed
            return Date(number)
        if char == "%":
            return self._display_string()
        raise Malformed

    def _number(self) -> int | float:
        text = self._text
        sign = 1
        if self._peek() == "-":
            sign = -1
            self._at += 1
        if self._peek() not in _DIGITS:
            raise Malformed
        start = self._at
        point = -1
        while self._at < len(text):
            char = text[self._at]
            if char in _DIGITS:
                pass
            elif char == "." and point < 0:
                if self._at - start > 12:
                    raise Malformed
                point = self._at
            else:
                break
            self._at += 1
            length = self._at - start
            if (point < 0 and length > 15) or (point >= 0 and length > 16):
                raise Malformed
        number = text[start : self._at]
        if point < 0:
            return sign * int(number)
        if number.endswith(".") or len(number) - (point - start) - 1 > 3:
            raise Malformed
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
                    raise Malformed
                chars.append(text[self._at])
                self._at += 1
            elif char == '"':
                return "".join(chars)
            elif not " " <= char <= "~":
                raise Malformed
            else:
                chars.append(char)
        raise Malformed  # no closing quote

    def _token(self) -> Token:
        text = self._text
        start = self._at
        self._at += 1
        while self._at < len(text) and text[self._at] in _TOKEN_CHARS:
            self._at += 1
        return Token(text[start : self._at])

    def _byte_sequence(self) -> ByteSequence:
        text = self._text
        self._at += 1  # the opening colon
        start = self._at
        while self._at < len(text) and text[self._at] in _BASE64:
            self._at += 1
        if self._peek() != ":":
            raise Malformed
        self._at += 1
        return ByteSequence(text[start : self._at - 1])

    def _boolean(self) -> bool:
        self._at += 1  # "?"
        char = self._peek()
        if char not in ("0", "1"):
            raise Malformed
        self._at += 1
        return char == "1"

    def _display_string(self) -> DisplayString:
        text = self._text
        if text[self._at : self._at + 2] != '%"':
            raise Malformed
        self._at += 2
        data = bytearray()
        while self._at < len(text):
            char = text[self._at]
            self._at += 1
            if char == "%":
                digits = text[self._at : self._at + 2]
                if len(digits) != 2 or not set(digits) <= _HEX_LOWER:
                    raise Malformed
                data.append(int(digits, 16))
                self._at += 2
            elif char == '"':
                try:
                    return DisplayString(data.decode("utf-8"))
                except UnicodeDecodeError:
                    raise Malformed from None
            elif not " " <= char <= "~":
                raise Malformed
            else:
                data.append(ord(char))
        raise Malformed  # no closing quote
