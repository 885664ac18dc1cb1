"""CountingProxy is the one addon mitmproxy sees: every hook a part has reaches that part."""

from __future__ import annotations

from typing import Any

import mitmproxy.proxy.layers  # noqa: F401  (defines the flow hooks, filling hooks.all_hooks)
import pytest
from mitmproxy import hooks

from counting_addon import CountingProxy

PARTS = ("status", "metrics", "access", "endpoints", "counting", "streaming", "framing")


def hooks_of(part: object) -> set[str]:
    return {name for name in hooks.all_hooks if callable(getattr(part, name, None))}


@pytest.mark.parametrize("part_name", PARTS)
def test_every_hook_of_a_part_is_handed_to_it(part_name: str) -> None:
    proxy = CountingProxy()
    part = getattr(proxy, part_name)
    calls: list[str] = []
    for name in hooks_of(part):

        def record(*args: Any, name: str = name) -> None:
            calls.append(name)

        setattr(part, name, record)
    for name in hooks_of(part):
        getattr(proxy, name)(*([object()] if name not in ("running", "done") else []))
    assert sorted(calls) == sorted(hooks_of(part))


def test_the_parts_hooks_are_the_proxys() -> None:
    proxy = CountingProxy()
    assert set().union(*(hooks_of(getattr(proxy, p)) for p in PARTS)) == hooks_of(proxy)


def test_mitmproxy_finds_the_commands_under_it() -> None:
    # The commands part has no hooks, so mitmproxy walking it costs next to nothing per request.
    proxy = CountingProxy()
    assert proxy.addons == [proxy.commands]
    assert not hooks_of(proxy.commands)
