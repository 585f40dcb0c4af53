"""A real HTTP server on loopback for testing HTTP drivers: routes, recorded requests, faults.

Standard library only (``http.server`` on its own thread), port 0 so tests never collide.
Each route answers a :class:`Reply` or a function of the :class:`Seen` request; a reply can
hang until the stub stops, to test client timeouts. Use it as a context manager: on exit the
hung handlers are released, the server is shut down and its socket closed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_HOST = "127.0.20.1"  # this suite's loopback range is 127.0.20.1-254


@dataclass(frozen=True)
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names


@dataclass(frozen=True)
class Reply:
    body: Any = ""  # str or bytes as they are; anything else as JSON
    status: int = 200
    content_type: str | None = None
    hang: bool = False  # say nothing until the stub stops

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.content_type or "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), self.content_type or "application/json"


Route = Reply | Callable[[Seen], Reply]


@dataclass
class HttpStub:
    host: str = DEFAULT_HOST
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        assert self._server is not None, "start the stub first"
        return f"http://{self.host}:{self._server.server_address[1]}"

    def route(self, path: str, reply: Route) -> None:
        self.routes[path] = reply

    def hits(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def __enter__(self) -> HttpStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                seen = Seen(parts.path, query, {k.lower(): v for k, v in self.headers.items()})
                stub.seen.append(seen)
                route = stub.routes.get(parts.path)
                if route is None:
                    reply = Reply({"error": f"no route {parts.path}"}, status=404)
                else:
                    reply = route(seen) if callable(route) else route
                if reply.hang:
                    stub._release.wait(30)
                    return
                body, content_type = reply.encoded()
                self.send_response(reply.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # tests read stub.seen, not stderr

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="httpstub",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
