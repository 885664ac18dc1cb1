"""Which class of response the client received, from the flow mitmproxy's hooks see."""

from __future__ import annotations

import pytest
from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.flow import Error
from mitmproxy.test import tflow, tutils

from counting_addon.code_class import CodeClass
from counting_addon.traffic.received import REQUEST_TOO_LARGE, on_error


def failed(message: str, status: int | None = None, streamed: bool = False) -> http.HTTPFlow:
    f = tflow.tflow(resp=tutils.tresp(status_code=status) if status else False)
    if f.response is not None:
        f.response.stream = streamed
    f.error = Error(message)
    return f


def test_a_streamed_response_cut_short_is_in_its_heads_class() -> None:
    """Its head went to the client before the body: whatever ended it, the client has it."""
    for message in ("Client disconnected.", "server closed connection", Error.KILLED_MESSAGE):
        assert on_error(failed(message, 404, streamed=True)) is CodeClass.C4XX


@pytest.mark.parametrize(
    "message",
    ["[Errno 111] Connect call failed ('127.0.0.1', 1)", "server closed connection",
     "Cannot parse HTTP response: bad", "Response body exceeds mitmproxy's body_size_limit."],
)  # fmt: skip
def test_an_upstream_failure_before_the_head_reached_the_client_is_mitmproxys_502(
    message: str,
) -> None:
    assert on_error(failed(message)) is CodeClass.C5XX
    # A buffered response's head, received from the upstream, never reached the client.
    assert on_error(failed(message, 200)) is CodeClass.C5XX


def test_a_request_over_body_size_limit_gets_a_413() -> None:
    assert on_error(failed(REQUEST_TOO_LARGE)) is CodeClass.C4XX


@pytest.mark.parametrize(
    "message",
    [Error.KILLED_MESSAGE, "stream reset by client (CANCEL)", "stream closed by client (0x10c)"],
)
def test_killed_flows_and_streams_the_client_ended_get_no_answer(message: str) -> None:
    assert on_error(failed(message)) is None
    assert on_error(failed(message, 200)) is None


def test_a_client_gone_gets_no_answer() -> None:
    """mitmproxy closes the client's connection before the error hook when the client left."""
    f = failed("Client disconnected.", 200)
    f.client_conn.state = ConnectionState.CLOSED
    assert on_error(f) is None
    f = failed("HTTP/1 protocol error: peer closed connection")
    f.client_conn.state = ConnectionState.CAN_READ  # it may still send; we can't answer
    assert on_error(f) is None
