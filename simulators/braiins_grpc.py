"""The Braiins OS+ public gRPC API (``braiins.bos.v1``, port 50051), as pyasic's BOSer uses it.

The services subclass the betterproto service bases that pyasic ships
(``pyasic.web.braiins_os.proto``), so the wire format is exactly what pyasic's stubs decode.
Methods not overridden here answer UNIMPLEMENTED, as the generated bases do.

Authentication, as on the real firmware: ``AuthenticationService/Login`` checks the user name and
password and answers the token in the initial metadata ``authorization`` (pyasic reads it there,
not from the body). Every other call except ``GetApiVersion`` must carry that token in its
request metadata, otherwise it fails with UNAUTHENTICATED. A token lives until the miner reboots,
so pyasic's cached token is rejected after a reboot and pyasic logs in again.

Capability: ``ConfigurationService/GetConstraints`` reports the power-target range of the model
(``tunerConstraints.powerTarget``), the range ``SetPowerTarget`` enforces. ``GetMinerStatus``
says PAUSED at once after ``PauseMining`` and NORMAL at once after ``ResumeMining``, while the
hashboards boot and hash nothing yet (pyasic's ``is_mining`` follows the hashrate, so it lags).

Errors: bad credentials -> UNAUTHENTICATED ("Bad credentials", the real firmware's text); a
power target outside the model's range -> INVALID_ARGUMENT (rejected, not clamped); a command
refused by the REFUSE fault -> FAILED_PRECONDITION. Transport faults (NO_ANSWER, HANG, GARBAGE)
are played below gRPC, in :mod:`.grpc_server`.

Not modelled: share accounting (pool share counters stay zero) and token expiry by time.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import grpclib.const
import grpclib.server
from grpclib import GRPCError, Status
from pyasic.web.braiins_os.proto.braiins.bos import (
    ApiVersion,
    ApiVersionRequest,
    ApiVersionServiceBase,
)
from pyasic.web.braiins_os.proto.braiins.bos import v1 as bos

from .miner import CommandRefused

if TYPE_CHECKING:
    from grpclib._typing import IServable

    from .braiins import BraiinsMiner

USERNAME = "root"
TOKEN_TIMEOUT_S = 3600  # what the firmware announces; expiry by time is not simulated
LOGIN_PATH = "/braiins.bos.v1.AuthenticationService/Login"
PUBLIC_PATHS = frozenset({LOGIN_PATH, "/braiins.bos.ApiVersionService/GetApiVersion"})
_TOKEN_ALPHABET = string.ascii_letters + string.digits


def braiins_services(miner: BraiinsMiner) -> list[IServable]:
    """Every gRPC service of one simulated miner, behind its session check."""
    sessions = Sessions(miner)
    services: list[IServable] = [
        Authentication(miner, sessions),
        ApiVersionService(miner),
        MinerService(miner),
        Performance(miner),
        Cooling(miner),
        Pools(miner),
        Configuration(miner),
        Actions(miner),
    ]
    return [_Guarded(service, miner, sessions) for service in services]


class Sessions:
    """Login tokens of one miner; a token is valid only within the boot that issued it."""

    def __init__(self, miner: BraiinsMiner) -> None:
        self._miner = miner
        self._boot_of_token: dict[str, float] = {}

    def login(self, username: str, password: str) -> str:
        if username != USERNAME or password != self._miner.password:
            raise GRPCError(Status.UNAUTHENTICATED, "Bad credentials")
        boot = self._miner.physics.booted_at
        # Forget tokens of earlier boots so the table cannot grow without bound.
        self._boot_of_token = {t: b for t, b in self._boot_of_token.items() if b == boot}
        token = "".join(self._miner.rng.choice(_TOKEN_ALPHABET) for _ in range(16))
        self._boot_of_token[token] = boot
        return token

    def authorize(self, metadata: Mapping[str, str | bytes] | None) -> None:
        token = metadata.get("authorization") if metadata is not None else None
        if token is None:
            raise GRPCError(Status.UNAUTHENTICATED, "missing authorization token")
        if self._boot_of_token.get(str(token)) != self._miner.physics.booted_at:
            raise GRPCError(Status.UNAUTHENTICATED, "invalid or expired authorization token")


class _Guarded:
    """A service's handlers behind the command log, the session check and the REFUSE fault."""

    def __init__(self, service: IServable, miner: BraiinsMiner, sessions: Sessions) -> None:
        self._service = service
        self._miner = miner
        self._sessions = sessions

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {path: self._guard(path, h) for path, h in self._service.__mapping__().items()}

    def _guard(self, path: str, handler: grpclib.const.Handler) -> grpclib.const.Handler:
        name = path.rsplit("/", 1)[-1]
        serve: Callable[[grpclib.server.Stream[Any, Any]], object] = handler.func

        async def guarded(stream: grpclib.server.Stream[Any, Any]) -> None:
            self._miner.record(name)
            if path not in PUBLIC_PATHS:
                self._sessions.authorize(stream.metadata)
            try:
                await serve(stream)  # type: ignore[misc]
            except CommandRefused as refused:
                raise GRPCError(Status.FAILED_PRECONDITION, str(refused)) from refused

        return handler._replace(func=guarded)


