"""The VNish simulator on the wire: unlock and tokens, presets, mining stop/resume, the page.

Plain httpx here (pyasic's use of the same API is in tests/drivers/). Addresses 127.0.145.x.
"""

from __future__ import annotations

import httpx
import pytest
from privileged_ports import needs_port_80

from wattshift.model.specs import SPECS
from wattshift.simulators.miner import Fault
from wattshift.simulators.vnish import VNishMiner, build_presets

S21 = SPECS["Antminer S21"]


pytestmark = needs_port_80

async def unlock(
    client: httpx.AsyncClient, host: str, password: str = "admin"
) -> httpx.Response:
    return await client.post(f"http://{host}/api/v1/unlock", json={"pw": password})


async def test_the_page_says_anthillos_and_the_api_wants_a_token() -> None:
    async with (
        VNishMiner("127.0.145.1", S21, password="pw") as sim,
        httpx.AsyncClient(timeout=2.0) as client,
    ):
        assert (
            "AnthillOS" in (await client.get(f"http://{sim.host}/")).text
        )  # what pyasic looks for
        assert (
            await client.get(f"http://{sim.host}/api/v1/summary")
        ).status_code == 401
        assert (await unlock(client, sim.host, "admin")).status_code == 401
        token = (await unlock(client, sim.host, "pw")).json()["token"]
        summary = (
            await client.get(
                f"http://{sim.host}/api/v1/summary", headers={"Authorization": token}
            )
        ).json()
        assert summary["miner"]["power_usage"] == round(sim.physics.power_watts())
        assert summary["miner"]["miner_type"] == "Antminer S21 (Vnish 1.2.6)"


def test_presets_span_the_model_and_only_those_up_to_nominal_are_tuned() -> None:
    presets = build_presets(S21)
    assert presets[0].watts >= S21.min_watts and presets[-1].watts <= S21.max_watts
    assert 3500 in [p.watts for p in presets]
    assert all(p.tuned == (p.watts <= S21.nominal_watts) for p in presets)
    assert [p.watts for p in presets] == sorted(p.watts for p in presets)


@pytest.mark.parametrize(
    ("preset", "applied"), [("3000", 3000), ("3750", 3500), ("1234", 3500)]
)
async def test_only_a_tuned_preset_is_applied_and_every_post_answers_alike(
    preset: str, applied: int
) -> None:
    async with (
        VNishMiner("127.0.145.2", S21) as sim,
        httpx.AsyncClient(timeout=2.0) as client,
    ):
        token = (await unlock(client, sim.host)).json()["token"]
        reply = await client.post(
            f"http://{sim.host}/api/v1/settings",
            headers={"Authorization": token},
            json={"miner": {"overclock": {"preset": preset}}},
        )
        assert reply.json() == {"restart_required": False, "reboot_required": False}
        assert sim.physics.target_watts == applied
        settings = (
            await client.get(
                f"http://{sim.host}/api/v1/settings", headers={"Authorization": token}
            )
        ).json()
        assert settings["miner"]["overclock"]["preset"] == str(applied)


async def test_stop_then_resume_with_a_boot() -> None:
    async with (
        VNishMiner("127.0.145.3", S21, wake_boot_s=30.0) as sim,
        httpx.AsyncClient(timeout=2.0) as client,
    ):
        headers = {"Authorization": (await unlock(client, sim.host)).json()["token"]}
        await client.post(f"http://{sim.host}/api/v1/mining/stop", headers=headers)
        summary = (
            await client.get(f"http://{sim.host}/api/v1/summary", headers=headers)
        ).json()
        assert summary["miner"]["miner_status"]["miner_state"] == "stopped"
        await client.post(f"http://{sim.host}/api/v1/mining/resume", headers=headers)
        summary = (
            await client.get(f"http://{sim.host}/api/v1/summary", headers=headers)
        ).json()
        assert (
            summary["miner"]["miner_status"]["miner_state"] == "starting"
        )  # hashboards booting
        assert summary["miner"]["instant_hashrate"] == 0


async def test_a_refused_command_is_an_http_error_and_changes_nothing() -> None:
    async with (
        VNishMiner("127.0.145.4", S21) as sim,
        httpx.AsyncClient(timeout=2.0) as client,
    ):
        headers = {"Authorization": (await unlock(client, sim.host)).json()["token"]}
        sim.set_fault(Fault.REFUSE)
        reply = await client.post(
            f"http://{sim.host}/api/v1/mining/stop", headers=headers
        )
        assert reply.status_code == 400 and not sim.physics.sleeping
        sim.set_fault(Fault.IGNORE)
        reply = await client.post(
            f"http://{sim.host}/api/v1/mining/stop", headers=headers
        )
        assert reply.status_code == 200 and not sim.physics.sleeping


async def test_a_reboot_forgets_the_tokens() -> None:
    async with (
        VNishMiner("127.0.145.5", S21, reboot_s=0.0) as sim,
        httpx.AsyncClient(timeout=2.0) as client,
    ):
        token = (await unlock(client, sim.host)).json()["token"]
        reply = await client.post(
            f"http://{sim.host}/api/v1/system/reboot",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert reply.status_code == 200
        assert (
            await client.get(
                f"http://{sim.host}/api/v1/info", headers={"Authorization": token}
            )
        ).status_code == 401
