"""A Whatsminer (stock BTMiner firmware, API v2 on TCP 4028), as pyasic 0.79.0 speaks to it.

Reads are plaintext JSON (:mod:`.whatsminer_replies`). Writes travel encrypted through the
privileged channel (:mod:`.whatsminer_auth`): ``get_token``, then ``{"enc": 1, "data": ...}``
carrying ``{"cmd": ..., "token": sign, ...params}``; the reply comes back sealed with
``"Msg": "API command OK"`` on success, which is what pyasic checks for.

What pyasic 0.79.0 sends for each control call (``pyasic/miners/backends/btminer.py``):

- ``set_power_limit(W)``: ``adjust_power_limit`` with ``power_limit`` as a string of watts;
- ``stop_mining()``: ``power_off`` with ``respbefore: "true"``;
- ``resume_mining()``: ``power_on``;
- ``reboot()``: ``reboot`` (pyasic gives up after 10 s and then returns False).

Every write goes through :meth:`SimulatedMiner.control`, so REFUSE answers the firmware's
command error (code 132) and IGNORE answers OK and changes nothing.

How the failures the firmware answers *before* a command runs come back (assumptions where the
manual is silent, chosen to match what the manual says the firmware can and cannot know):

- a bad token or a wrong password (the AES key differs, so the token cannot be read): plaintext
  ``{"STATUS": "E", "Code": 135, "Msg": "check token err"}`` -- the firmware has no key the
  client could decrypt with;
- more than 32 live tokens: ``get_token`` answers code 136 "token over max times";
- a writable command sent as plaintext: code 45 "permission denied" (the manual: writes are
  ciphertext only).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from wattshift.model.specs import MinerSpec

from . import whatsminer_replies as replies
from .cgminer import CgminerServer, Reply, dispatch_commands
from .miner import CommandRefused, SimulatedMiner
from .physics import Clock
from .whatsminer_auth import PrivilegedChannel, PrivilegeError
from .whatsminer_replies import CODE_OK, MSG_OK, Identity, Readings, flat_reply

API_PORT = 4028
CODE_INVALID_COMMAND = 14
CODE_PERMISSION_DENIED = 45
CODE_COMMAND_ERROR = 132
# adjust_power_limit with this value removes the limit (back to the factory target).
POWER_LIMIT_RESET_W = 99_999
BOARD_SHARE_SPREAD = 0.02  # boards of one miner differ by a couple of percent in hashrate

WriteCommand = Callable[[dict[str, Any]], Reply]


class WhatsminerMiner(SimulatedMiner):
    """One Whatsminer on its own loopback address, answering from its physics."""

    firmware: ClassVar[str] = "whatsminer"

    def __init__(
        self,
        host: str,
        spec: MinerSpec,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        password: str = "admin",
        **physics_options: float,
    ) -> None:
        model = replies.WHATSMINER_MODELS.get(spec.model)
        if model is None:
            known = ", ".join(sorted(replies.WHATSMINER_MODELS))
            raise ValueError(
                f"{host}: no Whatsminer model table entry for spec {spec.model!r} (known: {known})"
            )
        clock = clock or time.monotonic
        super().__init__(host, spec, clock=clock, seed=seed, **physics_options)
        self.identity = Identity(
            host=host,
            mac=self.mac,
            serial=self.serial,
            spec=spec,
            model=model,
            board_shares=self._board_shares(spec.hashboards),
            pool_url="stratum+tcp://pool.wattshift.invalid:3333",
            pool_user=f"wattshift.{self.serial}",
        )
        # Some API v2 firmware has no power limiting at all: "Power Limit" reads 0 and
        # adjust_power_limit is an invalid command. Such a miner is driven on/off.
        self.power_limit_supported = True
        self.channel = PrivilegedChannel(password, rng=self.rng, clock=clock)
        self._server = CgminerServer(self, self._answer, port=API_PORT)
        self._write_commands: dict[str, WriteCommand] = {
            "adjust_power_limit": self._adjust_power_limit,
            "power_off": self._power_off,
            "power_on": self._power_on,
            "reboot": self._reboot,
        }

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()

    # -- the wire -------------------------------------------------------------------------------

    async def _answer(self, request: dict[str, Any]) -> Reply:
        if "enc" in request:
            return self._answer_privileged(request.get("data"))
        command = str(request.get("command") or request.get("cmd") or "")
        for name in command.split("+"):
            self.record(name)
            if name in self._write_commands:
                return flat_reply(CODE_PERMISSION_DENIED, "permission denied", ok=False)
        return await dispatch_commands(self, {"command": command, "parameter": request.get("parameter")})

    def _answer_privileged(self, data: object) -> Reply:
        try:
            request = self.channel.open(str(data or ""))
        except PrivilegeError as refused:
            self.record("<rejected privileged command>")
            return flat_reply(refused.code, refused.message, ok=False)
        name = str(request.get("cmd", ""))
        self.record(name)
        write = self._write_commands.get(name)
        if write is None:
            return self.channel.seal(flat_reply(CODE_INVALID_COMMAND, "invalid cmd", ok=False))
        try:
            reply = write(request)
        except CommandRefused:
            reply = flat_reply(CODE_COMMAND_ERROR, "API command ERROR", ok=False)
        return self.channel.seal(reply) if isinstance(reply, dict) else reply

    # -- readable API (plaintext) ---------------------------------------------------------------

    def api_get_token(self, _: object) -> dict[str, Any]:
        try:
            token = self.channel.issue_token()
        except PrivilegeError as refused:
            return flat_reply(refused.code, refused.message, ok=False)
        return flat_reply(replies.CODE_TOKEN_OK, token.as_msg())

    def api_summary(self, _: object) -> dict[str, Any]:
        reply = replies.summary(Readings.of(self.physics), self.identity)
        if not self.power_limit_supported:
            reply["SUMMARY"][0]["Power Limit"] = 0
        return reply

    def api_devs(self, _: object) -> dict[str, Any]:
        return replies.devs(Readings.of(self.physics), self.identity)

    def api_edevs(self, _: object) -> dict[str, Any]:
        # Same boards: the simulator has no blacklisted or zombie boards to leave out.
        return replies.devs(Readings.of(self.physics), self.identity)

    def api_devdetails(self, _: object) -> dict[str, Any]:
        return replies.devdetails(self.identity)

    def api_pools(self, _: object) -> dict[str, Any]:
        return replies.pools(Readings.of(self.physics), self.identity)

    def api_get_version(self, _: object) -> dict[str, Any]:
        return replies.get_version()

    def api_get_psu(self, _: object) -> dict[str, Any]:
        return replies.get_psu(Readings.of(self.physics), self.identity)

    def api_get_miner_info(self, _: object) -> dict[str, Any]:
        return replies.get_miner_info(self.identity)

    def api_get_error_code(self, _: object) -> dict[str, Any]:
        return replies.get_error_code()

    def api_status(self, _: object) -> dict[str, Any]:
        return replies.miner_status(Readings.of(self.physics))

    # -- writable API (ciphertext only) ---------------------------------------------------------

    def _adjust_power_limit(self, request: dict[str, Any]) -> Reply:
        if not self.power_limit_supported:
            return flat_reply(CODE_INVALID_COMMAND, "invalid cmd", ok=False)
        try:
            watts = int(str(request.get("power_limit", "")).strip())
        except ValueError:
            return flat_reply(CODE_INVALID_COMMAND, "invalid API command or data", ok=False)
        if watts <= 0:
            return flat_reply(CODE_INVALID_COMMAND, "invalid API command or data", ok=False)
        target = self.physics.default_target_watts if watts == POWER_LIMIT_RESET_W else watts
        # The physics clamps to the model's range; "Power Limit" then reads back what applied.
        self.control(lambda: self.physics.set_target(target))
        return flat_reply(CODE_OK, MSG_OK)

    def _power_off(self, request: dict[str, Any]) -> Reply:
        self.control(self.physics.sleep)
        if str(request.get("respbefore", "true")).lower() == "false":
            return b""  # asked not to answer first: the connection just closes
        return flat_reply(CODE_OK, MSG_OK)

    def _power_on(self, _: dict[str, Any]) -> Reply:
        self.control(self.physics.wake)
        return flat_reply(CODE_OK, MSG_OK)

    def _reboot(self, _: dict[str, Any]) -> Reply:
        # The reply still goes out on this connection; new ones are dropped until boot ends.
        self.control(self._restart_system)
        return flat_reply(CODE_OK, MSG_OK)

    def _restart_system(self) -> None:
        self.physics.reboot()
        self.channel.forget_tokens()

    # -- internals ------------------------------------------------------------------------------

    def _board_shares(self, boards: int) -> tuple[float, ...]:
        weights = [1.0 + self.rng.uniform(-BOARD_SHARE_SPREAD, BOARD_SHARE_SPREAD) for _ in range(boards)]
        total = sum(weights)
        return tuple(weight / total for weight in weights)
