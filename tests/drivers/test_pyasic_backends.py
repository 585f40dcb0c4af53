"""The pyasic backend table, the model table, and importing pyasic without its side effects."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

from wattshift.drivers.pyasic_backends import (
    BACKENDS,
    FIRMWARE_HINTS,
    UNKNOWN_BACKEND,
    import_pyasic,
    power_range_for,
    traits_for,
)
from wattshift.model.miner import PowerControl


def test_importing_pyasic_leaves_logging_alone_and_warns_nothing() -> None:
    # A fresh interpreter: in this one pyasic is long imported. Warnings are errors there too.
    script = textwrap.dedent(
        """
        import logging, sys
        marker = logging.NullHandler()
        logging.getLogger().setLevel(logging.DEBUG)
        logging.getLogger("asyncssh").setLevel(logging.INFO)
        from wattshift.drivers.pyasic_backends import import_pyasic
        assert "pyasic" not in sys.modules, "imported pyasic at import time"
        import_pyasic()
        root = logging.getLogger()
        assert root.handlers == [], root.handlers
        assert root.level == logging.DEBUG, root.level
        assert logging.getLogger("asyncssh").level == logging.INFO
        print("clean")
        """
    )
    run = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "clean"


def test_plain_import_of_pyasic_does_configure_the_root_logger() -> None:
    # The reason import_pyasic exists; if pyasic stops doing this, the workaround can go.
    script = "import logging, pyasic; assert logging.getLogger().handlers, 'no handler'; print('configured')"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "configured", run.stderr


@pytest.mark.parametrize("qualified", sorted(BACKENDS))
def test_every_backend_key_names_a_pyasic_class(qualified: str) -> None:
    import_pyasic()
    module, _, name = qualified.rpartition(".")
    assert isinstance(getattr(importlib.import_module(module), name), type)


@pytest.mark.parametrize(
    ("miner_type", "model", "firmware", "control"),
    [
        ("LUX_OS", "ANTMINER S21", "luxos", PowerControl.PROFILES),
        ("BRAIINS_OS", "ANTMINER S21", "braiins", PowerControl.WATTS),
        ("WHATSMINER", "M60SVK10", "whatsminer", PowerControl.WATTS),  # a class pyasic builds at run time
        ("VNISH", "ANTMINER S19 XP", "vnish", PowerControl.ON_OFF),
        ("ANTMINER", "ANTMINER S21", "antminer", PowerControl.ON_OFF),
    ],
)
def test_traits_come_from_the_backend_class(miner_type: str, model: str, firmware: str, control: PowerControl) -> None:
    import_pyasic()
    factory = importlib.import_module("pyasic.miners.factory")
    miner = factory.MINER_CLASSES[factory.MinerTypes[miner_type]][model]("127.0.5.200")
    traits = traits_for(miner)
    assert (traits.firmware, traits.control) == (firmware, control)


def test_a_miner_of_no_known_backend_is_on_off() -> None:
    import_pyasic()
    factory = importlib.import_module("pyasic.miners.factory")
    avalon = factory.MINER_CLASSES[factory.MinerTypes.AVALONMINER][None]("127.0.5.201")
    assert traits_for(avalon) is UNKNOWN_BACKEND and UNKNOWN_BACKEND.control is PowerControl.ON_OFF


@pytest.mark.parametrize("firmware", sorted(FIRMWARE_HINTS))
def test_every_hint_names_pyasic_types_and_queries(firmware: str) -> None:
    import_pyasic()
    factory = importlib.import_module("pyasic.miners.factory")
    hint = FIRMWARE_HINTS[firmware]
    assert factory.MinerTypes[hint.miner_type] in factory.MINER_CLASSES
    for query in filter(None, (hint.model_query, hint.version_query)):
        assert callable(getattr(factory.miner_factory, query))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("AntMiner S21", (1800.0, 4000.0)),
        ("AntMiner S19 XP", (1500.0, 3600.0)),
        ("WhatsMiner M60S VK10", (1800.0, 3900.0)),
        ("AntMiner S9", None),
        (None, None),
    ],
)
def test_power_ranges_by_model(model: str | None, expected: tuple[float, float] | None) -> None:
    assert power_range_for(model) == expected
