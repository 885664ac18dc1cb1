"""Responses by the class of their status code, as HAProxy (hrsp_1xx..5xx) and Envoy count them."""

from __future__ import annotations

import enum


class CodeClass(enum.Enum):
    C1XX = "1xx"
    C2XX = "2xx"
    C3XX = "3xx"
    C4XX = "4xx"
    C5XX = "5xx"

    # Members are singletons compared by identity: hashing them by identity is equivalent, and
    # in C, where Enum's own __hash__ is a Python call on each of the per-response dict updates.
    __hash__ = object.__hash__


# Indexed by the status code's first digit.
_BY_DIGIT: tuple[CodeClass | None, ...] = (None, *CodeClass)


def code_class(status_code: int) -> CodeClass | None:
    """The class of a status code; None for one outside 100-599, which no class holds."""
    if 100 <= status_code <= 599:
        return _BY_DIGIT[status_code // 100]
    return None


def no_responses() -> dict[CodeClass, int]:
    return dict.fromkeys(CodeClass, 0)
