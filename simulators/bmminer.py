"""bmminer's CGMiner-style API on TCP 4028 and the per-board numbers behind it, as Antminers
answer them on stock firmware and on VNish (which keeps Bitmain's bmminer).

Shapes as recorded from real stock firmware (asic-rs test data, antminer/src/test/json/v2023_07)
and as pyasic's ``BMMiner`` parser reads them: ``version`` (``Type`` names the model),
``summary`` (``GHS 5s``), ``stats`` (``STATS[1]``: ``Elapsed``, ``fan<n>``, ``chain_acn<n>``,
``chain_rate<n>`` in GH/s as strings, ``temp<n>``/``temp2_<n>``), ``pools``, ``devdetails``.
"""

from __future__ import annotations

from typing import Any

from .cgminer import Reply, status
from .miner import SimulatedMiner

# Stock firmware releases of 2023-2024 name themselves by build date.
FIRMWARE_DATE = "Thu Nov 16 10:53:57 CST 2023"
BMMINER_VERSION = "1.0.0"

# Chips per hashboard (the counts pyasic expects for these models).
CHIPS_PER_BOARD = {"Antminer S19 XP": 110, "Antminer S21": 108, "Antminer S21 Pro": 65}
BOARD_SHARE_SPREAD = 0.02  # boards of one miner differ by a percent or two in hashrate
BOARD_TEMP_SPREAD_C = 1.5
CHIP_OVER_BOARD_C = 15.0  # chips run hotter than the PCB sensors, in proportion to power
FAN_MIN_RPM = 1200
FAN_MAX_RPM = 6000


class BoardModel:
    """Per-board and per-fan numbers that split the physical totals in fixed seeded shares."""

    def __init__(self, miner: SimulatedMiner) -> None:
        self.miner = miner
        spec, rng = miner.spec, miner.rng
        shares = [
            1.0 + rng.uniform(-BOARD_SHARE_SPREAD, BOARD_SHARE_SPREAD)
            for _ in range(spec.hashboards)
        ]
        self.shares = [share / sum(shares) for share in shares]
        self.temp_offsets = [
            rng.uniform(-BOARD_TEMP_SPREAD_C, BOARD_TEMP_SPREAD_C) for _ in shares
        ]
        self.serials = [f"{miner.serial}B{slot}" for slot in range(spec.hashboards)]

    @property
    def chips(self) -> int:
        return CHIPS_PER_BOARD.get(self.miner.spec.model, 0)

    def hashrates_ghs(self) -> list[float]:
        total = self.miner.physics.hashrate_ths() * 1000.0
        return [total * share for share in self.shares]

    def board_temps_c(self) -> list[float]:
        base = self.miner.physics.temperature_c()
        return [base + offset for offset in self.temp_offsets]

    def chip_temps_c(self) -> list[float]:
        load = self.miner.physics.power_watts() / self.miner.spec.nominal_watts
        return [board + CHIP_OVER_BOARD_C * load for board in self.board_temps_c()]

    def fan_rpms(self) -> list[int]:
        load = min(1.0, self.miner.physics.power_watts() / self.miner.spec.max_watts)
        rpm = round(FAN_MIN_RPM + (FAN_MAX_RPM - FAN_MIN_RPM) * load)
        return [rpm + 30 * i for i in range(self.miner.spec.fans)]


