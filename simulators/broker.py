"""A private Mosquitto broker on a loopback address, for the demo and the tests.

It is the real broker (Debian's ``mosquitto``), not a simulation: :class:`PrivateBroker` writes
a config into a folder of its own (persistence off, its log in that folder), starts
``mosquitto -c`` and waits until the port accepts connections. Optional users (a password
file made by ``mosquitto_passwd -b``), an ACL, and a TLS listener. ``stop`` kills the process,
as a crash would, and ``start`` brings it back on the same port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "install Debian's mosquitto (apt-get install mosquitto mosquitto-clients)"


class BrokerUnavailable(RuntimeError):
    """Mosquitto is not installed, or would not start; the message says what to do."""


def find_binary(name: str) -> str | None:
    """``name`` on PATH, or in the sbin folders Debian puts mosquitto in."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _binary(name: str) -> str:
    found = find_binary(name)
    if found is None:
        raise BrokerUnavailable(f"{name} is not installed: {INSTALL_HINT}")
    return found


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass
class PrivateBroker:
    folder: Path
    host: str = "127.0.0.1"
    users: dict[str, str] = field(default_factory=dict)  # name -> password; empty: anonymous
    acl: str | None = None  # mosquitto acl_file text
    tls_files: TlsFiles | None = None
    anonymous: bool | None = None  # also let clients in without a password (None: only without users)
    port: int = 0  # 0: a free one
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        self.config = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        self._write_config()

    def _write_config(self) -> None:
        anonymous = self.anonymous if self.anonymous is not None else not self.users
        lines = [
            f"listener {self.port} {self.host}",
            "persistence false",
            f"log_dest file {self.log}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            # Run as whoever starts it (mosquitto's own user could not read this folder).
            "user root",
            f"allow_anonymous {'true' if anonymous else 'false'}",
        ]
        if self.users:
            passwords = self.folder / "passwords"
            passwords.write_text("")
            for user, password in self.users.items():
                subprocess.run([_binary("mosquitto_passwd"), "-b", str(passwords), user, password], check=True,
                               capture_output=True)
            lines.append(f"password_file {passwords}")
        if self.acl is not None:
            acl = self.folder / "acl"
            acl.write_text(self.acl)
            lines.append(f"acl_file {acl}")
        if self.tls_files is not None:
            lines += [f"cafile {self.tls_files.ca_file}", f"certfile {self.tls_files.cert_file}",
                      f"keyfile {self.tls_files.key_file}", "require_certificate false"]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            raise RuntimeError("the broker is already running")
        self.process = subprocess.Popen([_binary("mosquitto"), "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                self.process = None
                raise BrokerUnavailable(f"mosquitto exited: {err}\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerUnavailable(f"mosquitto did not listen on {self.host}:{self.port}\n{self.log_text()}")

    def stop(self) -> None:
        """Kill it (no clean shutdown: the broker just vanishes, as in a crash) and wait."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=10)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
