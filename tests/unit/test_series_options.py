"""counter_by, counter_routes and counter_max_series through the addon (taddons): what /status
shows, which option changes make a new counter, and the values refused naming the option."""

from __future__ import annotations

import json

import pytest
from mitmproxy import exceptions

from counting_addon.series.labels import Labeller
from tests.support.flows import all_hooks, flow
from tests.support.http_client import STATUS_FIELDS
from tests.support.in_process import MakeProxy

ROUTES = ["/users/{id}", "/static/*"]


async def status_body(running_proxy: MakeProxy, **options: object) -> dict[str, object]:
    running = running_proxy(**options)
    for path, method in [("/users/1", "GET"), ("/users/2", "GET"), ("/x", "POST")]:
        assert await all_hooks(running.proxy, flow(path, method)) is None
    answer = await all_hooks(running.proxy, flow("/status"))
    assert answer is not None and answer.status_code == 200
    body: dict[str, object] = json.loads(answer.get_text() or "")
    await running.proxy.counting.done()
    return body


async def test_status_lists_the_series_largest_first(counting_proxy: MakeProxy) -> None:
    body = await status_body(counting_proxy, counter_by="route, method", counter_routes=ROUTES)
    assert list(body) == [*STATUS_FIELDS, "by"]
    assert body["counter"] == 3
    assert body["by"] == [
        {"route": "/users/{id}", "method": "GET", "count": 2},
        {"route": "(unmatched)", "method": "POST", "count": 1},
    ]


async def test_without_counter_by_status_has_no_by(counting_proxy: MakeProxy) -> None:
    body = await status_body(counting_proxy)
    assert list(body) == list(STATUS_FIELDS)


def test_new_templates_change_where_requests_go_not_the_counter(
    counting_proxy: MakeProxy,
) -> None:
    running = counting_proxy(counter_by="route", counter_routes=ROUTES)
    first, labeller = running.counter, running.proxy.counting.labeller
    running.configure(counter_routes=["/users/*"])
    assert running.counter is first
    assert isinstance(running.proxy.counting.labeller, Labeller)
    assert running.proxy.counting.labeller is not labeller
    running.configure(counter_by="route,client")
    assert running.counter is not first, "another list of labels: another counter"
    assert running.counter.series.labels == ("route", "client")
    second = running.counter
    running.configure(counter_max_series=5)
    assert running.counter is not second and running.counter.series.max_series == 5


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("counter_by", "path", "'path' is not a label"),
        ("counter_by", "header:Cookie", "its values are secrets"),
        ("counter_by", "method,method", "'method' is repeated"),
        ("counter_by", "route", "the route label needs counter_routes"),
        ("counter_routes", ["users/{id}"], "must be a path starting with '/'"),
        ("counter_max_series", 0, "0 must be 1 or more"),
    ],
)
def test_bad_values_are_refused_naming_the_option_and_change_nothing(
    counting_proxy: MakeProxy, option: str, value: object, says: str
) -> None:
    running = counting_proxy(counter_by="method")
    before = running.counter, running.proxy.counting.labeller
    with pytest.raises(exceptions.OptionsError, match=f"^{option}: ") as refusal:
        running.configure(**{option: value})
    assert says in str(refusal.value)
    assert (running.counter, running.proxy.counting.labeller) == before