class _Bound:
    """A service that answers for one miner."""

    def __init__(self, miner: BraiinsMiner) -> None:
        self.miner = miner


class Authentication(_Bound, bos.AuthenticationServiceBase):
    def __init__(self, miner: BraiinsMiner, sessions: Sessions) -> None:
        super().__init__(miner)
        self.sessions = sessions

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        # The generated Login handler cannot send initial metadata, where the token must go.
        mapping = dict(super().__mapping__())
        mapping[LOGIN_PATH] = mapping[LOGIN_PATH]._replace(func=self._login)
        return mapping

    async def _login(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        token = self.sessions.login(request.username, request.password)
        await stream.send_initial_metadata(metadata={"authorization": token})
        await stream.send_message(bos.LoginResponse(token=token, timeout_s=TOKEN_TIMEOUT_S))


class ApiVersionService(_Bound, ApiVersionServiceBase):
    async def get_api_version(self, api_version_request: ApiVersionRequest) -> ApiVersion:
        major, minor, patch = self.miner.grpc_api_version
        return ApiVersion(major=major, minor=minor, patch=patch)


def _gigahash(ths: float) -> bos.GigaHashrate:
    return bos.GigaHashrate(gigahash_per_second=ths * 1000.0)


def _solver_stats(ths: float, nominal_ths: float) -> bos.WorkSolverStats:
    # No hashrate history is kept: every averaging window shows the current physical rate.
    rate = _gigahash(ths)
    return bos.WorkSolverStats(
        real_hashrate=bos.RealHashrate(
            last_5_s=rate, last_15_s=rate, last_30_s=rate, last_1_m=rate, last_5_m=rate,
            last_15_m=rate, last_30_m=rate, last_1_h=rate, last_24_h=rate, since_restart=rate,
        ),
        nominal_hashrate=_gigahash(nominal_ths),
    )


class MinerService(_Bound, bos.MinerServiceBase):
    def _status(self) -> bos.MinerStatus:
        return bos.MinerStatus.PAUSED if self.miner.physics.sleeping else bos.MinerStatus.NORMAL

    async def get_miner_status(
        self, request: bos.GetMinerStatusRequest
    ) -> bos.GetMinerStatusResponse:
        return bos.GetMinerStatusResponse(status=self._status())

    async def get_miner_details(
        self, request: bos.GetMinerDetailsRequest
    ) -> bos.GetMinerDetailsResponse:
        miner = self.miner
        uptime = miner.physics.uptime_s()
        return bos.GetMinerDetailsResponse(
            uid=miner.serial,
            miner_identity=bos.MinerIdentity(
                brand=bos.MinerBrand.ANTMINER, name=miner.model_name, miner_model=miner.spec.model
            ),
            bos_version=bos.BosVersion(
                current=miner.bos_version, major=miner.bos_major, bos_plus=True
            ),
            hostname=miner.hostname,
            mac_address=miner.mac.lower(),
            sticker_hashrate=_gigahash(miner.spec.nominal_ths),
            bosminer_uptime_s=uptime,
            system_uptime_s=uptime,
            status=self._status(),
            serial_number=miner.serial,
        )

    async def get_miner_stats(
        self, request: bos.GetMinerStatsRequest
    ) -> bos.GetMinerStatsResponse:
        physics = self.miner.physics
        watts = round(physics.power_watts())
        ths = physics.hashrate_ths()
        return bos.GetMinerStatsResponse(
            miner_stats=_solver_stats(ths, self.miner.spec.nominal_ths),
            power_stats=bos.MinerPowerStats(
                approximated_consumption=bos.Power(watt=watts),
                efficiency=bos.PowerEfficiency(joule_per_terahash=watts / ths if ths else 0.0),
            ),
        )

    async def get_hashboards(
        self, request: bos.GetHashboardsRequest
    ) -> bos.GetHashboardsResponse:
        miner = self.miner
        nominal_per_board = miner.spec.nominal_ths / miner.spec.hashboards
        boards = zip(
            miner.board_hashrates_ths(), miner.board_temps_c(), miner.chip_temps_c(), strict=True
        )
        return bos.GetHashboardsResponse(
            hashboards=[
                bos.Hashboard(
                    id=str(slot + 1),
                    enabled=True,
                    chips_count=miner.chips_per_board,
                    highest_chip_temp=_chip_sensor(slot, chip_c),
                    board_temp=bos.Temperature(degree_c=board_c),
                    stats=_solver_stats(ths, nominal_per_board),
                    serial_number=f"{miner.serial}-HB{slot}",
                )
                for slot, (ths, board_c, chip_c) in enumerate(boards)
            ]
        )


def _chip_sensor(slot: int, celsius: float) -> bos.TemperatureSensor:
    return bos.TemperatureSensor(
        id=slot, location=bos.SensorLocation.CHIP, temperature=bos.Temperature(degree_c=celsius)
    )


def _power_target_mode(watts: float) -> bos.PerformanceMode:
    target = bos.PowerTargetMode(power_target=bos.Power(watt=round(watts)))
    return bos.PerformanceMode(tuner_mode=bos.TunerPerformanceMode(power_target=target))


class Performance(_Bound, bos.PerformanceServiceBase):
    async def get_active_performance_mode(
        self, request: bos.GetPerformanceModeRequest
    ) -> bos.PerformanceMode:
        return _power_target_mode(self.miner.physics.target_watts)

    async def set_power_target(
        self, request: bos.SetPowerTargetRequest
    ) -> bos.SetPowerTargetResponse:
        watts = request.power_target.watt
        self._check_range(watts)
        self.miner.control(lambda: self._apply(watts))
        return bos.SetPowerTargetResponse(power_target=bos.Power(watt=watts))

    async def set_default_power_target(
        self, request: bos.SetDefaultPowerTargetRequest
    ) -> bos.SetPowerTargetResponse:
        watts = round(self.miner.spec.nominal_watts)
        self.miner.control(lambda: self._apply(watts))
        return bos.SetPowerTargetResponse(power_target=bos.Power(watt=watts))

    def _check_range(self, watts: int) -> None:
        spec = self.miner.spec
        if not spec.min_watts <= watts <= spec.max_watts:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"{self.miner.host}: power target {watts} W is outside the {spec.model}'s range "
                f"{spec.min_watts:.0f}-{spec.max_watts:.0f} W",
            )

    def _apply(self, watts: int) -> None:
        # Every save action pyasic sends persists the target, so it survives a reboot too.
        self.miner.physics.set_target(watts)
        self.miner.physics.default_target_watts = watts


