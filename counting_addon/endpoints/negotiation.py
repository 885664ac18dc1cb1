"""Content negotiation for /status: a browser gets the live page, every other client JSON.

RFC 9110, section 12.5.1: an `Accept` header lists media ranges (`text/html`, `text/*`,
`*/*`), each with parameters and a weight `q` (0 to 1, 1 when absent). The weight a media type
gets is that of the most specific range matching it: `text/html` before `text/html`'s
parameters are counted, `text/*` before `*/*`; a type no range matches gets 0.

/status answers HTML only when the client weighs `text/html` strictly above
`application/json`, as every browser's navigation does (`text/html,...,*/*;q=0.8`). A tie
(curl's `*/*`), no header at all, or one that can't be parsed keeps today's JSON: a script
never gets a page it did not ask for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# RFC 9110, 5.6.2 and 5.6.4: a token, and a quoted string with its escapes.
TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
QUOTED = r'"(?:[^"\\]|\\.)*"'
OWS = r"[ \t]*"
_RANGE = re.compile(rf"{OWS}(?P<type>{TOKEN})/(?P<subtype>{TOKEN}){OWS}")
_PARAMETER = re.compile(rf";{OWS}(?P<name>{TOKEN})=(?P<value>{TOKEN}|{QUOTED}){OWS}")
# RFC 9110, 12.4.2: at most three decimals, never above 1.
_WEIGHT = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")
_COMMA = re.compile(rf",{OWS}")

HTML = "text/html"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One element of `Accept`: `type/subtype` (either may be `*`), the parameters before
    its weight (lowercase names, values unquoted), and its weight."""

    type: str
    subtype: str
    parameters: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def matches(self, media_type: str, parameters: dict[str, str]) -> bool:
        type_, _, subtype = media_type.partition("/")
        return (
            self.type in ("*", type_)
            and self.subtype in ("*", subtype)
            # Values compared without case: charset's are (RFC 9110, 8.3.2), and no other
            # parameter decides between the two types offered here.
            and all(parameters.get(k, "").lower() == v.lower() for k, v in self.parameters.items())
        )

    @property
    def specificity(self) -> tuple[int, int]:
        """Higher is more specific: `*/*`, then `type/*`, then `type/subtype`, then by how
        many parameters it names."""
        return (int(self.type != "*") + int(self.subtype != "*"), len(self.parameters))


def parse_accept(value: str) -> list[MediaRange]:
    """The media ranges of an `Accept` value, in order; ValueError for anything that is not
    one (RFC 9110's grammar, strictly: a bad weight, `*/html`, a stray character). Empty
    elements (`a/b,,c/d`) are allowed, as the list syntax of RFC 9110, 5.6.1 has it."""
    ranges: list[MediaRange] = []
    position = 0
    while position < len(value):
        if comma := _COMMA.match(value, position):
            position = comma.end()
            continue
        if value[position:].strip(" \t") == "":
            break
        media_range = _RANGE.match(value, position)
        if media_range is None:
            raise ValueError(f"not a media range at {position}: {value[position:]!r}")
        type_, subtype = media_range["type"].lower(), media_range["subtype"].lower()
        if type_ == "*" and subtype != "*":
            raise ValueError(f"{type_}/{subtype} is not a media range")
        position = media_range.end()
        parameters: dict[str, str] = {}
        q = 1.0
        while parameter := _PARAMETER.match(value, position):
            position = parameter.end()
            name, raw = parameter["name"].lower(), parameter["value"]
            if name == "q":
                if not _WEIGHT.fullmatch(raw):
                    raise ValueError(f"not a weight: q={raw}")
                q = float(raw)
                # What follows the weight is accept-ext (RFC 7231), not the media type's.
                while extension := _PARAMETER.match(value, position):
                    position = extension.end()
                break
            parameters[name] = unquoted(raw)
        ranges.append(MediaRange(type_, subtype, parameters, q))
        if position < len(value) and not _COMMA.match(value, position):
            raise ValueError(f"unexpected {value[position:]!r} after a media range")
    return ranges


def unquoted(value: str) -> str:
    if value.startswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def weight(ranges: list[MediaRange], media_type: str, parameters: dict[str, str]) -> float:
    """The weight of `media_type` with `parameters`: that of the most specific range matching
    it (the first of equally specific ones); 0 if none does."""
    matching = [r for r in ranges if r.matches(media_type, parameters)]
    if not matching:
        return 0.0
    return max(matching, key=lambda r: r.specificity).q


def prefers_html(accept: str | None) -> bool:
    """Whether a client sending this `Accept` (None: no header) weighs the page (`text/html;
    charset=utf-8`) strictly above JSON; a tie, no header or an unparseable one: False."""
    if accept is None:
        return False
    try:
        ranges = parse_accept(accept)
    except ValueError:
        return False
    return weight(ranges, HTML, {"charset": "utf-8"}) > weight(ranges, JSON, {})
