"""A simulated Antminer on Bitmain's stock firmware, as pyasic 0.79.0 (``AntminerModern``) drives it.

Two servers on the miner's own loopback address, both answering from its physics:

- TCP 4028, the bmminer CGMiner-style API (:class:`BmminerApi`): ``version`` (``Type`` names the
  model, which is how pyasic's socket probe recognises an Antminer), ``summary`` (``GHS 5s``),
  ``stats`` (``STATS[1]``: ``Elapsed``, ``fan1..4``, ``chain_rate<n>``...), ``pools``,
  ``devdetails``;
- port 80, the web CGI behind digest authentication (realm ``antMiner Configuration``, user
  root): ``get_system_info`` (``minertype``, ``macaddr``, ``serinum``), ``get_miner_conf``
  (``bitmain-work-mode``: "0" normal, "1" sleep, "3" low power), ``set_miner_conf``,
  ``summary`` (the status lights pyasic turns into errors), ``stats`` (per-board ``chain``
  entries), ``get_blink_status``, ``blink``, ``reboot``, ``get_network_info``. An unanswered
  request gets the 401 challenge, which is how pyasic's web probe recognises the firmware.

What pyasic does with it (read from ``pyasic/miners/backends/antminer.py``):

- it reads no power at all (the stock firmware reports none): ``wattage`` and
  ``wattage_limit`` are None; ``is_mining`` is ``bitmain-work-mode != 1``;
- ``stop_mining()`` / ``resume_mining()`` read ``get_miner_conf`` and post it back with
  ``miner-mode`` 1 (sleep) or 0 (normal) to ``set_miner_conf``, and return True whatever the
  miner answered, so a refusal is only visible by reading the mode back;
- there is no power target: ``set_power_limit`` is not implemented for this backend.

A change of ``miner-mode`` restarts the mining program, as on the real firmware: the CGMiner
port goes away for ``restart_s`` while the web server keeps answering. Waking also boots the
hashboards (``wake_boot_s`` of the physics): draw climbs, hashrate comes later.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from wattshift.model.specs import MinerSpec

from .bmminer import BMMINER_VERSION, FIRMWARE_DATE, BmminerApi, BoardModel
from .cgminer import CgminerServer, Reply, dispatch_commands
from .miner import CommandRefused, SimulatedMiner
from .physics import Clock
from .web_server import DigestAuth, HttpReply, HttpRequest, WebServer

CGMINER_PORT = 4028
WEB_PORT = 80
REALM = "antMiner Configuration"
WEB_USER = "root"
WORK_MODE_NORMAL = 0
WORK_MODE_SLEEP = 1
WORK_MODES = (0, 1, 3)  # normal, sleep, low power (low power is modelled as normal)

DEFAULT_RESTART_S = 10.0
DEFAULT_WAKE_BOOT_S = 60.0  # hashboards take about a minute to boot on stock firmware


class AntminerMiner(SimulatedMiner):
    """An Antminer on stock firmware: bmminer on ``host``:4028 and the web CGI on ``host``:80."""

    firmware: ClassVar[str] = "antminer"

    def __init__(
        self,
        host: str,
        spec: MinerSpec,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        password: str = "root",
        restart_s: float = DEFAULT_RESTART_S,
        **physics_options: float,
    ) -> None:
        if not spec.model.startswith("Antminer"):
            raise ValueError(
                f"{host}: stock Antminer firmware runs on Antminers, not on {spec.model!r}"
            )
        physics_options.setdefault("wake_boot_s", DEFAULT_WAKE_BOOT_S)
        self._clock = clock or time.monotonic
        super().__init__(host, spec, clock=self._clock, seed=seed, **physics_options)
        self.restart_s = restart_s
        self.restarts = 0  # how often a mode change restarted the mining program
        self.blinking = False
        self._awake_mode = WORK_MODE_NORMAL  # the mode to mine in (normal or low power)
        self._restarting_until = -1.0
        self.auth = DigestAuth(REALM, WEB_USER, password)
        self.boards = BoardModel(self)
        self.bmminer = BmminerApi(
            self, self.boards, spec.model, f"bmminer {BMMINER_VERSION}"
        )
        self._cgminer = CgminerServer(self, self._answer_cgminer, port=CGMINER_PORT)
        self._web = WebServer(self, self._answer_web, port=WEB_PORT)
        self._cgi = {
            "get_system_info": self._get_system_info,
            "get_network_info": self._get_network_info,
            "get_miner_conf": self._get_miner_conf,
            "set_miner_conf": self._set_miner_conf,
            "summary": self._summary,
            "stats": self._stats,
            "get_blink_status": lambda _request: {"blink": self.blinking},
            "blink": self._blink,
            "reboot": self._reboot,
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

    @property
    def work_mode(self) -> int:
        """``bitmain-work-mode`` as the firmware reports it: sleep whenever the physics sleeps
        (a site launched asleep, a test that puts it to sleep), else the mode it mines in."""
        return WORK_MODE_SLEEP if self.physics.sleeping else self._awake_mode

    @property
    def restarting(self) -> bool:
        """The mining program restarts after a mode change: 4028 is away, the web is not."""
        return self._clock() < self._restarting_until

    # -- 4028 -----------------------------------------------------------------------------------

    async def _answer_cgminer(self, request: dict[str, Any]) -> Reply:
        if self.restarting:
            return b""  # bmminer is not running: the port accepts nothing useful
        for command in str(request.get("command", "")).split("+"):
            self.record(command)
        return await dispatch_commands(self.bmminer, request)

    # -- the web CGI ----------------------------------------------------------------------------

    async def _answer_web(self, request: HttpRequest) -> HttpReply:
        if not self.auth.check(request):
            return self.auth.challenge()
        name = request.path.removeprefix("/cgi-bin/").removesuffix(".cgi")
        cgi = self._cgi.get(name) if request.path.startswith("/cgi-bin/") else None
        if cgi is None:
            return HttpReply.text("404 Not Found", 404, "text/html")
        self.record(f"{request.method} {request.path}")
        return HttpReply.of_json(cgi(request))

    def _get_system_info(self, _request: HttpRequest) -> dict[str, Any]:
        return {
            "minertype": self.spec.model,
            "nettype": "DHCP",
            "netdevice": "eth0",
            "macaddr": self.mac,
            "hostname": "Antminer",
            "ipaddress": self.host,
            "netmask": "255.0.0.0",
            "gateway": "",
            "dnsservers": "",
            "system_mode": "GNU/Linux",
            "system_kernel_version": "Linux 4.9.113 #1 SMP PREEMPT",
            "system_filesystem_version": FIRMWARE_DATE,
            "firmware_type": "Release",
            "serinum": self.serial,
        }

    def _get_network_info(self, _request: HttpRequest) -> dict[str, Any]:
        return {
            "nettype": "DHCP",
            "netdevice": "eth0",
            "macaddr": self.mac,
            "ipaddress": self.host,
            "netmask": "255.0.0.0",
            "conf_nettype": "DHCP",
            "conf_hostname": "Antminer",
            "conf_ipaddress": self.host,
            "conf_netmask": "255.0.0.0",
            "conf_gateway": "",
            "conf_dnsservers": "",
        }

    def _get_miner_conf(self, _request: HttpRequest) -> dict[str, Any]:
        return {
            "pools": [
                {
                    "url": "stratum+tcp://pool.wattshift.invalid:3333",
                    "user": f"wattshift.{self.serial.lower()}",
                    "pass": "x",
                }
            ],
            "api-listen": True,
            "api-network": True,
            "api-groups": "A:stats:pools:devs:summary:version",
            "api-allow": "A:0/0,W:*",
            "bitmain-fan-ctrl": False,
            "bitmain-fan-pwm": "100",
            "bitmain-use-vil": True,
            "bitmain-freq": "",
            "bitmain-voltage": "",
            "bitmain-ccdelay": "0",
            "bitmain-pwth": "0",
            "bitmain-work-mode": str(self.work_mode),
            "bitmain-freq-level": "100",
        }

    def _set_miner_conf(self, request: HttpRequest) -> dict[str, Any]:
        conf = request.json()
        mode = conf.get("miner-mode") if isinstance(conf, dict) else None
        try:
            mode = int(mode) if mode is not None else None
        except (TypeError, ValueError):
            mode = -1
        if mode is not None and mode not in WORK_MODES:
            return {
                "stats": "error",
                "code": "M001",
                "msg": f"invalid miner-mode {conf.get('miner-mode')!r}",
            }
        try:
            self.control(lambda: self._apply_mode(mode))
        except CommandRefused as refused:
            return {"stats": "error", "code": "M002", "msg": str(refused)}
        return {"stats": "success", "code": "M000", "msg": "OK!"}

    def _apply_mode(self, mode: int | None) -> None:
        if mode is None or mode == self.work_mode:
            return  # pools or fans only: bmminer is restarted too, but nothing else changes
        self.restarts += 1
        self._restarting_until = self._clock() + self.restart_s
        if mode == WORK_MODE_SLEEP:
            self.physics.sleep()
        else:
            self._awake_mode = mode
            self.physics.wake()

    def _summary(self, _request: HttpRequest) -> dict[str, Any]:
        ghs = self.physics.hashrate_ths() * 1000.0
        mining = self.physics.mining
        lights = [
            {
                "type": "rate",
                "status": "s" if ghs > 0 or not mining else "w",
                "code": 0,
                "msg": "",
            },
            {"type": "network", "status": "s", "code": 0, "msg": ""},
            {"type": "fans", "status": "s", "code": 0, "msg": ""},
            {"type": "temp", "status": "s", "code": 0, "msg": ""},
        ]
        summary = {
            "elapsed": self.physics.uptime_s(),
            "rate_5s": round(ghs, 2),
            "rate_30m": round(ghs, 2),
            "rate_avg": round(ghs, 2),
            "rate_ideal": round(
                self.spec.hashrate_at(self.physics.target_watts) * 1000.0, 2
            ),
            "rate_unit": "GH/s",
            "hw_all": 0,
            "bestshare": 0,
            "status": lights,
        }
        return {
            "STATUS": _web_status("summary"),
            "INFO": _web_info(),
            "SUMMARY": [summary],
        }

    def _stats(self, _request: HttpRequest) -> dict[str, Any]:
        boards = self.boards
        chips = boards.chips if self.physics.mining else 0
        chains = []
        rows = zip(
            boards.hashrates_ghs(),
            boards.board_temps_c(),
            boards.chip_temps_c(),
            boards.serials,
            strict=True,
        )
        for index, (ghs, board_c, chip_c, serial) in enumerate(rows):
            chains.append(
                {
                    "index": index,
                    "freq_avg": 490 if chips else 0,
                    "rate_ideal": round(
                        self.spec.hashrate_at(self.physics.target_watts)
                        * 1000.0
                        / len(boards.shares),
                        2,
                    ),
                    "rate_real": round(ghs, 2),
                    "asic_num": chips,
                    "temp_pic": [round(board_c)] * 4,
                    "temp_pcb": [
                        round(board_c) - 2,
                        round(board_c),
                        round(board_c),
                        round(board_c) + 2,
                    ],
                    "temp_chip": [
                        round(chip_c) - 2,
                        round(chip_c),
                        round(chip_c),
                        round(chip_c) + 2,
                    ],
                    "hw": 0,
                    "eeprom_loaded": True,
                    "sn": serial,
                    "hwp": 0,
                }
            )
        stats = {
            "elapsed": self.physics.uptime_s(),
            "rate_5s": round(self.physics.hashrate_ths() * 1000.0, 2),
            "rate_unit": "GH/s",
            "chain_num": len(chains),
            "fan_num": self.spec.fans,
            "fan": boards.fan_rpms(),
            "miner-mode": self.work_mode,
            "freq-level": 100,
            "chain": chains,
        }
        return {"STATUS": _web_status("stats"), "INFO": _web_info(), "STATS": [stats]}

    def _blink(self, request: HttpRequest) -> dict[str, Any]:
        body = request.json()
        self.blinking = (
            isinstance(body, dict) and str(body.get("blink")).lower() == "true"
        )
        return {"code": "B000" if self.blinking else "B100"}

    def _reboot(self, _request: HttpRequest) -> dict[str, Any]:
        try:
            self.control(self._restart_system)
        except CommandRefused as refused:
            return {"code": "R001", "msg": str(refused)}
        return {"code": "R000"}

    def _restart_system(self) -> None:
        asleep = self.physics.sleeping
        self.physics.reboot()
        self.auth.forget()
        if asleep:
            self.physics.sleep()  # the mode is saved in the configuration: it boots asleep


def _web_status(api: str) -> dict[str, Any]:
    return {"STATUS": "S", "when": int(time.time()), "Msg": api, "api_version": "1.0.0"}


def _web_info() -> dict[str, Any]:
    return {
        "miner_version": "uart_trans.1.3",
        "CompileTime": FIRMWARE_DATE,
        "type": "Antminer",
    }
