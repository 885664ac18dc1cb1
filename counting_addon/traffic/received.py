"""The class of the status code a client received, read from mitmproxy 12's hooks.

mitmproxy ends every proxied flow with exactly one of two hooks, `response` or `error`
(proxy/layers/http/__init__.py: `handle_protocol_error` skips the error hook once the response
is done, and the response hook never follows an error):

- `response`: the response is complete, whether an addon set it, the upstream's was buffered
  (it goes to the client right after the hook) or streamed (its head and body already went).
  Its class is its status code's (`code_class`); a WebSocket's 101 is a 1xx.
- `error`: the flow failed. A streamed response's head went to the client before the body
  (`start_response_stream`): its class is the head's, whatever cut the body short. Otherwise
  the client got no head from the upstream, and mitmproxy answers it with an error response
  of its own when the failure is not the client's (a `ResponseProtocolError` whose code maps
  to a status, `ErrorCode.http_status_code`): 413 for a request over `body_size_limit`, 502
  for every upstream failure (unreachable, closed, malformed, too large). The client gets
  nothing when it went away (mitmproxy closed its connection before the hook), reset or
  closed its stream (HTTP/2, 3), or the flow was killed.
"""

from __future__ import annotations

from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy.connection import ConnectionState

from counting_addon.code_class import CodeClass, code_class

# mitmproxy's words for a client's HTTP/2 stream reset and HTTP/3 stream close (_http2.py,
# _http3.py): its connection stays open, so only the error says the client ended the stream.
CLIENT_ENDED_STREAM = ("stream reset by client", "stream closed by client")
# check_body_size's error for a request over body_size_limit, answered with a 413.
REQUEST_TOO_LARGE = "Request body exceeds mitmproxy's body_size_limit."


def on_error(flow: http.HTTPFlow) -> CodeClass | None:
    assert flow.error is not None
    response = flow.response
    if response is not None and response.stream:
        return code_class(response.status_code)
    message = flow.error.msg
    if (
        message == mflow.Error.KILLED_MESSAGE
        or message.startswith(CLIENT_ENDED_STREAM)
        or not flow.client_conn.state & ConnectionState.CAN_WRITE
    ):
        return None
    if message == REQUEST_TOO_LARGE:
        return CodeClass.C4XX
    return CodeClass.C5XX
