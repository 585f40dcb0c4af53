"""Assemble a running daemon from a site file: drivers, feeds, policy, recorders, loop."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt

from wattshift.daemon.config.gpu import GpuNodeConfig
from wattshift.daemon.config.mqtt import broker_login
from wattshift.daemon.config.policy_file import (
    policy_for_site,
    resolve,
    site_policy_modules,
)
from wattshift.daemon.config.site import SiteConfig
from wattshift.daemon.control.controller import Controller
from wattshift.daemon.control.gpu_fleet import GpuFleet
from wattshift.daemon.control.recorder import FanOut, JournalRecorder, Recorder
from wattshift.daemon.control.shadow import ShadowRecorder
from wattshift.daemon.journal.entries import EntryKind
from wattshift.daemon.journal.store import AsyncJournal, journal_path
from wattshift.daemon.mqtt.client import admits_anonymous, make_client, proves_identity
from wattshift.daemon.mqtt.metrics import AgentCollector, MeterCollector
from wattshift.drivers.agent_gpu import AgentJobs
from wattshift.drivers.agent_link import AgentLink
from wattshift.drivers.catalog import gpu_drivers, job_runners
from wattshift.drivers.jobs import JobRunner
from wattshift.drivers.mqtt_meter import SiteMeter
from wattshift.model.budget import BudgetSchedule

from .feeds import make_price_feeds
from .metrics import MetricsRecorder
from .restore import STARTED, close_open_commands
from .startup import identify_miners

if TYPE_CHECKING:
    from wattshift.drivers.pyasic_fleet import MinerFleet

Clock = Callable[[], float]


def make_agent_link(site: SiteConfig) -> AgentLink | None:
    """One broker connection for every ``driver: agent`` node (None: the site has none)."""
    if site.mqtt is None or not any(n.driver == "agent" for n in site.gpu_nodes):
        return None
    mqtt, login = site.mqtt, broker_login(site.mqtt, site.credentials)
    agents = mqtt.agents

    def client() -> aiomqtt.Client:
        return make_client(mqtt.host, mqtt.broker_port(), identifier=f"{mqtt.identifier(site.name)}-agents",
                           tls=mqtt.tls, login=login, keepalive=mqtt.keepalive)

    async def broker_open() -> bool:
        return await admits_anonymous(mqtt.host, mqtt.broker_port(), identifier=f"{mqtt.identifier(site.name)}-agents",
                                      tls=mqtt.tls)

    check = broker_open if proves_identity(login, mqtt.tls) and not agents.allow_anonymous_broker else None
    return AgentLink(client, prefix=agents.prefix, stale_after_seconds=agents.stale_after_seconds,
                     max_skew_seconds=agents.max_skew_seconds, heartbeat_seconds=agents.heartbeat_seconds,
                     reconnect_min_seconds=mqtt.reconnect_min_seconds, reconnect_max_seconds=mqtt.reconnect_max_seconds,
                     anonymity_check=check)


def make_gpu_fleet(site: SiteConfig, runner: JobRunner | None = None, link: AgentLink | None = None) -> GpuFleet | None:
    """The site's GPU nodes, each read through its driver; ``runner`` stands in for the site
    file's (the demo passes its simulated scheduler); ``link`` reaches the agent hosts."""
    if not site.gpu_nodes:
        return None
    drivers = gpu_drivers()
    timeout = site.drivers.call_timeout_seconds

    def options(node: GpuNodeConfig) -> dict[str, Any]:
        if node.driver != "agent":
            return {}
        if link is None:
            raise ValueError(f"gpu node {node.name}: driver agent needs the mqtt block (the agents' broker)")
        return {"host": node.agent_host, "link": link}

    node_drivers = {
        n.name: drivers.get(n.driver)(n.selection(), call_timeout_seconds=timeout, name=n.name, **options(n))
        for n in site.gpu_nodes
    }
    if runner is None and site.jobs.runner is not None:
        runner = job_runners().get(site.jobs.runner.kind)(**site.jobs.runner_options())
    elif runner is None and link is not None:
        # No scheduler of the site's own: the GPU hosts run their jobs, and their agents move them.
        runner = AgentJobs(link, timeout_seconds=timeout * 2)
    return GpuFleet(site.gpu_nodes, node_drivers, runner, site.jobs, call_timeout_seconds=timeout * 2)


