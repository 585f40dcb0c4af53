"""A daemon with its MQTT bridge in a process of its own, for the test that kills it (SIGKILL):
only a process that dies without a word shows the broker's last will at work.

Usage: mqtt_child.py BROKER_HOST BROKER_PORT STATE_DIR
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mqtt_harness import (
    site_with_bridge,  # tests/ is on PYTHONPATH: the tests' own helpers
)


class _Given:
    """The broker the test started, as the harness expects it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.tls_files = host, port, None


async def main(host: str, port: int, state: Path) -> None:
    async with site_with_bridge(state, _Given(host, port), "127.0.24.61"):  # type: ignore[arg-type]
        print("ready", flush=True)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])))
