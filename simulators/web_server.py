"""A small HTTP/1.1 server for a simulated miner's web API, playing the miner's faults.

Stock Antminer (CGI under ``/cgi-bin/``, digest auth) and VNish (``/api/v1/``, a bearer token)
both serve their API over plain HTTP on port 80, which pyasic reaches with ``httpx``. This is
the same listener for both: one request per connection (every reply says ``Connection: close``,
which httpx honours), bounded request size, and the faults judged when a request arrives:

- NO_ANSWER, or rebooting: the connection is dropped with a TCP reset;
- HANG: the request is read and nothing comes back until :meth:`WebServer.stop`;
- GARBAGE: the request is read and answered with bytes that are not HTTP, then closed;
- anything else: the firmware's :data:`Handler` answers.

Digest authentication (RFC 7616 with MD5 and ``qop=auth``, as Bitmain's lighttpd does it) is
here too, so a firmware only says which realm and password it wants.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .cgminer import GARBAGE, _reset
from .listener import TcpListener
from .miner import Fault, SimulatedMiner

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 256 * 1024
MAX_NONCES = (
    256  # challenges outstanding; older ones are forgotten (the client asks again)
)
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    def json(self) -> Any:
        """The body as JSON; ``None`` when it is empty or not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, value: Any, status: int = 200) -> HttpReply:
        return cls(status, json.dumps(value).encode())

    @classmethod
    def text(
        cls, text: str, status: int = 200, content_type: str = "text/plain"
    ) -> HttpReply:
        return cls(status, text.encode(), content_type)

    def encoded(self) -> bytes:
        head = [
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + self.body


Handler = Callable[[HttpRequest], Awaitable[HttpReply]]


class WebServer(TcpListener):
    """One HTTP listener on ``(miner.host, port)`` answering through a :data:`Handler`."""

    DROPPED = (*TcpListener.DROPPED, asyncio.LimitOverrunError, ValueError)  # a cut mid-header

    def __init__(self, miner: SimulatedMiner, handler: Handler, *, port: int = 80) -> None:
        super().__init__(miner, port)
        self.handler = handler

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not self.miner.reachable:
            _reset(writer)
            return
        request = await read_request(reader)
        if request is None:
            writer.write(HttpReply.text("bad request", 400).encoded())
            await writer.drain()
            return
        if (
            not self.miner.reachable
        ):  # went away (a reboot) while the request was on its way
            _reset(writer)
            return
        if self.miner.fault is Fault.HANG:
            await asyncio.Event().wait()  # until stop() cancels us
        if self.miner.fault is Fault.GARBAGE:
            writer.write(GARBAGE)
        else:
            writer.write((await self.handler(request)).encoded())
        await writer.drain()


async def read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    """One request, or None when it is not HTTP/1.x or too big."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEADER_BYTES:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        return None
    if not 0 <= length <= MAX_BODY_BYTES:
        return None
    body = await reader.readexactly(length) if length else b""
    return HttpRequest(parts[0].upper(), urlsplit(parts[1]).path, headers, body)


# -- digest authentication ------------------------------------------------------------------------

_DIGEST_FIELD = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


class DigestAuth:
    """HTTP digest authentication (MD5, ``qop=auth``) for one realm, user and password."""

    def __init__(self, realm: str, username: str, password: str) -> None:
        self.realm = realm
        self.username = username
        self.password = password
        self._nonces: collections.deque[str] = collections.deque(maxlen=MAX_NONCES)

    def challenge(self) -> HttpReply:
        nonce = secrets.token_hex(16)
        self._nonces.append(nonce)
        header = (
            f'Digest realm="{self.realm}", qop="auth", nonce="{nonce}", algorithm=MD5'
        )
        body = b"<html><head><title>401 Unauthorized</title></head><body>401 Unauthorized</body></html>"
        return HttpReply(401, body, "text/html", {"WWW-Authenticate": header})

    def check(self, request: HttpRequest) -> bool:
        """True when the request carries a valid answer to one of our challenges."""
        header = request.headers.get("authorization", "")
        if not header.startswith("Digest "):
            return False
        fields = {
            m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _DIGEST_FIELD.finditer(header)
        }
        if fields.get("username") != self.username or fields.get("realm") != self.realm:
            return False
        if fields.get("nonce") not in self._nonces:
            return False
        ha1 = _md5(f"{self.username}:{self.realm}:{self.password}")
        ha2 = _md5(f"{request.method}:{fields.get('uri', '')}")
        if fields.get("qop") == "auth":
            expected = _md5(
                f"{ha1}:{fields['nonce']}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:auth:{ha2}"
            )
        else:
            expected = _md5(f"{ha1}:{fields['nonce']}:{ha2}")
        return secrets.compare_digest(expected, fields.get("response", ""))

    def forget(self) -> None:
        """A restart forgets every nonce handed out."""
        self._nonces.clear()


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
