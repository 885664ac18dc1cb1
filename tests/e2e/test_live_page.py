"""The live page in a real browser: Debian's headless Chromium (Selenium, chromedriver) in front
of a real mitmdump, Redis and upstream. The page follows the requests the test sends, shows a
Redis outage and its end, is fenced by counter_allow_from, shows a hostile label as text, and
causes no request to reach the upstream. The first test writes docs/images/live-page.png.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import cast

import httpx
import pytest
import redis
from selenium.webdriver.common.by import By

from counting_addon.launcher.embedded_redis import EmbeddedRedis
from tests.support.browser import Browser, LogEntry, missing_browser
from tests.support.http_client import poll_status, status_json
from tests.support.load import Load
from tests.support.processes import (
    ROOT,
    Process,
    Proxy,
    ProxyFactory,
    reached_upstream,
    wait_for,
)
from tests.support.series import series_options

pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser()))

SCREENSHOT = ROOT / "docs" / "images" / "live-page.png"
# The page asks every second; on a busy 2-core machine an answer may take a few polls to show.
SHOWN = 20.0
ANSWERING = "Redis answering"
# More clients than the page's 20 largest series.
CLIENTS = 24
CHART_POINTS = 6
# One client as fast as it goes while the rate and the chart are watched, a few seconds.
LOAD_REQUESTS = 20_000
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


@dataclass(frozen=True, slots=True)
class Watched:
    """A proxy in front of an upstream that records what reaches it."""

    proxy: Proxy
    upstream: Process

    def reached(self) -> list[str]:
        return reached_upstream(self.upstream)


@pytest.fixture
def watched_proxy(
    start_proxy: ProxyFactory, recorded_upstream: tuple[Process, str], redis_url: str
) -> Callable[..., Watched]:
    """Starts a proxy with these arguments in front of the test's recorded upstream, counting
    into the shared test Redis."""
    upstream, url = recorded_upstream
    return lambda *args: Watched(start_proxy(url, redis_url, *args), upstream)


def number(n: int) -> str:
    """An integer as the page writes it."""
    return f"{n:,}"


def showing(text: str) -> Callable[[str], bool]:
    """For Browser.wait_text: a figure whose first line is `text`."""
    return lambda shown: figure(shown) == text


def responded(body: dict[str, object]) -> int:
    """The responses a 200 /status body counts, all classes."""
    responses = body["responses"]
    assert isinstance(responses, dict), body
    return sum(responses.values())


def percent(part: int, whole: int) -> str:
    """A share as the page writes it: the double's exact value rounded half up, as
    Intl.NumberFormat does (Python's format rounds a tie half to even)."""
    share = Decimal(100 * part / whole).quantize(Decimal("0.1"), ROUND_HALF_UP)
    return f"{share}%"


def figure(text: str) -> str:
    """A figure's first line: the value, without the second reading under it."""
    return text.splitlines()[0] if text else ""


def send_all(url: str, requests: list[tuple[str, dict[str, str]]]) -> list[str]:
    """GET each (path, headers) in order, each answered by the upstream; "GET path" for
    each, as the upstream records them."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for path, headers in requests:
            r = client.get(path, headers=headers)
            assert r.status_code in (200, 404, 500), (r.status_code, r.text)
    return [f"GET {path}" for path, _ in requests]


def is_rate_above_zero(text: str) -> bool:
    try:
        return float(text.replace(",", "")) > 0
    except ValueError:
        return False


def chart_points(browser: Browser) -> int:
    """The rates the chart holds, as the page counts them on its chart's element."""
    return int(browser.driver.find_element(By.ID, "chart").get_attribute("data-points") or 0)


def page_errors(browser: Browser, expected: tuple[str, ...] = ()) -> list[LogEntry]:
    """The console's errors but those whose message holds one of `expected`."""
    return [e for e in browser.errors() if not any(x in e.message for x in expected)]


def open_page(browser: Browser, url: str) -> None:
    browser.driver.get(f"{url}/status")
    browser.wait_text("redis", lambda t: t == ANSWERING, SHOWN, "the page's first answer")


def test_the_page_follows_the_requests_sent_and_reaches_no_upstream(
    browser: Browser, watched_proxy: Callable[..., Watched]
) -> None:
    """The fence lets its own clients in (127.0.0.1 here); all the figures follow."""
    watched = watched_proxy(
        "--set", "counter_allow_from=127.0.0.1",
        *series_options("route,header:X-Client-Id", "/users/{id}"),
    )  # fmt: skip
    p = watched.proxy
    open_page(browser, p.url)
    assert browser.text("counter") == "0"
    assert browser.driver.title == "counting_addon: live"

    # Client k sends k + 1 requests: 24 series of different sizes, the largest first.
    sent = send_all(
        p.url,
        [
            (f"/users/{k}", {"X-Client-Id": f"client-{k:02}"})
            for k in range(CLIENTS)
            for _ in range(k + 1)
        ]
        + [("/code/404", {}), ("/code/500", {}), ("/code/500", {})],
    )
    total = len(sent)
    browser.wait_text("counter", showing(number(total)), SHOWN, f"counter {total}")
    with Load(p.url, concurrency=1, max_requests=LOAD_REQUESTS, max_seconds=60) as load:
        browser.wait_text("rate", is_rate_above_zero, SHOWN, "a rate above 0 while requests flow")
        # A few seconds of them: points enough for the screenshot's chart.
        wait_for(lambda: chart_points(browser) >= CHART_POINTS, SHOWN, "points in the chart")
    assert load.results.failed == [], load.results.failed[:5]
    sent += [f"GET /load/0/{i}" for i in range(load.results.ok)]
    total = len(sent)
    browser.wait_text("counter", showing(number(total)), SHOWN, f"counter {total}")

    # A response's class and bytes may land a batch after its request's count: the JSON once
    # every response is in, then the page once it shows the same.
    _, body = poll_status(
        p.url, lambda code, b: code == 200 and responded(b) == total, SHOWN, "every response"
    )
    assert body["counter"] == total, body
    shown = {name: number(total) for name in ("last_minute", "last_hour", "last_day")} | {
        name: f"{number(cast(int, body[name]))} B" for name in ("request_bytes", "response_bytes")
    }
    for name, text in shown.items():
        browser.wait_text(name, showing(text), SHOWN, f"{name} {text}")
    classes = [f"2xx {number(total - 3)} {percent(total - 3, total)}", f"5xx 2 {percent(2, total)}"]
    browser.wait_text(
        "responses-body", lambda t: set(classes) <= set(t.splitlines()), SHOWN, f"{classes}"
    )
    assert browser.driver.find_elements(By.CSS_SELECTOR, "#chart canvas")

    # The 20 largest series of the JSON's, each with its share of them all.
    series = body["by"]
    assert isinstance(series, list) and len(series) == CLIENTS + 1, series
    rows = [row.text for row in browser.driver.find_elements(By.CSS_SELECTOR, "#series-body tr")]
    assert rows == [
        f"{s['route']} {s['header:X-Client-Id']} {number(s['count'])} {percent(s['count'], total)}"
        for s in series[:20]
    ]
    assert browser.text("series-note") == (
        f"{CLIENTS + 1} series, {number(total)} requests in all; the largest 20 shown."
    )

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.driver.save_screenshot(str(SCREENSHOT))
    assert page_errors(browser) == []
    # Only the test's own requests reached the upstream: not the page, its polling or an icon.
    assert Counter(watched.reached()) == Counter(sent)


def test_a_redis_outage_shows_on_the_page_and_recovery_clears_it(
    browser: Browser, own_redis: EmbeddedRedis, start_proxy: ProxyFactory, upstream: str
) -> None:
    p = start_proxy(upstream, own_redis.url)
    open_page(browser, p.url)
    send_all(p.url, [(f"/before/{i}", {}) for i in range(5)])
    browser.wait_text("counter", lambda t: t == "5", SHOWN, "counter 5")

    own_redis.stop()

    def shows_the_503() -> bool:
        code, body = status_json(p.url)
        return code == 503 and f"Redis not answering: {body['error']}" in browser.text("redis")

    wait_for(shows_the_503, SHOWN, "the page showing the 503's error")
    assert browser.text("stale").startswith("figures stale since ")
    figures = browser.driver.find_element(By.ID, "figures")
    assert "stale" in (figures.get_attribute("class") or "").split()
    send_all(p.url, [(f"/during/{i}", {}) for i in range(3)])
    waiting = "(3 counts waiting in this proxy)"
    browser.wait_text("redis", lambda t: t.endswith(waiting), SHOWN, waiting)
    assert browser.text("counter") == "5", "the last good figures are kept"

    own_redis.start()
    browser.wait_text("redis", lambda t: t == ANSWERING, SHOWN, "Redis answering again")
    browser.wait_text("counter", lambda t: t == "8", SHOWN, "counter 8 after the outage")
    assert browser.text("stale") == ""
    assert "stale" not in (figures.get_attribute("class") or "").split()
    # The browser logs each 503 it met as a resource that failed to load; nothing else.
    assert page_errors(browser, ("status of 503",)) == []

    p.stop()
    gone = browser.wait_text(
        "redis", lambda t: t.startswith("The proxy did not answer"), SHOWN, "the proxy gone"
    )
    assert browser.text("stale").startswith("figures stale since "), gone
    assert browser.text("counter") == "8"
    # A poll the stopping proxy cut short or refused is logged as a network error
    # (ERR_EMPTY_RESPONSE, ERR_CONNECTION_REFUSED, ...); nothing else.
    assert page_errors(browser, ("status of 503", "net::ERR_")) == []


def test_a_counter_that_goes_down_restarts_the_rate_never_below_zero(
    browser: Browser, proxy: Proxy, redis_client: redis.Redis
) -> None:
    """A reset, as the page sees it: the count lower than the last one it read."""
    send_all(proxy.url, [(f"/before/{i}", {}) for i in range(20)])
    open_page(browser, proxy.url)
    browser.wait_text("counter", showing("20"), SHOWN, "counter 20")
    seen: list[str] = []

    def restarted() -> bool:
        seen.append(browser.text("rate"))
        return "restarted" in seen[-1]

    redis_client.set("counter", 5)
    wait_for(restarted, SHOWN, "the rate restarted")
    browser.wait_text("counter", showing("5"), SHOWN, "counter 5")
    send_all(proxy.url, [(f"/after/{i}", {}) for i in range(3)])
    browser.wait_text("counter", showing("8"), SHOWN, "counter 8")
    # Rates after the restart are from the counts after it: 3 requests, never 20 back.
    rates = [figure(text) for text in seen] + [figure(browser.text("rate"))]
    assert all(r == "-" or 0 <= float(r) for r in rates), rates
    assert page_errors(browser) == []


def test_counter_allow_from_fences_the_page(
    browser: Browser, watched_proxy: Callable[..., Watched]
) -> None:
    watched = watched_proxy("--set", "counter_allow_from=10.0.0.0/8")
    browser.driver.get(f"{watched.proxy.url}/status")
    body = browser.driver.find_element(By.TAG_NAME, "body").text
    assert '{"error": "forbidden"}' in body
    assert browser.driver.find_elements(By.ID, "counter") == []
    # No page, so no inline icon: the browser asks the upstream's /favicon.ico for the JSON
    # document, a path like any other. Nothing else reached it.
    assert set(watched.reached()) <= {"GET /favicon.ico"}


def test_a_hostile_label_shows_as_text(
    browser: Browser, watched_proxy: Callable[..., Watched]
) -> None:
    """A label value is what a client sent: as HTML it would run (CSP aside) and load /x."""
    watched = watched_proxy(*series_options("header:X-Client-Id"))
    sent = send_all(watched.proxy.url, [("/a", {"X-Client-Id": HOSTILE})])
    open_page(browser, watched.proxy.url)
    browser.wait_text("series-body", lambda t: HOSTILE in t, SHOWN, "the hostile label")
    cell = browser.driver.find_element(By.CSS_SELECTOR, "#series-body td")
    assert cell.text == HOSTILE
    assert browser.driver.find_elements(By.CSS_SELECTOR, "#series-body img") == []
    assert browser.driver.title == "counting_addon: live"
    assert page_errors(browser) == []
    assert watched.reached() == sent
