"""LuxOS (Luxor's Antminer firmware) on TCP 4028, as pyasic 0.79.0's ``LUXMiner`` backend uses it.

What pyasic sends and expects (read from ``pyasic/miners/backends/luxminer.py`` and
``pyasic/rpc/luxminer.py``):

- identification: ``version`` / ``devdetails`` must contain "LUXminer"; the model is
  ``VERSION[0].Type`` ("Antminer S21" -> ``LUXMinerS21``);
- ``get_data`` is one multicommand: ``power`` (``POWER[0].Watts``), ``config`` + ``profiles``
  (the active profile's watts is the limit), ``stats`` (per-board ``chain_rate<n>`` in GH/s,
  ``temp_pcb<n>``/``temp_chip<n>`` as "a-b-c-d" integer strings, ``Elapsed``), ``fans``,
  ``summary``. pyasic has no ``is_mining`` for LuxOS, so it reports True even while asleep;
  that is pyasic's doing, the firmware itself does report power and hashrate truthfully;
- privileged commands carry a session id first in the parameter list
  (``curtail <sid>,sleep|wakeup``, ``profileset <sid>,<profile>``, ``atmset <sid>,enabled=false``,
  ``rebootdevice <sid>``). pyasic asks ``session`` for the active id and calls ``logon`` only when
  there is none; LuxOS allows one session at a time ("Another session is active", code 402);
- ``set_power_limit`` snaps to the highest profile at or below the watts, and because LuxOS
  refuses ``profileset`` while Advanced Thermal Management is on, pyasic turns ATM off, sets the
  profile and turns ATM back on.

Sessions live in the luxminer process, so a reboot ends them. The active profile is saved in
the firmware's configuration, so it survives a reboot. ATM is modelled as a switch only: the
simulator does not move between profiles on temperature by itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from wattshift.model.specs import MinerSpec

from .cgminer import CgminerServer, dispatch_commands, status
from .miner import CommandRefused, SimulatedMiner
from .physics import Clock

Reply = dict[str, Any]

FIRMWARE_VERSION = "2024.11.1.155302-9b5c8f1a"
DESCRIPTION = f"LUXminer {FIRMWARE_VERSION}"

# Profiles are LuxOS's frequency steps. Hashrate is proportional to frequency, so on the
# physics curve H ~ P**(1/a) a profile at f MHz draws P0 * (f / f0) ** a watts.
DEFAULT_PROFILE = "default"
DEFAULT_FREQUENCY_MHZ = 500
PROFILE_STEP_MHZ = 20
NOMINAL_CHIP_VOLTS = 13.2  # per-board supply at the default profile

# Chips per hashboard, by model (Bitmain's published counts); LuxOS reports them per chain.
CHIPS_PER_BOARD = {"Antminer S19 Pro": 114, "Antminer S19 XP": 110, "Antminer S21": 108, "Antminer S21 Pro": 65}

FAN_MAX_RPM = 6000

# Status codes LuxOS uses where we know them (version 22, ATM 339/340, session clash 402).
# The others are this simulator's own, chosen outside the ranges CGMiner uses.
CODE_VERSION = 22
CODE_ATM = 339
CODE_ATM_SET = 340
CODE_SESSION_ACTIVE = 402
CODE_SESSION_INVALID = 403
CODE_BAD_PARAMETER = 404
CODE_ATM_BLOCKS_PROFILE = 405
CODE_REFUSED = 406
CODE_OK = 300


@dataclass(frozen=True, slots=True)
class Profile:
    """One row of ``profiles``: a frequency step and what it draws and hashes."""

    name: str
    step: int
    frequency_mhz: int
    watts: int
    hashrate_ths: float
    voltage: float


def build_profiles(spec: MinerSpec) -> tuple[Profile, ...]:
    """Every 20 MHz step whose draw lies inside the model's power range, ascending."""
    profiles = []
    for mhz in range(PROFILE_STEP_MHZ, 2 * DEFAULT_FREQUENCY_MHZ, PROFILE_STEP_MHZ):
        step = (mhz - DEFAULT_FREQUENCY_MHZ) // PROFILE_STEP_MHZ
        ratio = mhz / DEFAULT_FREQUENCY_MHZ
        watts = round(spec.nominal_watts * ratio**spec.curve_exponent)
        if not spec.min_watts <= watts <= spec.max_watts:
            continue
        profiles.append(
            Profile(
                name=DEFAULT_PROFILE if step == 0 else f"{mhz}MHz",
                step=step,
                frequency_mhz=mhz,
                watts=watts,
                hashrate_ths=spec.hashrate_at(watts),
                # P ~ f * V**2, so V follows sqrt(P / f).
                voltage=round(NOMINAL_CHIP_VOLTS * math.sqrt(watts / spec.nominal_watts / ratio), 2),
            )
        )
    return tuple(profiles)


