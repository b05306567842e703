"""A link to the store that the tests can break: an HTTP proxy on 127.0.0.1 in the test process.

A client pointed at `LinkProxy.endpoint` (as `AWS_ENDPOINT_URL`) reaches the real store through it.
The test can stall the link (requests are received, and logged with the time the client sent them,
but held until `resume`, as a link that stops forwarding does), lose the answer to a request (the
store gets and does the request; the client's connection is closed before the reply), or make
the store refuse requests with an S3 error code. Each request is logged: when it was received,
its method and key, and whether it reached the store, so a test can count what a client wrote
and when it started writing.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

from app.stack.prefect_server import LOOPBACK

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "expect"}
Match = Callable[[str, str], bool]  # (method, path) -> bool


@dataclass
class Request:
    received: float  # time.monotonic() when the client's request arrived at the proxy
    method: str
    path: str
    forwarded: bool = False

    @property
    def writes(self) -> bool:
        return self.method in ("PUT", "POST", "DELETE")


class LinkProxy:
    """See the module docstring. Use as a context manager, or `start` and `stop`."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname, target.port)
        self.requests: list[Request] = []
        self.open = threading.Event()
        self.open.set()
        self._lose_reply: list[Match] = []
        self._refuse: list[tuple[Match, int, str]] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((LOOPBACK, 0), _handler(self))
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client that hung up
        self.endpoint = f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.open.set()
        self.server.shutdown()
        self.server.server_close()

    def stall(self) -> None:
        """Stop forwarding: requests wait at the proxy until `resume`."""
        self.open.clear()

    def resume(self) -> None:
        self.open.set()

    def lose_reply_once(self, match: Match) -> None:
        """Forward the next request that `match`es, and close the client's connection instead of
        answering it."""
        with self._lock:
            self._lose_reply.append(match)

    def refuse(self, match: Match, status: int, code: str) -> None:
        """Answer every request that `match`es with the S3 error `code` and `status`, without
        forwarding it."""
        with self._lock:
            self._refuse.append((match, status, code))

    def stop_refusing(self) -> None:
        """Forward every request again."""
        with self._lock:
            self._refuse.clear()

    def writes_under(self, prefix: str, since: float = 0.0) -> list[Request]:
        """Write requests for keys under `prefix` (`/bucket/key…`) received at or after `since`."""
        return [
            request
            for request in list(self.requests)
            if request.writes and request.path.startswith(prefix) and request.received >= since
        ]

    def _take(self, matches: list, method: str, path: str):
        with self._lock:
            for index, item in enumerate(matches):
                match = item[0] if isinstance(item, tuple) else item
                if match(method, path):
                    return matches.pop(index) if matches is self._lose_reply else item
        return None


def _handler(proxy: LinkProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: the test reads `proxy.requests`
            pass

        def _relay(self) -> None:
            body = self._body()
            request = Request(time.monotonic(), self.command, self.path.split("?")[0])
            proxy.requests.append(request)
            refusal = proxy._take(proxy._refuse, self.command, request.path)
            if refusal is not None:
                self._send_error(refusal[1], refusal[2])
                return
            proxy.open.wait()
            connection = http.client.HTTPConnection(*proxy.upstream, timeout=120)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body, headers=headers)
            answer = connection.getresponse()
            content = answer.read()
            request.forwarded = True
            connection.close()
            if proxy._take(proxy._lose_reply, self.command, request.path) is not None:
                self.close_connection = True
                return  # the store did it; the client never hears
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            length = answer.getheader("Content-Length")
            self.send_header("Content-Length", length if self.command == "HEAD" else len(content))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send_error(self, status: int, code: str) -> None:
            content = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>refused by the test's link</Message></Error>"
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    return Handler
