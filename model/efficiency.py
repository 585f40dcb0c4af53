"""Efficiency curves by miner model: a data table, not a class per model.

Nominal points from DESIGN.md section 4 and the makers' sheets. Where the model is unknown the
curve is fitted to what the miner reports (hashrate at its current draw), and where it reports
nothing usable a conservative default stands in, so a stranger is never ranked as efficient.
"""

from __future__ import annotations

from .miner import MinerReading
from .snapshot import EfficiencyCurve

DEFAULT_EXPONENT = 2.0
UNKNOWN_J_PER_TH = 30.0  # worse than anything current: unknown miners go off first

CURVES: dict[str, EfficiencyCurve] = {
    "antminer s19 xp": EfficiencyCurve(3010, 140),
    "antminer s19j pro": EfficiencyCurve(3068, 104),
    "antminer s21": EfficiencyCurve(3500, 200),
    "antminer s21 pro": EfficiencyCurve(3510, 234),
    "antminer s21 xp": EfficiencyCurve(3645, 270),
    "whatsminer m50s": EfficiencyCurve(3276, 126),
    "whatsminer m60s": EfficiencyCurve(3422, 186),
}


def normalise_model(model: str) -> str:
    """pyasic and firmwares spell models differently ("S21", "Antminer S21", "M60S VK10")."""
    text = " ".join(model.lower().replace("_", " ").split())
    if text.startswith(("s19", "s21", "t21")):
        text = "antminer " + text
    if text.startswith(("m50", "m60", "m30", "m56", "m66")):
        text = "whatsminer " + text
    return text


def curve_for(model: str | None, reading: MinerReading | None, max_watts: float) -> EfficiencyCurve:
    if model:
        key = normalise_model(model)
        # Longest known name that the reported model starts with: "m60s vk10" -> "m60s".
        for name in sorted(CURVES, key=len, reverse=True):
            if key.startswith(name):
                return CURVES[name]
    if reading and reading.watts and reading.hashrate_ths and reading.watts > 100:
        return EfficiencyCurve(reading.watts, reading.hashrate_ths, DEFAULT_EXPONENT)
    return EfficiencyCurve(max_watts, max_watts / UNKNOWN_J_PER_TH, DEFAULT_EXPONENT)
