"""What happens to each proxied request and response: counting it, letting the ones in flight
end at shutdown, the class of the response the client received, streaming bodies, and framing
HTTP/2 bodies of unknown length for HTTP/1.1 upstreams."""
