"""CountingProxy is the one addon mitmproxy sees: every hook a part has reaches that part."""

from __future__ import annotations

from typing import Any

from mitmproxy import hooks
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import layers, server_hooks  # noqa: F401  (define the hooks: hooks.all_hooks)
from mitmproxy.test import taddons, tflow

from counting_addon import CountingProxy
from counting_addon.commands import UNKNOWN
from counting_addon.endpoints.rules import ENDPOINT_FLOW
from tests.support.processes import SCRIPT

# The proxy's own parts; the endpoints hand their hooks on to access control themselves.
PARTS = ("endpoints", "counting", "streaming", "framing", "websocket_history")


def hooks_of(part: object) -> set[str]:
    return {name for name in hooks.all_hooks if callable(getattr(part, name, None))}


def test_every_hook_of_every_part_is_handed_to_it() -> None:
    proxy = CountingProxy()
    expected = {(p, name) for p in PARTS for name in hooks_of(getattr(proxy, p))}
    calls: set[tuple[str, str]] = set()
    for part_name, name in expected:

        def record(*args: Any, call: tuple[str, str] = (part_name, name)) -> None:
            calls.add(call)

        setattr(getattr(proxy, part_name), name, record)
    # The proxy hands a hook to the endpoints or to the other parts, by the flow: one of each.
    proxied, endpoint = tflow.tflow(), tflow.tflow()
    endpoint.metadata[ENDPOINT_FLOW] = "status"
    for flow in (proxied, endpoint):
        for name in hooks_of(proxy):
            getattr(proxy, name)(*([] if name in ("running", "done") else [flow]))
    assert calls == expected


def test_the_parts_hooks_are_the_proxys() -> None:
    proxy = CountingProxy()
    assert set().union(*(hooks_of(getattr(proxy, p)) for p in PARTS)) == hooks_of(proxy)


def test_mitmproxy_has_no_child_addon_to_walk() -> None:
    # mitmproxy walks an addon's children on every hook it calls: the commands are the
    # proxy's own methods instead.
    assert not hasattr(CountingProxy(), "addons")


def test_the_script_gives_mitmproxy_every_hook_and_command_as_its_own_names() -> None:
    # One level less for mitmproxy to walk on every hook call (proxy.script_names).
    with taddons.context(Proxyserver()) as tctx:
        module = tctx.script(str(SCRIPT))
        assert module is not None and not hasattr(module, "addons")
        assert hooks_of(CountingProxy()) <= hooks_of(module)
        commands = tctx.master.commands
        assert {"counter.get", "counter.reset", "counter.flush", "counter.top"} <= set(
            commands.commands
        )
        assert commands.call("counter.get") == UNKNOWN
