"""GPU nodes the demo serves through a ``wattshift agent``, as a site's GPU servers are.

With its private broker, the demo turns the first ``AGENT_NODES`` of its simulated GPU nodes
into ``driver: agent`` nodes, and runs each node's agent in this process, over the same
simulated NVML library (an agent on a real host runs alone, as ``wattshift agent``; the
integration tests run it so). The controller then reads and caps those cards only over MQTT.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from wattshift.daemon.agent.service import GpuAgent
from wattshift.daemon.config.agent import AgentConfig
from wattshift.drivers.agent_wire import DEFAULT_PREFIX
from wattshift.simulators.broker import PrivateBroker
from wattshift.simulators.gpu_site import SimulatedGpuSite

AGENT_NODES = 1


def through_agents(nodes: list[dict[str, Any]], count: int = AGENT_NODES) -> list[str]:
    """Turn the first ``count`` node entries of a site file into agent nodes; their names."""
    names = []
    for entry in nodes[:count]:
        entry.update(driver="agent", host=entry["name"], gpus="all")
        names.append(entry["name"])
    return names


def agent_config(gpus: SimulatedGpuSite, name: str, broker: PrivateBroker, tick_s: float) -> AgentConfig:
    node = gpus.nodes[name]
    indices = [str(node.first_index + i) for i in range(node.spec.gpu_count)]
    return AgentConfig.model_validate({
        "host": name,
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_max_seconds": 5},
        "gpus": indices,
        "read_interval_seconds": min(2.0, tick_s),
        "controller_silence_seconds": max(60.0, 10 * tick_s),
    })


@contextlib.asynccontextmanager
async def demo_agents(gpus: SimulatedGpuSite, names: list[str], broker: PrivateBroker,
                      tick_s: float) -> AsyncIterator[list[GpuAgent]]:
    """Each named node's agent, running until the block ends."""
    stop = asyncio.Event()
    agents = [GpuAgent.from_config(agent_config(gpus, name, broker, tick_s)) for name in names]
    tasks = [asyncio.create_task(agent.run(stop), name=f"agent-{agent.config.host}") for agent in agents]
    try:
        with contextlib.suppress(TimeoutError):  # the controller waits for their first reading anyway
            async with asyncio.timeout(10):
                await asyncio.gather(*(agent.connected.wait() for agent in agents))
        yield agents
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


def agents_line(agents: list[GpuAgent], broker: PrivateBroker) -> str:
    hosts = ", ".join(a.config.host for a in agents)
    return (f"GPU node(s) {hosts} served through their agent over MQTT: "
            f"mosquitto_sub -h {broker.host} -p {broker.port} -t '{DEFAULT_PREFIX}/#' -v")
