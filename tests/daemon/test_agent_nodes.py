"""GPU nodes driven through their host's agent in the site file, and the agents' health metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from wattshift.daemon.config.site import load_site
from wattshift.daemon.config.yamlfile import FileInvalid
from wattshift.daemon.mqtt.metrics import AgentCollector
from wattshift.daemon.runtime.app import make_agent_link, make_gpu_fleet
from wattshift.drivers.agent_gpu import AgentGpus, AgentJobs
from wattshift.drivers.agent_link import AgentLink
from wattshift.drivers.nvml_gpu import NvmlGpus

SITE = """\
name: north
budget_kw: 100
gpu_nodes:
  - {name: gpu-node-1, driver: agent, host: gpu-01, gpu_count: 8}
  - {name: gpu-02, driver: agent}
  - {name: local, driver: nvml}
"""
MQTT = "mqtt:\n  host: 10.0.0.5\n  agents: {prefix: site/agents, stale_after_seconds: 20}\n"


def load(tmp_path: Path, text: str):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_site(path, environ={})


def test_agent_nodes_are_driven_through_one_link_by_host_name(tmp_path):
    site = load(tmp_path, SITE + MQTT)
    link = make_agent_link(site)
    assert isinstance(link, AgentLink) and link.prefix == "site/agents" and link.stale_after == 20
    fleet = make_gpu_fleet(site, link=link)
    assert fleet is not None
    drivers = fleet._drivers
    assert isinstance(drivers["gpu-node-1"], AgentGpus) and drivers["gpu-node-1"].host == "gpu-01"
    assert isinstance(drivers["gpu-02"], AgentGpus) and drivers["gpu-02"].host == "gpu-02"  # host: its name
    assert isinstance(drivers["local"], NvmlGpus)
    assert sorted(link.hosts) == ["gpu-01", "gpu-02"]
    assert isinstance(fleet.runner, AgentJobs)  # no scheduler of the site's own: the hosts' agents move jobs


@pytest.mark.parametrize(("text", "where", "why"), [
    (SITE, "gpu_nodes[0].driver", "needs the mqtt block"),
    ("name: n\nbudget_kw: 10\ngpu_nodes: [{name: a, driver: nvml, host: gpu-01}]\n" + MQTT, "gpu_nodes[0]",
     "for driver: agent"),
    ("name: n\nbudget_kw: 10\ngpu_nodes: [{name: a, driver: agent, host: h1}, {name: b, driver: agent, host: h1}]\n"
     + MQTT, "gpu_nodes[1].host", "already drives node 'a'"),
    ("name: n\nbudget_kw: 10\ngpu_nodes: [{name: a, driver: agent, host: 'H 1'}]\n" + MQTT, "gpu_nodes[0].host", ""),
    ("name: n\nbudget_kw: 10\ngpu_nodes: [{name: a, driver: dcgm}]\n" + MQTT, "gpu_nodes[0].driver", ""),
    (SITE + MQTT.replace("site/agents", "site/+/agents"), "mqtt.agents.prefix", "wildcards"),
])
def test_a_wrong_agent_node_is_refused_naming_the_field(tmp_path, text, where, why):
    with pytest.raises(FileInvalid) as err:
        load(tmp_path, text)
    assert any(where in str(p) and why in str(p) for p in err.value.problems), err.value.problems


def test_agent_health_is_exported_per_node_with_bounded_labels(tmp_path):
    site = load(tmp_path, SITE + MQTT)
    link = make_agent_link(site)
    assert link is not None
    make_gpu_fleet(site, link=link)
    wall = link.wall()
    cards = [{"uuid": "GPU-1", "index": 0, "watts": 300.0, "limit_watts": 700.0}]
    link.deliver("site/agents/gpu-01/readings",
                 json.dumps({"v": 1, "host": "gpu-01", "at": wall - 2, "seq": 1, "gpus": cards}).encode())
    link.deliver("site/agents/gpu-02/readings",
                 json.dumps({"v": 1, "host": "gpu-01", "at": wall, "seq": 1, "gpus": []}).encode())  # impostor
    link.deliver("site/agents/gpu-99/readings", b"{}")
    registry = CollectorRegistry()
    registry.register(AgentCollector(link))
    text = generate_latest(registry).decode()
    one = 'host="gpu-01",node="gpu-node-1"'
    assert f"wattshift_agent_up{{{one}}} 1.0" in text
    assert 'wattshift_agent_up{host="gpu-02",node="gpu-02"} 0.0' in text
    assert 'wattshift_agent_messages_refused_total{host="gpu-02",node="gpu-02",reason="host"} 1.0' in text
    assert "wattshift_agent_unknown_host_messages_total 1.0" in text
    offset = next(line for line in text.splitlines() if line.startswith(f"wattshift_agent_clock_offset_seconds{{{one}"))
    assert -3 < float(offset.rpartition(" ")[2]) < -1
    assert f"wattshift_agent_readings_total{{{one}}} 1.0" in text
    assert "gpu-99" not in text  # no label from what an unknown sender chose


@pytest.mark.parametrize(("mqtt", "checks"), [
    ("mqtt:\n  host: 10.0.0.5\n  credentials: broker\n", True),  # it logs in: is the broker open to others?
    ("mqtt:\n  host: 10.0.0.5\n  credentials: broker\n  agents: {allow_anonymous_broker: true}\n", False),
    ("mqtt:\n  host: 10.0.0.5\n", False),  # anonymous itself: nothing to compare (docs/mqtt.md)
])
def test_the_link_checks_for_an_open_broker_where_it_logs_in_unless_told_not_to(tmp_path, mqtt, checks):
    (tmp_path / "secrets.yaml").write_text("broker: {username: wattshift, password: pw}\n")
    link = make_agent_link(load(tmp_path, SITE + mqtt + "secrets_file: secrets.yaml\n"))
    assert link is not None and (link._anonymity_check is not None) is checks
