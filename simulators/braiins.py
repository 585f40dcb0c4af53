"""A simulated miner running Braiins OS+ (BOSer, firmware 24.x), as pyasic 0.79 drives it.

Two servers on the miner's own loopback address, both answering from its :class:`MinerPhysics`:

- TCP 4028, the BOSminer CGMiner-style API (:class:`BosminerApi`): ``version`` and
  ``devdetails`` let ``pyasic.get_miner`` identify the firmware and model (the model string
  "Bitmain Antminer S21" maps to pyasic's BOSer class ``BOSMinerS21``); ``summary``, ``devs``
  and ``tunerstatus`` feed hashrate, uptime, ``is_mining`` and errors in ``get_data``, and with
  ``temps`` and ``fans`` they answer wattshift's one-multicommand telemetry
  (:mod:`wattshift.drivers.cgminer_telemetry`). Shapes as pyasic's parsers of BOSminer's API
  read them (``pyasic.miners.backends.braiins_os.BOSMiner``): chains numbered from 1 in
  ``ID``, ``TEMPS`` with ``Board`` and ``Chip``, ``FANS`` with ``RPM``.
- TCP 50051, the public gRPC API (:mod:`.braiins_grpc`): details, stats, hashboards, cooling,
  pools, the power target, and the control calls (SetPowerTarget, PauseMining, ResumeMining,
  Reboot), behind Login.

Per-board and per-fan numbers split the physical totals: hashboards share the hashrate in fixed
seeded proportions, run a seeded offset around the physical temperature, and fans follow power.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from wattshift.model.specs import MinerSpec

from .braiins_grpc import braiins_services
from .cgminer import CgminerServer, Reply, dispatch_commands, status
from .grpc_server import GrpcServer
from .miner import SimulatedMiner
from .physics import Clock

CGMINER_PORT = 4028
GRPC_PORT = 50051

# Chips per hashboard of the Antminers Braiins OS+ runs on (the same numbers pyasic expects).
CHIPS_PER_BOARD: dict[str, int] = {
    "Antminer S19 Pro": 114,
    "Antminer S19 XP": 110,
    "Antminer S21": 108,
    "Antminer S21 Pro": 65,
}

BOARD_TEMP_SPREAD_C = 1.5  # hashboards of one machine differ by a degree or two
CHIP_OVER_BOARD_C = 15.0  # chips run hotter than the PCB sensor, in proportion to power
HASHRATE_SHARE_SPREAD = 0.02  # boards of one machine differ by a percent or two in hashrate
FAN_MIN_RPM = 1500  # BOS keeps fans turning while paused
FAN_MAX_RPM = 6000
FAN_RPM_SPREAD = 60  # fans of one machine never turn at quite the same speed


class BraiinsMiner(SimulatedMiner):
    """One Antminer running Braiins OS+ on ``(host, 4028)`` and ``(host, 50051)``."""

    firmware: ClassVar[str] = "braiins"
    bos_version: ClassVar[str] = "2024-09-06-0-7c3f6a1e-24.08.1-plus"  # pyasic reads field 5
    bos_major: ClassVar[str] = "24.08"
    grpc_api_version: ClassVar[tuple[int, int, int]] = (1, 3, 0)
    pool_url: ClassVar[str] = "stratum+tcp://stratum.braiins.com:3333"
    fan_max_rpm: ClassVar[int] = FAN_MAX_RPM

    def __init__(
        self,
        host: str,
        spec: MinerSpec,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        password: str = "root",
        **physics_options: float,
    ) -> None:
        if not spec.model.startswith("Antminer"):
            raise ValueError(f"{host}: Braiins OS+ runs on Antminers, not on a {spec.model!r}")
        super().__init__(host, spec, clock=clock, seed=seed, **physics_options)
        self.password = password
        self.locate_enabled = False
        # Firmware before the power-target constraints API answers GetConstraints UNIMPLEMENTED.
        self.reports_constraints = True
        # False plays a BOSminer that answers "a+b" with one "Invalid command" STATUS.
        self.accepts_multicommand = True
        self.hostname = f"bos-{self.serial.lower()}"
        self.pool_user = f"wattshift.{self.serial.lower()}"
        spread = self.rng.uniform
        shares = [1.0 + spread(-HASHRATE_SHARE_SPREAD, HASHRATE_SHARE_SPREAD) for _ in range(spec.hashboards)]
        self._board_shares = [share / sum(shares) for share in shares]
        self._board_temp_offsets = [spread(-BOARD_TEMP_SPREAD_C, BOARD_TEMP_SPREAD_C) for _ in shares]
        self._fan_rpm_offsets = [self.rng.randint(-FAN_RPM_SPREAD, FAN_RPM_SPREAD) for _ in range(spec.fans)]
        self._bosminer_api = BosminerApi(self)
        self._cgminer = CgminerServer(self, self._answer_cgminer, port=CGMINER_PORT)
        self._grpc = GrpcServer(self, braiins_services(self), port=GRPC_PORT)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._cgminer.start()
        try:
            await self._grpc.start()
        except BaseException:
            await self._cgminer.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(self._cgminer.stop(), self._grpc.stop())

    @property
    def open_grpc_connections(self) -> int:
        """HTTP/2 connections open now (each pyasic call opens and closes its own)."""
        return self._grpc.open_connections

    async def _answer_cgminer(self, request: dict[str, Any]) -> Reply:
        command = str(request.get("command", ""))
        for name in command.split("+"):
            self.record(name)
        if "+" in command and not self.accepts_multicommand:
            return {"STATUS": status(14, "Invalid command", ok=False), "id": 1}
        return await dispatch_commands(self._bosminer_api, request)

    # -- telemetry shared by both APIs ----------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The model as BOSminer names it: "Bitmain Antminer S21"."""
        return f"Bitmain {self.spec.model}"

    @property
    def chips_per_board(self) -> int | None:
        return CHIPS_PER_BOARD.get(self.spec.model)

    def board_hashrates_ths(self) -> list[float]:
        total = self.physics.hashrate_ths()
        return [total * share for share in self._board_shares]

    def board_temps_c(self) -> list[float]:
        base = self.physics.temperature_c()
        return [base + offset for offset in self._board_temp_offsets]

    def chip_temps_c(self) -> list[float]:
        load = self.physics.power_watts() / self.spec.nominal_watts
        return [board + CHIP_OVER_BOARD_C * load for board in self.board_temps_c()]

    def fan_rpms(self) -> list[int]:
        # BOS's automatic fan control: faster with more heat to move, i.e. with power.
        load = min(1.0, self.physics.power_watts() / self.spec.max_watts)
        rpm = FAN_MIN_RPM + (FAN_MAX_RPM - FAN_MIN_RPM) * load
        return [max(0, min(FAN_MAX_RPM, round(rpm) + offset)) for offset in self._fan_rpm_offsets]

    def set_locate(self, enabled: bool) -> None:
        self.locate_enabled = enabled