class Cooling(_Bound, bos.CoolingServiceBase):
    async def get_cooling_state(
        self, request: bos.GetCoolingStateRequest
    ) -> bos.GetCoolingStateResponse:
        chip_temps = self.miner.chip_temps_c()
        hottest = max(range(len(chip_temps)), key=chip_temps.__getitem__)
        return bos.GetCoolingStateResponse(
            fans=[
                bos.FanState(position=i, rpm=rpm, target_speed_ratio=rpm / self.miner.fan_max_rpm)
                for i, rpm in enumerate(self.miner.fan_rpms())
            ],
            highest_temperature=_chip_sensor(hottest, chip_temps[hottest]),
        )


class Pools(_Bound, bos.PoolServiceBase):
    async def get_pool_groups(
        self, request: bos.GetPoolGroupsRequest
    ) -> bos.GetPoolGroupsResponse:
        pool = bos.Pool(
            uid="1",
            url=self.miner.pool_url,
            user=self.miner.pool_user,
            enabled=True,
            alive=True,
            active=self.miner.physics.mining,
            # Set explicitly so the (zero) stats go on the wire: pyasic indexes ["stats"].
            stats=bos.PoolStats(accepted_shares=0, rejected_shares=0),
        )
        group = bos.PoolGroup(name="Default", quota=bos.Quota(value=1), pools=[pool])
        return bos.GetPoolGroupsResponse(pool_groups=[group])


