"""HTTP for the price feeds: one GET, every failure mapped once into a :class:`PriceError`.

The feeds share this so that a timeout, a refused connection, an HTTP error and a body that is
not what was promised all read the same in the log: the source, what happened, the URL. Request
headers (where an API key travels) are never part of a message.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx

from .prices import PriceError

DEFAULT_TIMEOUT_S = 5.0
_BODY_SNIPPET = 120


async def http_get(
    source: str,
    url: str,
    *,
    client: httpx.AsyncClient | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """GET ``url``; a 200 response, or :class:`PriceError` naming ``source`` and the reason.

    ``client`` is the daemon's shared connection pool; without one a client lives for this call.
    """
    try:
        if client is None:
            async with httpx.AsyncClient(timeout=timeout) as own:
                response = await own.get(url, params=params, headers=headers)
        else:
            response = await client.get(url, params=params, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        raise PriceError(f"{source}: no answer within {timeout:g} s from {url}") from None
    except httpx.HTTPError as err:
        raise PriceError(f"{source}: cannot reach {url}: {type(err).__name__}: {err}") from None
    if response.status_code != 200:
        raise PriceError(f"{source}: HTTP {response.status_code} from {url}: {_snippet(response.text)}")
    return response


def json_body(source: str, response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PriceError(f"{source}: not JSON from {response.request.url}: {_snippet(response.text)}") from None


def pick(source: str, data: Any, path: str) -> Any:
    """``data`` at a dotted path: ``price``, ``data.0.price``, ``data.-1.price`` (last item)."""
    node = data
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and _is_int(part) and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            raise PriceError(f"{source}: no {path!r} in the answer (stopped at {part!r})")
    return node


def number(source: str, value: Any, what: str) -> float:
    """A finite number from JSON, where APIs send numbers or digit strings (mempool's sats)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PriceError(f"{source}: {what} is {value!r}, not a number")
    try:
        result = float(value)
    except ValueError:
        raise PriceError(f"{source}: {what} is {value!r}, not a number") from None
    if not math.isfinite(result):
        raise PriceError(f"{source}: {what} is {value!r}, not a finite number")
    return result


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat[:_BODY_SNIPPET] + ("..." if len(flat) > _BODY_SNIPPET else "") if flat else "(empty body)"
