"""What an operator drives a running daemon with, opened around the control loop.

- maintenance overrides (devices or classes forced on or off), wrapped around the policy;
- the policy file, reloaded when edited, on SIGHUP (``systemctl reload``) or by an MQTT
  command -- a reload replaces the policy *under* the overrides, never the overrides;
- the MQTT bridge, when the site file has an ``mqtt`` section: state out, commands in, the
  site meter fed, and its link's metrics on /metrics.

``wattshift run`` and ``wattshift demo`` open the same controls, so the demo answers the same
commands an operator would send to a real site.

Budget events, overrides, manual mode and the policy file switched to survive a restart: they
are put back from the state file before the loop's first decision, and every change is saved
there before it takes effect; so are the miners' last stops and starts, as they land
(:mod:`wattshift.daemon.runtime.restore`, :mod:`wattshift.daemon.runtime.site_state`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from wattshift.daemon.config.mqtt import broker_login
from wattshift.daemon.config.policy_file import site_policy_path
from wattshift.daemon.control.recorder import FanOut
from wattshift.daemon.mqtt.bridge import MqttBridge
from wattshift.daemon.mqtt.handler import PolicySwitcher
from wattshift.daemon.mqtt.metrics import MqttCollector
from wattshift.policies.overrides import InnerPolicy, OverridePolicy, Overrides

from .policy_reload import PolicyReloader, ReloadResult, policy_reloading
from .restore import restore_operator_state
from .site_state import SiteState, state_path

if TYPE_CHECKING:
    from wattshift.daemon.config.site import SiteConfig

    from .app import Daemon


@dataclass(frozen=True)
class Controls:
    overrides: Overrides
    reloader: PolicyReloader | None  # None: the site file names no policy_file
    bridge: MqttBridge | None  # None: no mqtt section


@contextlib.asynccontextmanager
async def operator_controls(daemon: Daemon, site: SiteConfig, base_dir: Path) -> AsyncIterator[Controls]:
    controller = daemon.controller
    overrides = Overrides()
    controller.policy = OverridePolicy(controller.policy, overrides)
    with contextlib.ExitStack() as closing:
        state = closing.enter_context(SiteState(state_path(site.state_dir))) if daemon.journal is not None else None
        async with policy_reloading(InnerPolicy(controller), site, base_dir, daemon.metrics.registry) as reloader:
            site_policy = site_policy_path(site, base_dir)
            switcher = _saving_switcher(reloader, state, site_policy) if reloader is not None else None
            if state is not None:
                await restore_operator_state(state, controller, overrides,
                                             switch_policy=_restoring_switcher(reloader) if reloader else None,
                                             site_policy=site_policy, now=datetime.now(UTC))
            async with _bridge(daemon, site, overrides, switcher) as bridge:
                yield Controls(overrides, reloader, bridge)


def _saving_switcher(reloader: PolicyReloader, state: SiteState | None, site_policy: Path | None) -> PolicySwitcher:
    """Switch to the policy file ``name`` (in the policy directory) on command; the file switched
    to is saved before it runs, so a restart runs it too (while the site file still names the
    policy it named then)."""

    async def switch(name: Path) -> ReloadResult:
        previous = reloader.path
        if state is not None:
            # A StateError here refuses the switch: nothing changed. A name that the reloader
            # then refuses (outside the directory, not a policy file) is replaced just below.
            state.policy_saved(reloader.policy_dir / name, site_policy)
        result = await reloader.switch_policy(name, reason="mqtt command")
        if not result.accepted and state is not None:
            state.policy_saved(previous, site_policy)  # what runs is what a restart puts back
        return result

    return switch


def _restoring_switcher(reloader: PolicyReloader) -> PolicySwitcher:
    """Put back the policy file saved before the restart, by its name in the policy directory
    (a file the directory no longer holds is refused like any other)."""

    async def switch(path: Path) -> ReloadResult:
        try:
            name = path.relative_to(reloader.policy_dir)
        except ValueError:
            return ReloadResult(False, f"policy file {path} is not in the policy directory {reloader.policy_dir}")
        return await reloader.switch_policy(name, reason="restored after restart")

    return switch


@contextlib.asynccontextmanager
async def _bridge(daemon: Daemon, site: SiteConfig, overrides: Overrides,
                  switcher: PolicySwitcher | None) -> AsyncIterator[MqttBridge | None]:
    """The MQTT bridge, opened only after the state is restored: no command can race it."""
    controller = daemon.controller
    if site.mqtt is None:
        yield None
        return
    bridge = MqttBridge(
        site.mqtt, controller, login=broker_login(site.mqtt, site.credentials), overrides=overrides,
        meter=controller.meter, policy_switcher=switcher,
        overhead=lambda: controller.overhead.watts if controller.meter is not None else None,
    )
    controller.recorder = FanOut(controller.recorder, bridge)
    collector = MqttCollector(bridge)
    daemon.metrics.registry.register(collector)
    try:
        async with bridge:
            yield bridge
    finally:
        daemon.metrics.registry.unregister(collector)
