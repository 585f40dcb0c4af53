"""What an operator drives a running daemon with, opened around the control loop.

- maintenance overrides (devices or classes forced on or off), wrapped around the policy;
- the policy file, reloaded when edited, on SIGHUP (``systemctl reload``) or by an MQTT
  command -- a reload replaces the policy *under* the overrides, never the overrides;
- the MQTT bridge, when the site file has an ``mqtt`` section: state out, commands in, the
  site meter fed, and its link's metrics on /metrics.

``wattshift run`` and ``wattshift demo`` open the same controls, so the demo answers the same
commands an operator would send to a real site.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wattshift.policies.overrides import InnerPolicy, OverridePolicy, Overrides

from .mqtt_bridge import MqttBridge
from .mqtt_config import broker_login
from .mqtt_metrics import MqttCollector
from .policy_reload import PolicyReloader, policy_reloading
from .recorder import FanOut

if TYPE_CHECKING:
    from .app import Daemon
    from .config import SiteConfig


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
    async with policy_reloading(InnerPolicy(controller), site, base_dir, daemon.metrics.registry) as reloader:
        if site.mqtt is None:
            yield Controls(overrides, reloader, None)
            return
        bridge = MqttBridge(
            site.mqtt, controller, login=broker_login(site.mqtt, site.credentials), overrides=overrides,
            meter=controller.meter,
            policy_switcher=(lambda p: reloader.switch_policy(p, reason="mqtt command")) if reloader else None,
            overhead=lambda: controller.overhead.watts if controller.meter is not None else None,
        )
        controller.recorder = FanOut(controller.recorder, bridge)
        collector = MqttCollector(bridge)
        daemon.metrics.registry.register(collector)
        try:
            async with bridge:
                yield Controls(overrides, reloader, bridge)
        finally:
            daemon.metrics.registry.unregister(collector)
