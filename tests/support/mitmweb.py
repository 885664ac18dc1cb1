"""mitmweb with the addon, and a client of its web API: flows, bodies, options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.processes import Proxy, ProxyFactory, free_port, wait_for, web_options

PASSWORD = "test-password-0f3c"

Flow = dict[str, Any]


@dataclass
class Web:
    """A mitmweb with the addon, and a client of its web API that holds the auth cookie."""

    proxy: Proxy
    api: httpx.Client

    def flows(self) -> list[Flow]:
        r = self.api.get("/flows")
        assert r.status_code == 200, r.text
        flows: list[Flow] = r.json()
        return flows

    def finished_flow(self, path: str, timeout: float = 15.0) -> Flow:
        """The one flow for request `path`, once its response is complete."""
        found: list[Flow] = []

        def done() -> bool:
            matching = [f for f in self.flows() if f["request"]["path"] == path]
            assert len(matching) <= 1, f"{len(matching)} flows for {path}"
            found[:] = matching
            return (
                bool(matching)
                and (matching[0].get("response") or {}).get("timestamp_end") is not None
            )

        wait_for(done, timeout, f"mitmweb to show the finished flow for {path}")
        return found[0]

    def content(self, flow: Flow, message: str) -> bytes:
        r = self.api.get(f"/flows/{flow['id']}/{message}/content.data")
        assert r.status_code == 200, r.text
        return r.content

    def set_options(self, **values: str) -> None:
        """As mitmweb's option editor does: PUT /options."""
        r = self.api.put("/options", json=values, headers=self._xsrf())
        assert r.status_code == 200, r.text

    def command(self, name: str, *arguments: str) -> object:
        """As mitmweb's command bar does: POST /commands/<name>; the command's value."""
        r = self.api.post(
            f"/commands/{name}", json={"arguments": list(arguments)}, headers=self._xsrf()
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert "error" not in answer, answer
        return answer["value"]

    def _xsrf(self) -> dict[str, str]:
        """Tornado's XSRF cookie and header: any value, as long as the two match."""
        xsrf = "0123456789abcdef"
        self.api.cookies.set("_mitmproxy_xsrf", xsrf)
        return {"X-XSRFToken": xsrf}


@contextmanager
def start_web(
    start_proxy: ProxyFactory, upstream: str, redis_url: str, *args: str
) -> Iterator[Web]:
    web_port = free_port()
    proxy = start_proxy(
        upstream,
        redis_url,
        *web_options(web_port),
        "--set",
        f"web_password={PASSWORD}",
        *args,
        tool="mitmweb",
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{web_port}", timeout=10) as api:

        def web_answers() -> bool:
            try:
                api.get("/flows", params={"token": "wrong"})
            except httpx.HTTPError:
                return False
            return True

        wait_for(web_answers, 30, "mitmweb's web server")
        # The password is needed: without it, or with a wrong one, the API refuses.
        assert api.get("/flows").status_code == 403
        assert api.get("/flows", params={"token": "wrong"}).status_code == 403
        # The right one, once, sets a signed cookie that the client keeps.
        r = api.get("/flows", headers={"Authorization": f"Bearer {PASSWORD}"})
        assert r.status_code == 200, r.text
        assert any(c.startswith("mitmproxy-auth-") for c in api.cookies)
        yield Web(proxy, api)
