"""An aiomqtt client from the site's broker settings: address, TLS, login, last will.

Shared by the link to the GPU hosts' agents and by ``wattshift agent`` itself, so both speak
to the broker as the daemon's bridge does (MQTT 5, TLS with the CA given, a bounded timeout).
"""

from __future__ import annotations

import logging
import ssl

import aiomqtt

from wattshift.daemon.config.mqtt import Login, TlsConfig

CALL_TIMEOUT_SECONDS = 10.0


def make_client(
    host: str,
    port: int,
    *,
    identifier: str,
    tls: TlsConfig | None = None,
    login: Login | None = None,
    will: aiomqtt.Will | None = None,
    keepalive: int = 30,
    logger: logging.Logger | None = None,
) -> aiomqtt.Client:
    tls_params = None
    if tls is not None:
        tls_params = aiomqtt.TLSParameters(
            ca_certs=str(tls.ca_file) if tls.ca_file else None,
            certfile=str(tls.cert_file) if tls.cert_file else None,
            keyfile=str(tls.key_file) if tls.key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    return aiomqtt.Client(
        host,
        port,
        username=login.username if login else None,
        password=login.password.get_secret_value() if login else None,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        will=will,
        keepalive=keepalive,
        tls_params=tls_params,
        timeout=CALL_TIMEOUT_SECONDS,
        logger=logger,
    )
