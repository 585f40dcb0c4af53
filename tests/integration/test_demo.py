"""The README's demo, small and short: it must finish with a summary and stay under budget."""

import asyncio
import io
import json
import re
import signal
import socket
import subprocess
import sys

import aiomqtt
import pytest

from wattshift.daemon.cli.demo import run_demo
from wattshift.daemon.demo.scenario import Scenario


async def test_the_demo_runs_a_cut_and_ends_with_a_truthful_summary(tmp_path):
    out = io.StringIO()
    scenario = Scenario(miners=8, duration_s=8, tick_s=1, notice_s=3, first_address="127.0.16.1")
    code = await run_demo(scenario, tmp_path, "127.0.0.1:19469", out)
    text = out.getvalue()
    assert code == 0, text
    assert "summary after" in text and "verdict: never over any limit" in text
    assert "commands 0," not in text  # the cold site was woken, the cut was shed
    assert "failures 0" in text


async def test_the_demo_on_mqtt_takes_the_command_it_prints_and_learns_the_unmetered_load(tmp_path):
    """`wattshift demo` with its private Mosquitto: the command line it prints is one an operator
    can send, the site meter shows load no device reports, and the daemon learns it."""
    out = io.StringIO()
    scenario = Scenario(miners=8, duration_s=20, tick_s=1, notice_s=3, first_address="127.0.16.20")
    demo = asyncio.create_task(run_demo(scenario, tmp_path, "127.0.16.19:19470", out, mqtt="on",
                                        mqtt_host="127.0.16.18"))
    async with asyncio.timeout(20):
        while (printed := re.search(r"mosquitto_pub -h (\S+) -p (\d+) -t (\S+) -m '(.+)'", out.getvalue())) is None:
            await asyncio.sleep(0.1)
    host, port, topic, command = printed.groups()
    request = json.loads(command)
    async with aiomqtt.Client(host, int(port)) as client:
        await client.subscribe(f"{topic.removesuffix('/cmd')}/reply/{request['id']}")
        await client.publish(topic, command.encode())
        async with asyncio.timeout(20):
            accepted = json.loads((await anext(client.messages)).payload)
            assert accepted["status"] == "accepted", accepted
            # The cut takes effect at once: the site gets two ticks and 10 s to meet it.
            reached = json.loads((await anext(client.messages)).payload)
    assert reached["status"] == "reached", reached
    assert reached["data"]["worst_case_watts"] <= request["limit_kw"] * 1000
    assert reached["data"]["seconds"] < 2 * scenario.tick_s + 10
    code = await demo
    text = out.getvalue()
    assert code == 0, text
    assert "verdict: never over any limit" in text
    assert "commands 1 accepted and 0 rejected" in text
    learned, true = map(float, re.search(r"overhead learned ([\d.]+) kW \(true ([\d.]+) kW\)", text).groups())
    assert true > 0 and 0.5 * true <= learned <= 1.5 * true, text


def test_sigterm_ends_the_demo_with_its_summary_and_takes_its_broker_down(tmp_path):
    demo = subprocess.Popen(
        [sys.executable, "-m", "wattshift.daemon.cli", "demo", "--miners", "8", "--tick", "1", "--mqtt", "on",
         "--metrics-listen", "127.0.16.39:19471", "--first-address", "127.0.16.40", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines = []
        for line in demo.stdout:  # until the loop runs
            lines.append(line)
            if line.startswith("identified miners"):
                break
        broker = re.search(r"private Mosquitto on ([\d.]+):(\d+)", "".join(lines))
        assert broker, "".join(lines)
        demo.send_signal(signal.SIGTERM)
        rest, _ = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, rest
    assert "verdict: never over any limit" in rest
    with pytest.raises(OSError):  # the broker went with the demo
        socket.create_connection((broker.group(1), int(broker.group(2))), timeout=1).close()
