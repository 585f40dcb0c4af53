"""A miner group's switching figures: the model table's, with the site file's overrides.

Both site files (the live one and the back-test's compact one) take an optional ``switching``
block per miner group; each field given replaces the model's figure (model/specs.py), the rest
stay. Bounds are wide but finite: a boot of a day or a wear cost of a new miner is a typo.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import Field

from wattshift.model.efficiency import normalise_model
from wattshift.model.fields import Strict
from wattshift.model.specs import DEFAULT_SWITCHING, SPECS, MinerSpec, MinerSwitching


class SwitchingOverride(Strict):
    """``switching:`` under a miner group. Seconds, watts, US dollars."""

    boot_seconds: float | None = Field(default=None, ge=0, le=3600)
    boot_watts: float | None = Field(default=None, ge=0, le=20_000)
    wear_usd_per_cycle: float | None = Field(default=None, ge=0, le=1000)
    min_up_seconds: float | None = Field(default=None, ge=0, le=86_400)
    min_down_seconds: float | None = Field(default=None, ge=0, le=86_400)

    def given(self) -> dict[str, Any]:
        return {name: value for name, value in self.model_dump().items() if value is not None}

    def spec(self, spec: MinerSpec) -> MinerSpec:
        """The model's row with these figures in place of its own."""
        return replace(spec, **self.given())

    def switching(self, base: MinerSwitching) -> MinerSwitching:
        return replace(base, **self.given())


def table_switching(model: str | None) -> MinerSwitching:
    """The table's figures for a model name as a firmware or an operator spells it; the table's
    defaults for a model it does not know (or none)."""
    if model:
        key = normalise_model(model)
        for spec in SPECS.values():
            if normalise_model(spec.model) == key:
                return spec.switching
    return DEFAULT_SWITCHING


def switching_for(model: str | None, override: SwitchingOverride | None) -> MinerSwitching:
    base = table_switching(model)
    return override.switching(base) if override is not None else base
