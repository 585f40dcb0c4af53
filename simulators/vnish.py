"""A simulated Antminer running VNish (AnthillOS), as pyasic 0.79.0's ``VNish`` backend drives it.

Two servers on the miner's own loopback address, both answering from its physics:

- port 80, the web UI and its REST API under ``/api/v1/``. ``GET /`` serves the AnthillOS page,
  which is how pyasic's web probe recognises VNish. ``POST unlock {"pw": ...}`` gives a token
  that later requests carry in ``Authorization`` (``Bearer <token>`` for ``system/...``, as
  pyasic sends it). Reads: ``info``, ``summary`` (``miner.power_usage``, ``miner_status``,
  chains), ``settings`` (``miner.overclock.preset``: the preset in force, by name = watts),
  ``autotune/presets``, ``perf-summary``. Writes: ``POST settings`` (a new preset), ``mining/
  stop|start|pause|resume|restart``, ``system/reboot``, ``find-miner``;
- TCP 4028, bmminer's CGMiner-style API, as on stock firmware (:class:`.bmminer.BmminerApi`):
  its ``version`` names the model "Antminer S21 (Vnish 1.2.6)", which pyasic's socket probe
  reads as a *stock* Antminer. pyasic races the two probes, so identification depends on which
  answers first (issue 11, item 3).

Presets are VNish's autotune points. Only *tuned* presets can be applied: a ``POST settings``
naming an untuned or unknown preset is answered ``{"restart_required": false, ...}`` like any
other and changes nothing, as the real firmware does (pyasic PR #245); pyasic confirms by reading
``settings`` back. Waking boots the hashboards (``wake_boot_s`` of the physics).

pyasic 0.79.0 cannot set a preset all the same: ``MiningModeConfig.from_vnish`` calls
``cls.preset.from_vnish`` on the *enum member*, which resolves back to itself with the overclock
section as the whole settings, finds no ``miner`` key and returns normal mode; ``set_power_limit``
then returns False before it sends anything (pyasic issue #430). The simulator does not play
along with that: it answers what the firmware answers.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from wattshift.model.specs import MinerSpec

from .bmminer import BmminerApi, BoardModel
from .cgminer import CgminerServer, Reply, dispatch_commands
from .miner import CommandRefused, SimulatedMiner
from .physics import Clock
from .web_server import HttpReply, HttpRequest, WebServer

CGMINER_PORT = 4028
WEB_PORT = 80
VNISH_VERSION = "1.2.6"
PRESET_STEP_W = 250
DEFAULT_WAKE_BOOT_S = 60.0
DEFAULT_PAGE_DELAY_S = 0.005
MAX_TOKENS = 32
INDEX_HTML = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>AnthillOS</title>'
    '<link rel="icon" href="/favicon.ico"></head><body><div id="app"></div>'
    '<script src="/assets/index.js"></script></body></html>'
)
STOPPED_STATES = (
    "stopped",
    "shutting-down",
    "failure",
)  # what pyasic counts as not mining


@dataclass(frozen=True, slots=True)
class Preset:
    """One autotune preset: its name is its power in watts."""

    watts: int
    hashrate_ths: int
    tuned: bool

    @property
    def name(self) -> str:
        return str(self.watts)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pretty": f"{self.watts} watt ~ {self.hashrate_ths} TH",
            "status": "tuned" if self.tuned else "untuned",
            "modded_psu_required": False,
        }


def build_presets(spec: MinerSpec) -> tuple[Preset, ...]:
    """Every 250 W from the model's minimum up to its maximum, and the nominal point.

    Autotune has tuned the presets up to nominal; the ones above it are listed but untuned
    (VNish lists every preset of the model and tunes them one by one).
    """
    lowest = -(-int(spec.min_watts) // PRESET_STEP_W) * PRESET_STEP_W
    watts = set(range(lowest, int(spec.max_watts) + 1, PRESET_STEP_W)) | {
        int(spec.nominal_watts)
    }
    return tuple(
        Preset(w, int(spec.hashrate_at(w)), tuned=w <= spec.nominal_watts)
        for w in sorted(watts)
    )


class VNishMiner(SimulatedMiner):
    """An Antminer running VNish: its web API on ``host``:80, bmminer on ``host``:4028."""

    firmware: ClassVar[str] = "vnish"

    def __init__(
        self,
        host: str,
        spec: MinerSpec,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        password: str = "admin",
        page_delay_s: float = DEFAULT_PAGE_DELAY_S,
        **physics_options: float,
    ) -> None:
        if not spec.model.startswith("Antminer"):
            raise ValueError(f"{host}: VNish runs on Antminers, not on {spec.model!r}")
        self.page_delay_s = page_delay_s
        physics_options.setdefault("wake_boot_s", DEFAULT_WAKE_BOOT_S)
        super().__init__(host, spec, clock=clock, seed=seed, **physics_options)
        self.password = password
        self.presets = build_presets(spec)
        nominal = self._preset(str(int(spec.nominal_watts)))
        assert nominal is not None  # build_presets always lists the nominal point
        self.preset: Preset = nominal
        self._apply_preset(nominal)
        self.state = "mining"  # VNish's miner_state: mining, stopped, paused, ...
        self.locating = False
        self._tokens: list[str] = []
        self.boards = BoardModel(self)
        self.model_type = f"{spec.model} (Vnish {VNISH_VERSION})"
        self.bmminer = BmminerApi(
            self, self.boards, self.model_type, f"bmminer {VNISH_VERSION}"
        )
        self._cgminer = CgminerServer(self, self._answer_cgminer, port=CGMINER_PORT)
        self._web = WebServer(self, self._answer_web, port=WEB_PORT)
        self._reads: dict[str, Callable[[], Any]] = {
            "info": self._info,
            "summary": self._summary,
            "settings": self._settings,
            "autotune/presets": lambda: [p.as_json() for p in self.presets],
            "perf-summary": self._perf_summary,
        }
        self._writes: dict[str, Callable[[Any], Any]] = {
            "settings": self._post_settings,
            "mining/stop": lambda _body: self._set_state("stopped"),
            "mining/pause": lambda _body: self._set_state("paused"),
            "mining/start": lambda _body: self._set_state("mining"),
            # VNish resumes a paused or a stopped miner alike here (pyasic stops with "stop"
            # and wakes with "resume"); the real firmware's behaviour after "stop" is unverified.
            "mining/resume": lambda _body: self._set_state("mining"),
            "mining/restart": lambda _body: self._set_state("mining"),
            "system/reboot": lambda _body: self._reboot(),
            "find-miner": lambda _body: self._toggle_locate(),
        }

    async def start(self) -> None:
        await self._cgminer.start()
        try:
            await self._web.start()
        except BaseException:
            await self._cgminer.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(self._cgminer.stop(), self._web.stop())

    # -- 4028 -----------------------------------------------------------------------------------

    async def _answer_cgminer(self, request: dict[str, Any]) -> Reply:
        for command in str(request.get("command", "")).split("+"):
            self.record(command)
        return await dispatch_commands(self.bmminer, request)

    # -- the web API ----------------------------------------------------------------------------

    async def _answer_web(self, request: HttpRequest) -> HttpReply:
        if request.path in ("/", "/index.html"):
            # The UI is a large page from a slow controller: it comes after bmminer's short
            # "version" reply about as often as before it.
            await asyncio.sleep(self.rng.uniform(0.0, self.page_delay_s))
            return HttpReply.text(INDEX_HTML, content_type="text/html")
        if not request.path.startswith("/api/v1/"):
            return HttpReply.text("Not Found", 404)
        command = request.path.removeprefix("/api/v1/")
        self.record(f"{request.method} {request.path}")
        if command == "unlock" and request.method == "POST":
            return self._unlock(request)
        if not self._authorised(request, command):
            return HttpReply.of_json({"err": "Unauthorized"}, 401)
        if request.method == "GET" and command in self._reads:
            return HttpReply.of_json(self._reads[command]())
        if request.method == "POST" and command in self._writes:
            try:
                reply = self.control(lambda: self._writes[command](request.json()))
            except CommandRefused as refused:
                return HttpReply.of_json({"err": str(refused)}, 400)
            return HttpReply.of_json(
                reply if reply is not None else self._ignored_reply(command)
            )
        return HttpReply.of_json({"err": f"unknown command {command!r}"}, 404)

    def _unlock(self, request: HttpRequest) -> HttpReply:
        body = request.json()
        if not isinstance(body, dict) or body.get("pw") != self.password:
            return HttpReply.of_json({"err": "Wrong password"}, 401)
        token = secrets.token_hex(16)
        self._tokens = [*self._tokens[-(MAX_TOKENS - 1) :], token]
        return HttpReply.of_json({"token": token})

    def _authorised(self, request: HttpRequest, command: str) -> bool:
        header = request.headers.get("authorization", "")
        token = (
            header.removeprefix("Bearer ") if command.startswith("system") else header
        )
        return token in self._tokens

    def _ignored_reply(self, command: str) -> Any:
        """What the firmware says OK with while IGNORE keeps the command from running."""
        return (
            {"restart_required": False, "reboot_required": False}
            if command == "settings"
            else {}
        )

    # -- reads ----------------------------------------------------------------------------------

    def _network(self) -> dict[str, Any]:
        return {
            "mac": self.mac,
            "hostname": f"vnish-{self.serial.lower()}",
            "ip": self.host,
            "dhcp": True,
        }

    def _info(self) -> dict[str, Any]:
        return {
            "miner": self.model_type,
            "model": self.spec.model,
            "fw_name": "Vnish",
            "fw_version": VNISH_VERSION,
            "serial": self.serial,
            "system": {
                "network_status": self._network(),
                "uptime": f"{self.physics.uptime_s()}",
            },
        }

    def _summary(self) -> dict[str, Any]:
        physics, boards = self.physics, self.boards
        ths = physics.hashrate_ths()
        state = self._reported_state()
        chains: list[dict[str, Any]] = [
            {
                "id": slot + 1,
                "frequency": 490.0 if ghs > 0 else 0.0,
                "voltage": 13.2 if physics.mining else 0.0,
                "hashrate_rt": round(ghs, 2),
                "pcb_temp": {"min": round(board_c) - 2, "max": round(board_c) + 2},
                "chip_temp": {"min": round(chip_c) - 3, "max": round(chip_c) + 3},
                "chip_statuses": {"red": 0, "orange": 0, "grey": 0},
                "status": {
                    "state": "mining"
                    if ghs > 0
                    else ("initializing" if physics.mining else "stopped")
                },
            }
            for slot, (ghs, board_c, chip_c) in enumerate(
                zip(
                    boards.hashrates_ghs(),
                    boards.board_temps_c(),
                    boards.chip_temps_c(),
                    strict=True,
                )
            )
        ]
        miner = {
            "miner_type": self.model_type,
            "miner_status": {
                "miner_state": state,
                "miner_state_time": physics.uptime_s(),
            },
            "instant_hashrate": round(ths, 3),
            "average_hashrate": round(ths, 3),
            "hr_realtime": round(ths * 1000.0, 2),
            "hr_nominal": round(
                self.spec.hashrate_at(physics.target_watts) * 1000.0, 2
            ),
            "power_usage": round(physics.power_watts()),
            "power_efficiency": round(physics.power_watts() / ths, 2)
            if ths > 0
            else 0.0,
            "hw_errors_percent": 0.0,
            "pcb_temp": {
                "min": min(c["pcb_temp"]["min"] for c in chains),
                "max": max(c["pcb_temp"]["max"] for c in chains),
            },
            "chip_temp": {
                "min": min(c["chip_temp"]["min"] for c in chains),
                "max": max(c["chip_temp"]["max"] for c in chains),
            },
            "cooling": {
                "fan_num": self.spec.fans,
                "fans": [
                    {"id": i, "rpm": rpm, "status": "ok"}
                    for i, rpm in enumerate(boards.fan_rpms())
                ],
            },
            "chains": chains,
            "overclock": {"preset": self.preset.name},
        }
        return {
            "miner": miner,
            "system": {
                "network_status": self._network(),
                "uptime": f"{physics.uptime_s()}",
            },
        }

    def _reported_state(self) -> str:
        if self.physics.sleeping:  # put to sleep by its command, or launched asleep
            return self.state if self.state in ("stopped", "paused") else "stopped"
        if self.physics.booting:
            return "starting"
        return "mining"

    def _settings(self) -> dict[str, Any]:
        return {
            "miner": {
                "overclock": {
                    "preset": self.preset.name,
                    "globals": {"volt": 1320, "freq": 490},
                    "chains": [{"freq": 490} for _ in range(self.spec.hashboards)],
                },
                "cooling": {
                    "mode": {"name": "auto", "param": 75},
                    "fan_min_count": self.spec.fans,
                    "fan_min_duty": 10,
                },
                "pools": [
                    {
                        "url": "pool.wattshift.invalid:3333",
                        "user": f"wattshift.{self.serial.lower()}",
                        "pass": "x",
                    }
                ],
            },
            "misc": {"restart_temp": 95},
        }

    def _perf_summary(self) -> dict[str, Any]:
        return {"current_preset": self.preset.as_json()}

    # -- writes ---------------------------------------------------------------------------------

    def _post_settings(self, body: Any) -> dict[str, Any]:
        name = None
        if isinstance(body, dict):
            overclock = (
                body.get("miner", {}).get("overclock")
                if isinstance(body.get("miner"), dict)
                else None
            )
            name = overclock.get("preset") if isinstance(overclock, dict) else None
        preset = self._preset(str(name)) if name is not None else None
        if preset is not None and preset.tuned:
            self._apply_preset(preset)
        # The same answer whether or not the preset was applied (what pyasic PR #245 reports).
        return {"restart_required": False, "reboot_required": False}

    def _set_state(self, state: str) -> dict[str, Any]:
        if state == "mining":
            self.physics.wake()
        else:
            self.physics.sleep()
        self.state = state
        return {}

    def _reboot(self) -> dict[str, Any]:
        self.physics.reboot()
        self._tokens.clear()
        self.state = "mining"  # VNish starts mining after a boot
        return {}

    def _toggle_locate(self) -> dict[str, Any]:
        self.locating = not self.locating
        return {"on": self.locating}

    def _preset(self, name: str) -> Preset | None:
        return next((p for p in self.presets if p.name == name), None)

    def _apply_preset(self, preset: Preset) -> None:
        self.preset = preset
        self.physics.set_target(preset.watts)
        self.physics.default_target_watts = (
            preset.watts
        )  # saved in the settings: survives a reboot
