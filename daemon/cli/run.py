"""``wattshift run`` (the daemon) and ``wattshift plan`` (observe once, decide once, print)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Any

from wattshift.daemon.config.policy_file import (
    load_policy_file,
    resolve,
    site_policy_modules,
    site_policy_path,
)
from wattshift.daemon.config.yamlfile import FileInvalid
from wattshift.daemon.runtime.app import open_daemon
from wattshift.daemon.runtime.controls import operator_controls
from wattshift.daemon.runtime.metrics import MetricsUnavailable
from wattshift.daemon.runtime.service import supervised_site

from .common import EXIT_BAD_INPUT, explain, load_or_explain
from .summary import plan_table

log = logging.getLogger("wattshift")


def register(commands: Any) -> None:
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, required=True, help="the site file")
    run.add_argument("--dry-run", action="store_true", help="decide and journal, send nothing")
    run.set_defaults(func=_run)
    plan = commands.add_parser("plan", help="observe once, decide once, print what would be done")
    plan.add_argument("--config", type=Path, required=True, help="the site file")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(func=_plan)


def _run(args: argparse.Namespace) -> int:
    site = load_or_explain(args.config)
    if site is None or not _policies_valid(site, args.config.parent):
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_serve(site, args.config.parent, args.dry_run))
    except MetricsUnavailable as err:  # before anything was opened or sent
        log.error("%s", err)
        return 1


def _policies_valid(site: Any, base: Path) -> bool:
    """Refuse to start on a bad policy file (live or shadow), with its file:line errors."""
    for path in (site_policy_path(site, base), site.shadow_policy_file and resolve(site.shadow_policy_file, base)):
        if path is None:
            continue
        try:
            load_policy_file(path, site_policy_modules(site))
        except FileInvalid as err:
            explain(path, err)
            return False
    return True


async def _serve(site: Any, base: Path, dry_run: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_daemon(site, base_dir=base, dry_run=dry_run, serve_metrics=True) as daemon:
        log.info("running site %s: %d miners, metrics on http://%s/metrics%s", site.name,
                 len(daemon.controller.miner_ids), site.metrics_listen, " (dry run)" if dry_run else "")
        async with (
            supervised_site(daemon.controller, site),  # READY=1, watchdog, STOPPING=1
            operator_controls(daemon, site, base),  # overrides, policy reloads, MQTT
        ):
            await daemon.controller.run(stop)
    return 0


def _plan(args: argparse.Namespace) -> int:
    site = load_or_explain(args.config)
    if site is None:
        return EXIT_BAD_INPUT
    if not _policies_valid(site, args.config.parent):
        return EXIT_BAD_INPUT
    return asyncio.run(_plan_once(site, args.config.parent, args.json))


async def _plan_once(site: Any, base: Path, as_json: bool) -> int:
    async with open_daemon(site, base_dir=base, dry_run=True, journal=False) as daemon:
        snapshot = await daemon.controller.observe()
        allocation = daemon.controller.policy.decide(snapshot)
    if as_json:
        print(json.dumps(plan_json(snapshot, allocation), indent=2))
    else:
        print(plan_table(snapshot, allocation))
    return 0


def plan_json(snapshot: Any, allocation: Any) -> dict[str, Any]:
    return {
        "at": snapshot.at.isoformat(),
        "budget_watts": snapshot.budget_watts,
        "summary": allocation.summary,
        "devices": [_device_json(snapshot.load(t.device_id), t) for t in allocation],
    }


def _device_json(load: Any, target: Any) -> dict[str, Any]:
    return {
        "class": load.kind.value,
        "device": target.device_id,
        "circuit": load.circuit,
        "now_watts": load.measured_watts,
        "target_watts": target.watts,
        "controllable": load.controllable,
        "value_usd_per_mwh": target.value_usd_per_mwh,
        "reason": target.reason,
    }
