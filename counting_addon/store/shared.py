"""What Redis holds for all the proxies sharing a key, as read back from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from counting_addon.code_class import CodeClass, no_responses


@dataclass(frozen=True, slots=True)
class Shared:
    """The shared counts: requests, and responses by class."""

    requests: int
    responses: dict[CodeClass, int] = field(default_factory=no_responses)


def integer(raw: bytes | str | None) -> int | None:
    """A value Redis holds as an integer; 0 for none; None for one that is not an integer."""
    try:
        return int(raw or 0)
    except ValueError:
        return None


def parse_shared(values: list[bytes | None]) -> Shared | None:
    """The batch script's reply, or GET + HMGET's: the counter, then the five classes (1xx
    first); None if one of them is not an integer."""
    numbers = [n for n in map(integer, values) if n is not None]
    if len(numbers) != len(values):
        return None
    requests, *responses = numbers
    return Shared(requests, dict(zip(CodeClass, responses, strict=True)))
