"""A real Mosquitto broker for tests: :class:`~wattshift.simulators.broker.PrivateBroker` (its
own config, a loopback address, a free port), plus what only tests need: TLS files (a CA and a
server certificate for the listener's address, made with ``cryptography``) and the site's ACL.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wattshift.simulators.broker import PrivateBroker as Broker
from wattshift.simulators.broker import TlsFiles, free_port

__all__ = ["Broker", "TlsFiles", "free_port", "make_tls", "site_acl"]


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
