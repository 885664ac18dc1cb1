"""Option values: parsed by pure functions, and a bad one reported as one clear line naming the
option, also while mitmproxy loads the script."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

from mitmproxy import ctx, exceptions
from mitmproxy.utils import human

logger = logging.getLogger(__name__)


def parsed[T](option: str, parse: Callable[[Any], T]) -> T:
    """The value of `option` as `parse` makes it (a pure function raising ValueError)."""
    with blaming(option):
        return parse(getattr(ctx.options, option))


def parse_size(value: str) -> int:
    """A size in bytes, or with a k, m or g suffix (1024-based): 0 or more."""
    try:
        size = human.parse_size(value)
    except ValueError:
        size = None
    if size is None or size < 0:
        raise ValueError(f"{value!r} must be a size of 0 or more, such as 1m or 256k")
    return size


@contextlib.contextmanager
def blaming(option: str) -> Iterator[None]:
    """A ValueError raised inside becomes the OptionsError naming `option`, which mitmproxy
    shows and rolls the option back for."""
    try:
        yield
    except ValueError as e:
        raise exceptions.OptionsError(f"{option}: {e}") from None


def reported_cleanly[A](
    configure: Callable[[A, set[str]], None],
) -> Callable[[A, set[str]], None]:
    """Decorates an addon's configure, which raises OptionsError for a bad value.

    mitmproxy loads a script by calling configure with every option and prints the traceback
    of whatever it raises. On that call, log the message alone: mitmdump, mitmweb and mitmproxy
    exit on an error logged at start-up. Any other time (--set at runtime, the option editors)
    the error propagates and mitmproxy keeps the previous value.
    """

    @functools.wraps(configure)
    def checked(addon: A, updated: set[str]) -> None:
        try:
            configure(addon, updated)
        except exceptions.OptionsError as e:
            if updated != set(ctx.options.keys()):
                raise
            logger.error(str(e))

    return checked