def make_fleet(site: SiteConfig) -> MinerFleet:
    # Imported here: pyasic is heavy and configures logging at import; `validate` needs neither.
    from wattshift.drivers.pyasic_fleet import MinerFleet

    return MinerFleet.from_site(site)


@dataclass
class Daemon:
    site: SiteConfig
    fleet: MinerFleet
    gpus: GpuFleet | None
    controller: Controller
    metrics: MetricsRecorder
    journal: AsyncJournal | None


@contextlib.asynccontextmanager
async def open_daemon(
    site: SiteConfig,
    *,
    base_dir: Path,
    dry_run: bool = False,
    journal: bool = True,
    serve_metrics: bool = False,
    budget: BudgetSchedule | None = None,
    clock: Clock = time.monotonic,
    runner: JobRunner | None = None,
) -> AsyncIterator[Daemon]:
    """Everything the loop needs, opened in order and closed in reverse (journal last)."""
    feeds = make_price_feeds(site.prices, base_dir, clock, site.credentials)
    fleet = make_fleet(site)
    link = make_agent_link(site)
    gpus = make_gpu_fleet(site, runner, link)
    # The meter arrives over MQTT: the bridge (wattshift run) feeds it.
    meter = SiteMeter.from_config(site.mqtt.meter, clock) if site.mqtt is not None and site.mqtt.meter else None
    metrics = MetricsRecorder()
    if serve_metrics:
        metrics.serve(site.metrics_listen)
    opened: AsyncJournal | None = None
    recorders: list[Recorder] = [metrics]
    if journal:
        opened = await AsyncJournal.open(journal_path(site.state_dir))
        recorders.insert(0, JournalRecorder(opened))
    shadow: ShadowRecorder | None = None
    if site.shadow_policy_file is not None:
        shadow = ShadowRecorder.from_file(resolve(site.shadow_policy_file, base_dir), registry=metrics.registry,
                                          journal=opened, modules=site_policy_modules(site))
        recorders.append(shadow)
    try:
        controller = Controller(
            site,
            fleet,
            policy_for_site(site, base_dir),
            hashprice=feeds.hashprice,
            power_price=feeds.power,
            budget=budget or BudgetSchedule(site.budget_watts),
            recorder=FanOut(*recorders),
            dry_run=dry_run,
            gpus=gpus,
            gpu_rates=feeds.gpu_rates,
            meter=meter,
            clock=clock,
        )
        if shadow is not None:  # a candidate that plans reads the same forecast the live policy would
            controller.forecast_readers.append(shadow.candidate)
        if meter is not None:
            metrics.registry.register(MeterCollector(meter, lambda: controller.overhead.watts))
        if link is not None:
            metrics.registry.register(AgentCollector(link))
        if opened is not None:
            # Before this run's "started" row: what the last run left open is closed first.
            await close_open_commands(opened, controller)
            await opened.record(EntryKind.EVENT, f"{STARTED}{' (dry run)' if dry_run else ''}: site {site.name}",
                                data={"budget_watts": site.budget_watts, "miners": len(controller.miner_ids)})
        await identify_miners(fleet)  # a progress line and a summary, the detail at DEBUG
        if gpus is not None:
            await gpus.start()
        yield Daemon(site, fleet, gpus, controller, metrics, opened)
    finally:
        if gpus is not None:
            await gpus.close()
        await fleet.close()
        if opened is not None:
            await opened.record(EntryKind.EVENT, f"stopped: site {site.name}")
            await opened.aclose()