class Configuration(_Bound, bos.ConfigurationServiceBase):
    async def get_miner_configuration(
        self, request: bos.GetMinerConfigurationRequest
    ) -> bos.GetMinerConfigurationResponse:
        miner = self.miner
        pool = bos.PoolConfiguration(
            uid="1", url=miner.pool_url, user=miner.pool_user, password="x", enabled=True
        )
        group = bos.PoolGroupConfiguration(
            uid="1", name="Default", quota=bos.Quota(value=1), pools=[pool]
        )
        saved_target = bos.Power(watt=round(miner.physics.default_target_watts))
        return bos.GetMinerConfigurationResponse(
            pool_groups=[group],
            tuner=bos.TunerConfiguration(
                enabled=True, tuner_mode=bos.TunerMode.POWER_TARGET, power_target=saved_target
            ),
        )


    async def get_constraints(self, request: bos.GetConstraintsRequest) -> bos.GetConstraintsResponse:
        # The range SetPowerTarget accepts for this model, as the firmware reports it (the same
        # range _check_range enforces), with the factory target as the default.
        if not self.miner.reports_constraints:
            raise GRPCError(Status.UNIMPLEMENTED, "Method not found!")
        spec = self.miner.spec
        power = bos.PowerConstraints(
            default=bos.Power(watt=round(spec.nominal_watts)),
            min=bos.Power(watt=round(spec.min_watts)),
            max=bos.Power(watt=round(spec.max_watts)),
        )
        tuner = bos.TunerConstraints(power_target=power, default_mode=bos.TunerMode.POWER_TARGET)
        return bos.GetConstraintsResponse(tuner_constraints=tuner)


class Actions(_Bound, bos.ActionsServiceBase):
    async def pause_mining(self, request: bos.PauseMiningRequest) -> bos.PauseMiningResponse:
        already_paused = self.miner.physics.sleeping
        self.miner.control(self.miner.physics.sleep)
        return bos.PauseMiningResponse(already_paused=already_paused)

    async def resume_mining(self, request: bos.ResumeMiningRequest) -> bos.ResumeMiningResponse:
        already_mining = not self.miner.physics.sleeping
        self.miner.control(self.miner.physics.wake)
        return bos.ResumeMiningResponse(already_mining=already_mining)

    async def reboot(self, request: bos.RebootRequest) -> bos.RebootResponse:
        # The reply still goes out on this connection; the next connection finds the miner gone.
        self.miner.control(self.miner.physics.reboot)
        return bos.RebootResponse()

    async def get_locate_device_status(
        self, request: bos.GetLocateDeviceStatusRequest
    ) -> bos.LocateDeviceStatusResponse:
        return bos.LocateDeviceStatusResponse(enabled=self.miner.locate_enabled)

    async def set_locate_device_status(
        self, request: bos.SetLocateDeviceStatusRequest
    ) -> bos.LocateDeviceStatusResponse:
        self.miner.control(lambda: self.miner.set_locate(request.enable))
        return bos.LocateDeviceStatusResponse(enabled=self.miner.locate_enabled)