class BosminerApi:
    """The BOSminer CGMiner-style commands pyasic sends to TCP 4028 (``api_<command>``)."""

    # BOSer names itself in STATUS.Description; pyasic's factory looks for "BOSer"/"BOSminer".
    DESCRIPTION = "BOSer boser-buildroot 0.1.0-7c3f6a1e"

    def __init__(self, miner: BraiinsMiner) -> None:
        self.miner = miner

    def _status(self, code: int, msg: str) -> list[dict[str, Any]]:
        return status(code, msg, description=self.DESCRIPTION)

    def api_version(self, _parameter: object) -> dict[str, Any]:
        return {
            "STATUS": self._status(22, "BOSer versions"),
            "VERSION": [{"BOSer": self.DESCRIPTION.removeprefix("BOSer "), "API": "3.7"}],
            "id": 1,
        }

    def api_devdetails(self, _parameter: object) -> dict[str, Any]:
        miner = self.miner
        details = [
            {
                "DEVDETAILS": slot,
                "Name": "Chain",
                "ID": slot,
                "Driver": "bitmain",
                "Kernel": "",
                "Model": miner.model_name,
                "Device Path": "",
                "Chips": miner.chips_per_board or 0,
            }
            for slot in range(miner.spec.hashboards)
        ]
        return {"STATUS": self._status(69, "Device Details"), "DEVDETAILS": details, "id": 1}

    def api_summary(self, _parameter: object) -> dict[str, Any]:
        mhs = self.miner.physics.hashrate_ths() * 1e6
        summary = {
            "Elapsed": self.miner.physics.uptime_s(),
            # No history is kept: every averaging window shows the current physical rate.
            "MHS av": mhs,
            "MHS 5s": mhs,
            "MHS 1m": mhs,
            "MHS 5m": mhs,
            "MHS 15m": mhs,
            "Accepted": 0,
            "Rejected": 0,
            "Hardware Errors": 0,
        }
        return {"STATUS": self._status(11, "Summary"), "SUMMARY": [summary], "id": 1}

    def api_devs(self, _parameter: object) -> dict[str, Any]:
        miner = self.miner
        boards = zip(miner.board_hashrates_ths(), miner.board_temps_c(), strict=True)
        devs = [
            {
                "ASC": slot,
                "Name": "Chain",
                "ID": slot + 1,
                "Enabled": "Y",
                "Status": "Alive",
                "Temperature": round(temp, 1),
                "MHS av": ths * 1e6,
                "MHS 5s": ths * 1e6,
                "MHS 1m": ths * 1e6,
                "MHS 5m": ths * 1e6,
                "MHS 15m": ths * 1e6,
                "Device Elapsed": miner.physics.uptime_s(),
            }
            for slot, (ths, temp) in enumerate(boards)
        ]
        return {"STATUS": self._status(9, f"{len(devs)} ASC(s)"), "DEVS": devs, "id": 1}

    def api_temps(self, _parameter: object) -> dict[str, Any]:
        miner = self.miner
        temps = [
            {"TEMPS": slot, "ID": slot + 1, "Board": board, "Chip": chip}
            for slot, (board, chip) in enumerate(zip(miner.board_temps_c(), miner.chip_temps_c(), strict=True))
        ]
        return {"STATUS": self._status(201, f"{len(temps)} Temp(s)"), "TEMPS": temps, "id": 1}

    def api_fans(self, _parameter: object) -> dict[str, Any]:
        fans = [
            {"FANS": slot, "ID": slot, "RPM": rpm, "Speed": round(100 * rpm / self.miner.fan_max_rpm)}
            for slot, rpm in enumerate(self.miner.fan_rpms())
        ]
        return {"STATUS": self._status(202, f"{len(fans)} Fan(s)"), "FANS": fans, "id": 1}

    def api_tunerstatus(self, _parameter: object) -> dict[str, Any]:
        physics = self.miner.physics
        boards = self.miner.spec.hashboards
        watts = physics.power_watts()
        # A paused BOSminer runs no hash chains, so it reports no chain tuner status.
        chains = [
            {
                "HashchainIndex": slot,
                "Iteration": 0,
                "LoadedProfile": True,
                "PowerLimitWatt": round(physics.target_watts / boards),
                "ApproximatePowerConsumptionWatt": round(watts / boards),
                "Status": "Stable",
            }
            for slot in range(boards)
            if physics.mining
        ]
        tuner = {
            "PowerLimit": round(physics.target_watts),
            "DynamicPowerScaling": "Disabled",
            "ApproximateMinerPowerConsumption": round(watts),
            "TunerChainStatus": chains,
        }
        return {"STATUS": self._status(13, "Tuner Status"), "TUNERSTATUS": [tuner], "id": 1}