class BmminerApi:
    """The bmminer commands on TCP 4028 (``api_<command>``), shared by stock and VNish firmware.

    ``model_type`` is what ``version`` and ``stats`` put in ``Type``: stock firmware names the
    model alone ("Antminer S21"); VNish appends itself ("Antminer S21 (Vnish 1.2.6)"), which still
    reads as a stock Antminer to pyasic's socket probe.
    """

    def __init__(
        self,
        miner: SimulatedMiner,
        boards: BoardModel,
        model_type: str,
        description: str,
    ) -> None:
        self.miner = miner
        self.boards = boards
        self.model_type = model_type
        self.description = description

    def _ok(self, code: int, msg: str, **sections: Any) -> Reply:
        return {
            "STATUS": status(code, msg, description=self.description),
            **sections,
            "id": 1,
        }

    def api_version(self, _parameter: object) -> Reply:
        version = {
            "BMMiner": BMMINER_VERSION,
            "API": "3.1",
            "Miner": "uart_trans.1.3",
            "CompileTime": FIRMWARE_DATE,
            "Type": self.model_type,
        }
        return self._ok(22, "BMMiner versions", VERSION=[version])

    def api_summary(self, _parameter: object) -> Reply:
        ghs = self.miner.physics.hashrate_ths() * 1000.0
        summary = {
            "Elapsed": self.miner.physics.uptime_s(),
            "GHS 5s": f"{ghs:.2f}",
            "GHS av": round(ghs, 2),
            "GHS 30m": round(ghs, 2),
            "Accepted": 0,
            "Rejected": 0,
            "Hardware Errors": 0,
        }
        return self._ok(11, "Summary", SUMMARY=[summary])

    def api_stats(self, _parameter: object) -> Reply:
        physics, boards = self.miner.physics, self.boards
        header = {
            "BMMiner": BMMINER_VERSION,
            "Miner": "uart_trans.1.3",
            "CompileTime": FIRMWARE_DATE,
            "Type": self.model_type,
        }
        stats: dict[str, Any] = {
            "STATS": 0,
            "ID": "BTM_SOC0",
            "Elapsed": physics.uptime_s(),
            "rate_unit": "GH",
            "total_rateideal": round(
                self.miner.spec.hashrate_at(physics.target_watts) * 1000.0, 2
            ),
            "total_rate": round(physics.hashrate_ths() * 1000.0, 2),
            "miner_count": self.miner.spec.hashboards,
            "fan_num": self.miner.spec.fans,
        }
        for n, rpm in enumerate(boards.fan_rpms(), start=1):
            stats[f"fan{n}"] = rpm
        chips = boards.chips if physics.mining else 0
        rows = zip(
            boards.hashrates_ghs(),
            boards.board_temps_c(),
            boards.chip_temps_c(),
            strict=True,
        )
        for n, (ghs, board_c, chip_c) in enumerate(rows, start=1):
            stats[f"chain_acn{n}"] = chips
            stats[f"chain_acs{n}"] = " oooooooo" if chips else ""
            stats[f"chain_rate{n}"] = f"{ghs:.2f}"
            # As recorded from an S21 XP (asic-rs test data): temp<n> is the board's PCB sensor,
            # temp2_<n> the chips; pyasic's BMMiner parser reads them the other way round.
            stats[f"temp{n}"] = round(board_c)
            stats[f"temp2_{n}"] = round(chip_c)
            stats[f"temp_pcb{n}"] = sensors(board_c)
            stats[f"temp_chip{n}"] = sensors(chip_c)
        stats["GHS 5s"] = stats["GHS av"] = stats["total rate"] = stats["total_rate"]
        return self._ok(70, "CGMiner stats", STATS=[header, stats])

    def api_devdetails(self, _parameter: object) -> Reply:
        details = [
            {
                "DEVDETAILS": i,
                "Name": "BTM_SOC",
                "ID": i,
                "Driver": "bitmain",
                "Kernel": "",
                "Model": self.model_type,
            }
            for i in range(self.miner.spec.hashboards)
        ]
        return self._ok(69, "Device Details", DEVDETAILS=details)

    def api_pools(self, _parameter: object) -> Reply:
        pool = {
            "POOL": 0,
            "URL": "stratum+tcp://pool.wattshift.invalid:3333",
            "User": f"wattshift.{self.miner.serial.lower()}",
            "Status": "Alive" if self.miner.physics.mining else "Dead",
            "Stratum Active": self.miner.physics.mining,
            "Accepted": 0,
            "Rejected": 0,
            "Get Failures": 0,
            "Remote Failures": 0,
        }
        return self._ok(7, "1 Pool(s)", POOLS=[pool])


def sensors(celsius: float) -> str:
    """Four sensors of one board as bmminer prints them ("38-48-47-52")."""
    t = round(celsius)
    return f"{t - 6}-{t}-{t - 1}-{t + 4}"
