"""The site a back-test replays: circuits, miners by model and count, GPU nodes by kind and count.

A back-test needs no addresses or credentials, only what draws how much where. It reads either
this compact form or an operator's real site file (``wattshift validate`` format), whose miner
groups become counts of their model. Power in kW here, watts inside, as in the site file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from wattshift.daemon.config.gpu import GpuHost
from wattshift.daemon.config.site import SiteConfig, SiteLimits, load_site
from wattshift.daemon.config.switching import SwitchingOverride
from wattshift.daemon.config.yamlfile import FileInvalid, Problem, load_model, read_document
from wattshift.model.efficiency import CURVES, normalise_model
from wattshift.model.fields import SITE_CIRCUIT, Name, Strict
from wattshift.model.jobs import FlexTier, SwitchingCost
from wattshift.model.snapshot import EfficiencyCurve
from wattshift.model.specs import SPECS, MinerSpec


class MinerCount(Strict):
    """``count`` miners of one model on one circuit."""

    model: str
    count: int = Field(ge=1, le=100_000)
    circuit: Name = SITE_CIRCUIT
    switching: SwitchingOverride | None = None  # boot, wear, min up/down: the model table's otherwise

    @model_validator(mode="after")
    def _known(self) -> MinerCount:
        spec = self.kind.spec  # raises ValueError naming the model and the ones known
        if spec.boot_watts > spec.max_watts:
            raise ValueError(f"switching.boot_watts: {spec.boot_watts:g} is above the {spec.max_watts:g} W "
                             f"a {spec.model} may draw")
        return self

    @property
    def kind(self) -> MinerKind:
        """The model's row and curve, with this group's switching overrides in place."""
        kind = spec_for(self.model)
        if self.switching is None:
            return kind
        return MinerKind(self.switching.spec(kind.spec), kind.curve)


class GpuNodeCount(GpuHost):
    """``count`` identical GPU servers on one circuit; each holds at most one job."""

    count: int = Field(ge=1, le=10_000)
    circuit: Name = SITE_CIRCUIT
    gpu_model: str = "H100"
    gpus: int = Field(default=8, ge=1, le=16)
    cap_min_w: float = Field(default=200.0, gt=0)
    cap_max_w: float = Field(default=700.0, gt=0)
    tier: FlexTier = FlexTier.SUSPENDABLE
    checkpoint_seconds: float = Field(default=60.0, ge=0)
    restart_seconds: float = Field(default=300.0, ge=0)
    penalty_usd: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> GpuNodeCount:
        if self.cap_min_w > self.cap_max_w:
            raise ValueError(f"cap_min_w ({self.cap_min_w}) is above cap_max_w ({self.cap_max_w})")
        return self

    @property
    def switching(self) -> SwitchingCost:
        return SwitchingCost(self.checkpoint_seconds, self.restart_seconds, self.penalty_usd)


class BacktestSite(SiteLimits):
    miners: list[MinerCount] = Field(default_factory=list)
    gpu_nodes: list[GpuNodeCount] = Field(default_factory=list)

    @model_validator(mode="after")
    def _placed(self) -> BacktestSite:
        circuits = {"miners": [g.circuit for g in self.miners], "gpu_nodes": [g.circuit for g in self.gpu_nodes]}
        for kind, names in circuits.items():
            for index, circuit in enumerate(names):
                self.on_a_circuit(f"{kind}[{index}]", circuit)
        return self


@dataclass(frozen=True, slots=True)
class MinerKind:
    """What the back-test needs of a model: its range and sleep draw, and the policy's curve."""

    spec: MinerSpec
    curve: EfficiencyCurve


def spec_for(model: str) -> MinerKind:
    """The simulator's range for a model and the efficiency curve the policies use for it."""
    key = normalise_model(model)
    for spec in SPECS.values():
        if normalise_model(spec.model) == key and key in CURVES:
            return MinerKind(spec, CURVES[key])
    known = sorted(s.model for s in SPECS.values() if normalise_model(s.model) in CURVES)
    raise ValueError(f"model {model!r} has no simulated range and curve (known: {known})")


def from_site_config(site: SiteConfig, file: str) -> BacktestSite:
    """An operator's site file as a back-test site: each miner group becomes a count of its model."""
    miners: list[dict[str, Any]] = []
    for index, group in enumerate(site.miners):
        if not group.model:
            raise FileInvalid([Problem(file, None, f"miners[{index}].model",
                                       "a back-test needs the model of every miner group")])
        try:
            spec_for(group.model)
        except ValueError as err:
            raise FileInvalid([Problem(file, None, f"miners[{index}].model", str(err))]) from None
        miners.append({"model": group.model, "count": sum(1 for _ in group.hosts()), "circuit": group.circuit,
                       "switching": group.switching.model_dump() if group.switching else None})
    return BacktestSite.model_validate({
        "name": site.name,
        "budget_kw": site.budget_kw,
        "reserve_kw": site.reserve_kw,
        "tick_seconds": site.tick_seconds,
        "circuits": [c.model_dump() for c in site.circuits],
        "miners": miners,
    })


def load_backtest_site(path: Path) -> BacktestSite:
    """A back-test site file, or a real site file (miners by address); raises FileInvalid."""
    try:
        raw = read_document(path).data  # bounded: size, depth, aliases
    except FileInvalid:
        raw = None  # load_model explains it, with the line
    groups = raw.get("miners") if isinstance(raw, dict) else None
    real = isinstance(groups, list) and any(isinstance(g, dict) and "addresses" in g for g in groups)
    if real:
        return from_site_config(load_site(path, environ={}), str(path))
    return load_model(path, BacktestSite)

