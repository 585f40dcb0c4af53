"""``Target`` (policies/base.py), ``Step`` (daemon/control/sequencer.py) and ``MinerState``
(model/snapshot.py) write their own ``__init__`` (a frozen dataclass's costs twice as much, and a
decision makes one per load, a snapshot one per miner): it must take the fields the dataclass
declares, in order, with their defaults, and leave the class frozen, comparable, hashable and
``dataclasses.replace``-able as the dataclass's would."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from factories import miner

from wattshift.daemon.control.sequencer import Action, Step
from wattshift.model.snapshot import MinerState
from wattshift.policies.base import Target

MADE = [Target("a", 1200.0, "why", 31.5), Target("b", 0.0, "off"),
        Step("a", "c-1", Action.SET_LIMIT, 2800.0, 3500.0, 2800.0, "why"), miner("m", state_since=12.0)]


@pytest.mark.parametrize("cls", [Target, Step, MinerState])
def test_the_written_init_takes_the_declared_fields_in_order_with_their_defaults(cls):
    params = list(inspect.signature(cls).parameters.values())
    declared = [f for f in dataclasses.fields(cls) if f.init]
    assert [p.name for p in params] == [f.name for f in declared]
    assert [p.default for p in params] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in declared]


@pytest.mark.parametrize("made", MADE, ids=repr)
def test_a_made_one_holds_its_fields_and_stays_frozen(made):
    values = {f.name: getattr(made, f.name) for f in dataclasses.fields(made) if f.init}
    again = type(made)(**values)
    assert again == made and hash(again) == hash(made) and repr(again) == repr(made)
    assert type(made)(*values.values()) == made
    changed = dataclasses.replace(made, device_id="other")
    assert changed.device_id == "other" and changed != made and made.device_id == values["device_id"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.device_id = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del made.device_id
    with pytest.raises(TypeError):
        type(made)(*values.values(), "one too many")


def test_a_target_without_a_value_has_none():
    assert Target("a", 100.0, "why").value_usd_per_mwh is None
    assert repr(Target("a", 100.0, "why")) == "Target(device_id='a', watts=100.0, reason='why', value_usd_per_mwh=None)"
