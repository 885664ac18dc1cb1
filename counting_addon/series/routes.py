"""Route templates (counter_routes): what users write in OpenAPI, Starlette and FastAPI, matched
against a request's path, first match wins.

- `{name}` matches exactly one non-empty path segment;
- a template ending in `/*` matches that prefix and anything below it: `/static/*` matches
  `/static`, `/static/` and `/static/a/b.css`, not `/statics`;
- everything else matches literally (no regular expressions for the user to get wrong).

The templates are compiled into one regular expression of alternatives in their order, so that
matching a request costs one call into C however many templates there are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# The route of a request no template matches.
UNMATCHED = "(unmatched)"
_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def check_template(template: str) -> None:
    """A route template: an absolute path, printable, without query, fragment or spaces, whose
    `{name}`s are whole segments with distinct names, and with `*` only as a last segment."""
    if not template.startswith("/") or not template.isprintable():
        raise ValueError(f"{template!r} must be a path starting with '/'")
    if any(c in template for c in "?# "):
        raise ValueError(f"{template!r} must have no query, fragment or spaces")
    names: list[str] = []
    segments = template.split("/")[1:]
    for i, segment in enumerate(segments):
        if segment == "*" and i == len(segments) - 1:
            continue
        if "*" in segment:
            raise ValueError(f"{template!r}: '*' may only end a template, as '/*'")
        parameter = _PARAMETER.fullmatch(segment)
        if parameter:
            names.append(parameter.group(1))
        elif "{" in segment or "}" in segment:
            raise ValueError(
                f"{template!r}: a parameter is a whole segment named like an identifier, "
                "such as /users/{id}"
            )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{template!r} names {', '.join(repeated)} twice")


def _pattern(template: str) -> str:
    prefix, star = (template[:-2], True) if template.endswith("/*") else (template, False)
    parts = []
    for segment in prefix.split("/"):
        parts.append("[^/]+" if _PARAMETER.fullmatch(segment) else re.escape(segment))
    pattern = "/".join(parts)
    return f"{pattern}(?:/.*)?" if star else pattern


class Routes:
    """The templates, in order; `route(path)` is the first that matches, else UNMATCHED."""

    def __init__(self, templates: Sequence[str]) -> None:
        for template in templates:
            check_template(template)
        self.templates = tuple(templates)
        alternatives = (f"(?P<r{i}>{_pattern(t)})" for i, t in enumerate(self.templates))
        self._regex = re.compile("|".join(alternatives)) if self.templates else None

    def __eq__(self, other: object) -> bool:
        """The same templates in the same order: the same routes for every path."""
        return isinstance(other, Routes) and self.templates == other.templates

    def __hash__(self) -> int:
        return hash(self.templates)

    def route(self, path: str) -> str:
        """The route of a request path (its query string, if any, ignored)."""
        if self._regex is None:
            return UNMATCHED
        match = self._regex.fullmatch(path.partition("?")[0])
        if match is None or match.lastgroup is None:
            return UNMATCHED
        return self.templates[int(match.lastgroup[1:])]
