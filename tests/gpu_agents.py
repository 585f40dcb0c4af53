"""GPU hosts for the agent tests: ``wattshift agent`` in a child process over the simulated NVML
library (tests/integration/agent_child.py), its file written here, and the controller's link."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import yaml
from mosquitto import Broker

from wattshift.drivers.agent_link import AgentLink
from wattshift.simulators.nvml_lib import gpu_uuid

TESTS = Path(__file__).resolve().parent
CHILD = TESTS / "integration" / "agent_child.py"
PREFIX = "wattshift/agents"


def agent_file(folder: Path, broker: Broker, host: str, *, login: tuple[str, str] | None = None,
               **options: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    mqtt: dict[str, Any] = {"host": broker.host, "port": broker.port, "keepalive": 5,
                            "reconnect_min_seconds": 0.1, "reconnect_max_seconds": 0.5}
    data: dict[str, Any] = {"host": host, "mqtt": mqtt, "read_interval_seconds": 0.5,
                            "publish_min_interval_seconds": 0.1, **options}
    if broker.tls_files is not None:
        mqtt["tls"] = {"ca_file": str(broker.tls_files.ca_file)}
    if login is not None:
        secrets = folder / "agent-secrets.yaml"
        secrets.write_text(yaml.safe_dump({"broker": {"username": login[0], "password": login[1]}}))
        secrets.chmod(0o600)
        mqtt["credentials"] = "broker"
        data["secrets_file"] = str(secrets)
    path = folder / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class AgentProcess:
    """One GPU host: its agent's process and the UUIDs of its simulated cards."""

    host: str
    config: Path
    cards: int = 2
    load: float = 0.9
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.config.with_suffix(".log")

    @property
    def uuids(self) -> list[str]:
        return [gpu_uuid(self.host, i) for i in range(self.cards)]

    def start(self) -> AgentProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(CHILD), str(self.config), self.host, str(self.cards), str(self.load)],
                stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(TESTS)},
            )
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot die of SIGKILL's cleanup
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)
        self.process = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def link_for(broker: Broker, *, identifier: str = "controller-agents", username: str | None = None,
             password: str | None = None, **options: Any) -> AgentLink:
    def client() -> aiomqtt.Client:
        return aiomqtt.Client(broker.host, broker.port, identifier=identifier, username=username,
                              password=password, protocol=aiomqtt.ProtocolVersion.V5, keepalive=5)

    defaults: dict[str, Any] = {"stale_after_seconds": 3.0, "heartbeat_seconds": 0.5,
                                "reconnect_min_seconds": 0.1, "reconnect_max_seconds": 0.5}
    return AgentLink(client, prefix=PREFIX, **{**defaults, **options})


def agents_acl(controller: str, hosts: list[str], prefix: str = PREFIX) -> str:
    """docs/mqtt.md's ACL for the agents: the controller reads every agent's readings, replies and
    availability and writes their command topics; each agent writes only its own three topics and
    reads only its own command topic."""
    lines = [f"user {controller}", *(f"topic read {prefix}/+/{t}" for t in ("readings", "reply", "availability")),
             f"topic write {prefix}/+/cmd", ""]
    for host in hosts:
        lines += [f"user {host}", *(f"topic write {prefix}/{host}/{t}" for t in ("readings", "reply", "availability")),
                  f"topic read {prefix}/{host}/cmd", ""]
    return "\n".join(lines)


# A GPU host's own jobs, as an operator's docker or systemd wrapper would keep them: one file per
# job, "<state> <node> <name>" (the command runner's status format; tests/drivers/test_command_runner.py).
HOST_SCHEDULER = r"""#!/bin/sh
set -eu
move() {
    f="$FAKE_DIR/job.$WATTSHIFT_JOB_ID"
    [ -f "$f" ] || { echo "no such job $WATTSHIFT_JOB_ID" >&2; exit 2; }
    read -r state rest < "$f"
    case " $1 " in *" $state "*) ;; *) echo "job $WATTSHIFT_JOB_ID is $state, not $1" >&2; exit 3;; esac
    echo "$2 $rest" > "$f"
}
case "$1" in
submit) echo "no submit here" >&2; exit 1;;
start) move pending running;;
suspend) move running suspended;;
resume) move suspended running;;
requeue) move "running suspended" pending;;
stop) move "pending running suspended" cancelled;;
status) for f in "$FAKE_DIR"/job.*; do [ -f "$f" ] && echo "${f##*.} $(cat "$f")"; done; true;;
esac
"""


def host_jobs(folder: Path, jobs: dict[str, str]) -> dict[str, Any]:
    """The agent file's ``jobs:`` block over HOST_SCHEDULER, with ``jobs`` (id -> "<state> - <name>")."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "sched.sh"
    script.write_text(HOST_SCHEDULER)
    script.chmod(0o755)
    for job_id, line in jobs.items():
        (folder / f"job.{job_id}").write_text(line + "\n")
    actions = ("submit", "start", "suspend", "resume", "requeue", "stop", "status")
    return {"kind": "command", "timeout_seconds": 10,
            "commands": {a: f"FAKE_DIR={folder} {script} {a}" for a in actions}}