class LuxApiError(Exception):
    """A command the firmware answers with an error ``STATUS``."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def privileged(handler: Callable[[LuxOSMiner, list[str]], Reply]) -> Callable[[LuxOSMiner, Any], Reply]:
    """An ``api_`` method that needs the session id first in its parameters.

    The wrapped handler gets the parameters after the session id. Firmware errors and the
    simulated REFUSE fault both come back as an error ``STATUS``, as LuxOS answers them.
    """

    @functools.wraps(handler)
    def checked(self: LuxOSMiner, parameter: Any) -> Reply:
        try:
            return handler(self, self._authorise(parameter))
        except LuxApiError as error:
            return self._error(error.code, error.msg)
        except CommandRefused as refused:
            return self._error(CODE_REFUSED, str(refused))

    return checked


class LuxOSMiner(SimulatedMiner):
    """An Antminer running LuxOS on ``host``:4028."""

    firmware: ClassVar[str] = "luxos"

    def __init__(
        self,
        host: str,
        spec: MinerSpec,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        **physics_options: float,
    ) -> None:
        if not spec.model.startswith("Antminer"):
            raise ValueError(f"{host}: LuxOS runs on Antminers only, not on {spec.model!r}")
        super().__init__(host, spec, clock=clock, seed=seed, **physics_options)
        # Luxor: "wakeup works by setting the frequency/voltage immediately"; no slow boot.
        self.physics.wake_boot_s = 0.0
        self.profiles = build_profiles(spec)
        self.active_profile = self._profile(DEFAULT_PROFILE)
        self._apply_profile(self.active_profile)
        self.atm_enabled = True  # LuxOS ships with ATM on
        self.session_id: str | None = None
        self.server = CgminerServer(self, self._handle)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def _handle(self, request: dict[str, Any]) -> Reply:
        for name in str(request.get("command", "")).split("+"):
            self.record(name)
        return await dispatch_commands(self, request)

    # -- sessions -------------------------------------------------------------------------------

    def api_session(self, _parameter: Any) -> Reply:
        return self._ok(CODE_OK, "Session", SESSION=[{"SessionID": self.session_id or ""}])

    def api_logon(self, _parameter: Any) -> Reply:
        if self.session_id is not None:
            return self._error(CODE_SESSION_ACTIVE, "Another session is active")
        self.session_id = "".join(self.rng.choice("0123456789abcdef") for _ in range(8))
        return self._ok(CODE_OK, "Logon", SESSION=[{"SessionID": self.session_id}])

    @privileged
    def api_logoff(self, _args: list[str]) -> Reply:
        self.session_id = None
        return self._ok(CODE_OK, "Logoff")

    def _authorise(self, parameter: Any) -> list[str]:
        """Check the leading session id; return the parameters after it."""
        parts = [] if parameter is None else str(parameter).split(",")
        if not parts or not parts[0]:
            raise LuxApiError(CODE_SESSION_INVALID, "Missing session id")
        if self.session_id is None or parts[0] != self.session_id:
            raise LuxApiError(CODE_SESSION_INVALID, f"Invalid session id {parts[0]!r}")
        return parts[1:]

    # -- identity -------------------------------------------------------------------------------

    def api_version(self, _parameter: Any) -> Reply:
        version = {
            "API": "3.7",
            "CompileTime": "Fri Nov 15 15:53:02 UTC 2024",
            "LUXminer": FIRMWARE_VERSION,
            "Miner": FIRMWARE_VERSION,
            "Type": self.spec.model,
        }
        return self._ok(CODE_VERSION, "LUXminer versions", VERSION=[version])

    def api_devdetails(self, _parameter: Any) -> Reply:
        boards = [
            {"DEVDETAILS": i, "Name": "BTM_SOC", "ID": i, "Driver": "luxminer", "Model": self.spec.model}
            for i in range(self.spec.hashboards)
        ]
        return self._ok(69, "Device Details", DEVDETAILS=boards)

    def api_config(self, _parameter: Any) -> Reply:
        config = {
            "ASC Count": self.spec.hashboards,
            "Profile": self.active_profile.name,
            "MACAddr": self.mac.lower(),
            "Hostname": f"luxos-{self.serial.lower()}",
            "RedLed": "off",
            "SerialNumber": self.serial,
        }
        return self._ok(33, "CGMiner config", CONFIG=[config])

    # -- telemetry (every number from the physics) ----------------------------------------------

    def api_power(self, _parameter: Any) -> Reply:
        return self._ok(CODE_OK, "Power", POWER=[{"PSU": True, "Watts": round(self.physics.power_watts())}])

    def api_summary(self, _parameter: Any) -> Reply:
        ghs = self.physics.hashrate_ths() * 1000.0
        summary = {
            "Elapsed": self.physics.uptime_s(),
            "GHS 5s": round(ghs, 2),
            "GHS av": round(ghs, 2),
            # Pool shares are not modelled; the simulator reports none rather than invent them.
            "Accepted": 0,
            "Rejected": 0,
        }
        return self._ok(11, "Summary", SUMMARY=[summary])

    def api_stats(self, _parameter: Any) -> Reply:
        physics = self.physics
        boards = self.spec.hashboards
        board_ghs = physics.hashrate_ths() * 1000.0 / boards
        board_c = physics.temperature_c()
        # Chips run hotter than the PCB by an amount that grows with the load.
        chip_c = board_c + 15.0 * physics.power_watts() / self.spec.nominal_watts
        chains: dict[str, Any] = {"Elapsed": physics.uptime_s(), "rate_unit": "GH"}
        chains["total_rateideal"] = round(self.spec.hashrate_at(physics.target_watts) * 1000.0, 2)
        for n in range(1, boards + 1):
            chains[f"chain_rate{n}"] = f"{board_ghs:.2f}"
            chains[f"chain_acn{n}"] = CHIPS_PER_BOARD.get(self.spec.model, 0)
            chains[f"temp_pcb{n}"] = _sensor_string(board_c)
            chains[f"temp_chip{n}"] = _sensor_string(chip_c)
        header = {"STATS": 0, "ID": "luxminer", "Type": self.spec.model, "Miner": FIRMWARE_VERSION}
        return self._ok(70, "CGMiner stats", STATS=[header, chains])

    def api_fans(self, _parameter: Any) -> Reply:
        # The fan controller holds the boards near target: duty rises with temperature.
        duty = min(100, max(10, round((self.physics.temperature_c() - 30.0) * 2.5)))
        fans = [{"ID": i, "RPM": FAN_MAX_RPM * duty // 100, "Speed": duty} for i in range(self.spec.fans)]
        return self._ok(CODE_OK, "Fans", FANS=fans, FANCTRL=[{"Mode": "Auto", "MinFans": self.spec.fans}])

    def api_tempctrl(self, _parameter: Any) -> Reply:
        control = {"Mode": "Auto", "Target": 75, "Hot": 85, "Dangerous": 95}
        return self._ok(CODE_OK, "Temperature control", TEMPCTRL=[control])

    def api_pools(self, _parameter: Any) -> Reply:
        pool = {
            "POOL": 0,
            "GROUP": 0,
            "URL": "stratum+tcp://pool.invalid:3333",
            "User": f"wattshift.{self.serial.lower()}",
            "Status": "Alive" if self.physics.mining else "Dead",
            "Stratum Active": self.physics.mining,
            "Accepted": 0,
            "Rejected": 0,
            "Get Failures": 0,
            "Remote Failures": 0,
        }
        return self._ok(7, "1 Pool(s)", POOLS=[pool])

    def api_groups(self, _parameter: Any) -> Reply:
        return self._ok(324, "List groups", GROUPS=[{"GROUP": 0, "Name": "default", "Quota": 1}])

    # -- profiles and ATM -----------------------------------------------------------------------

    def api_profiles(self, _parameter: Any) -> Reply:
        rows = [
            {
                "Profile Name": p.name,
                "Step": p.step,
                "Frequency": p.frequency_mhz,
                "Watts": p.watts,
                "Hashrate": round(p.hashrate_ths, 2),
                "Voltage": p.voltage,
                "IsTuned": False,
                "IsDynamic": False,
            }
            for p in self.profiles
        ]
        return self._ok(CODE_OK, "Profiles", PROFILES=rows)

    @privileged
    def api_profileset(self, args: list[str]) -> Reply:
        if len(args) != 1:
            raise LuxApiError(CODE_BAD_PARAMETER, f"profileset takes one profile name, got {args}")
        profile = self._profile(args[0])
        self.control(functools.partial(self._set_profile, profile))
        # The firmware echoes the profile it now holds: a profileset it did not carry out (the
        # IGNORE fault) answers success with the old one, and pyasic then returns False.
        held = self.active_profile.name
        return self._ok(CODE_OK, "Profile set", PROFILE=[{"Profile": held, "Result": "success"}])

    def api_atm(self, _parameter: Any) -> Reply:
        atm = {
            "Enabled": self.atm_enabled,
            "MaxProfile": self.profiles[-1].name,
            "MinProfile": self.profiles[0].name,
            "PostRampMinutes": 15,
            "StartupMinutes": 15,
            "TempWindow": 7.0,
        }
        return self._ok(CODE_ATM, "ATM configuration values", ATM=[atm])

    @privileged
    def api_atmset(self, args: list[str]) -> Reply:
        settings = dict(arg.split("=", 1) for arg in args if "=" in arg)
        enabled = settings.get("enabled")
        if enabled not in (None, "true", "false"):
            raise LuxApiError(CODE_BAD_PARAMETER, f"atmset: enabled must be true or false, got {enabled!r}")
        if enabled is not None:
            self.control(functools.partial(self._set_atm, enabled == "true"))
        return self._ok(CODE_ATM_SET, "Advanced Thermal Management configuration updated")

    # -- sleep, wake, reboot --------------------------------------------------------------------

    @privileged
    def api_curtail(self, args: list[str]) -> Reply:
        actions = {"sleep": self.physics.sleep, "wakeup": self.physics.wake}
        if len(args) != 1 or args[0] not in actions:
            raise LuxApiError(CODE_BAD_PARAMETER, f"curtail takes sleep or wakeup, got {args}")
        self.control(actions[args[0]])
        return self._ok(CODE_OK, f"Curtail {args[0]}")

    @privileged
    def api_rebootdevice(self, _args: list[str]) -> Reply:
        self.control(self._reboot)
        return self._ok(CODE_OK, "Rebooting device")

    # -- internals ------------------------------------------------------------------------------

    def _profile(self, name: str) -> Profile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        raise LuxApiError(CODE_BAD_PARAMETER, f"Unknown profile {name!r}")

    def _set_profile(self, profile: Profile) -> None:
        if self.atm_enabled:
            raise LuxApiError(CODE_ATM_BLOCKS_PROFILE, "Cannot set profile while ATM is enabled")
        self._apply_profile(profile)

    def _apply_profile(self, profile: Profile) -> None:
        self.active_profile = profile
        self.physics.set_target(profile.watts)
        # The profile is saved in the firmware's configuration: a reboot comes back to it.
        self.physics.default_target_watts = profile.watts

    def _set_atm(self, enabled: bool) -> None:
        self.atm_enabled = enabled

    def _reboot(self) -> None:
        self.session_id = None  # sessions live in the luxminer process
        self.physics.reboot()

    def _ok(self, code: int, msg: str, **sections: Any) -> Reply:
        return {"STATUS": status(code, msg, description=DESCRIPTION), **sections, "id": 1}

    def _error(self, code: int, msg: str) -> Reply:
        return {"STATUS": status(code, msg, ok=False, description=DESCRIPTION), "id": 1}


def _sensor_string(celsius: float) -> str:
    """Four sensors as LuxOS prints them ("58-61-61-64"); pyasic averages the middle two."""
    t = round(celsius)
    return f"{t - 3}-{t}-{t}-{t + 3}"
