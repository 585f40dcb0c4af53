"""A real Mosquitto broker for tests: its own config, a loopback address and a free port.

``Broker`` writes a config into a temp folder (persistence off, log to a file there), starts
``mosquitto -c`` and waits until the port accepts connections. Variants: anonymous, with
users (password file made by ``mosquitto_passwd -b``) and an ACL, and TLS (a CA and a server
certificate for the listener's address, made here with ``cryptography``). ``stop`` kills the
process and waits for it; ``start`` again brings it back on the same port.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise RuntimeError(f"{name} is not installed (make test installs Debian's mosquitto)")
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


def make_tls(folder: Path, host: str) -> TlsFiles:
    """A CA and a server certificate for ``host`` (an IP address SAN), valid for a day."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("wattshift test CA")).issuer_name(name("wattshift test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(name(host)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return files


@dataclass
class Broker:
    folder: Path
    host: str
    users: dict[str, str] = field(default_factory=dict)  # name -> password; empty: anonymous
    acl: str | None = None  # mosquitto acl_file text
    tls: bool = False
    port: int = 0
    tls_files: TlsFiles | None = None
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        if self.tls:
            self.tls_files = make_tls(self.folder / "tls", self.host)
        self.config = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "persistence false",
            f"log_dest file {self.log}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            # Run as the test's user, not mosquitto's (which could not read this folder).
            "user root",
            f"allow_anonymous {'false' if self.users else 'true'}",
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
        assert self.process is None, "already running"
        self.process = subprocess.Popen([_binary("mosquitto"), "-c", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"mosquitto exited: {err}\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port}\n{self.log_text()}")

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

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def site_acl(prefix: str, *, daemon: str, operator: str, viewer: str | None = None,
             meter_topic: str | None = None) -> str:
    """Only ``operator`` may publish commands; the daemon publishes its topics and reads
    commands; a viewer reads everything and writes nothing."""
    lines = [
        f"user {daemon}",
        f"topic read {prefix}/cmd",
        *(f"topic write {prefix}/{t}" for t in ("availability", "state/#", "decisions", "events", "reply/#")),
        *([f"topic read {meter_topic}"] if meter_topic else []),
        "",
        f"user {operator}",
        f"topic readwrite {prefix}/#",
        *([f"topic write {meter_topic}"] if meter_topic else []),
    ]
    if viewer:
        lines += ["", f"user {viewer}", f"topic read {prefix}/#"]
    return "\n".join(lines) + "\n"
