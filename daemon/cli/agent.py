"""``wattshift agent``: the process on a GPU host that owns its NVML for the site's controller."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

from wattshift.daemon.agent.service import GpuAgent
from wattshift.daemon.config.agent import AgentConfig, load_agent
from wattshift.daemon.config.yamlfile import FileInvalid
from wattshift.daemon.runtime.service import Notifier, watchdog_seconds
from wattshift.drivers.base import DeviceError

from .common import EXIT_BAD_INPUT, explain

log = logging.getLogger("wattshift.agent")


def register(commands: Any) -> None:
    agent = commands.add_parser("agent", help="run the agent of a GPU host (its NVML, over the site's MQTT)")
    agent.add_argument("--config", type=Path, required=True, help="the agent file (see docs/mqtt.md)")
    agent.set_defaults(func=_agent)


def _agent(args: argparse.Namespace) -> int:
    try:
        config = load_agent(args.config)
    except FileInvalid as err:
        explain(args.config, err)
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(serve(config))
    except DeviceError as err:  # NVML could not start: no driver, no GPU
        log.error("%s", err)
        return 1


async def serve(config: AgentConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agent = GpuAgent.from_config(config)
    notifier = Notifier.from_env()
    pinger = asyncio.create_task(_supervise(agent, notifier))
    try:
        await agent.run(stop)
    finally:
        notifier.stopping()
        pinger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pinger
        notifier.close()
    return 0


async def _supervise(agent: GpuAgent, notifier: Notifier) -> None:
    """READY=1 once the cards are read; WATCHDOG=1 while they keep being read."""
    while agent.last_read_at is None:
        await asyncio.sleep(0.2)
    notifier.ready(f"agent {agent.config.host}: {len(agent.latest_cards)} GPU(s)")
    period = watchdog_seconds()
    if period is None:
        return
    while True:
        await asyncio.sleep(period / 2)
        if agent.reading_healthy(period):
            notifier.watchdog()
