"""An aiomqtt client from the site's broker settings: address, TLS, login, last will.

Shared by the daemon's bridge, its link to the GPU hosts' agents and ``wattshift agent`` itself,
so all three speak to the broker alike (MQTT 5, TLS with the CA given, a bounded timeout).
"""

from __future__ import annotations

import asyncio
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


async def admits_anonymous(host: str, port: int, *, identifier: str, tls: TlsConfig | None) -> bool:
    """Whether a client with no login and no client certificate gets into the broker: the same
    address and CA, nothing that proves who it is. Refused, or not reached at all: False."""
    anonymous_tls = None if tls is None else TlsConfig(ca_file=tls.ca_file)
    try:
        async with asyncio.timeout(CALL_TIMEOUT_SECONDS):
            async with make_client(host, port, identifier=f"{identifier}-anonymity-check", tls=anonymous_tls):
                return True
    except (aiomqtt.MqttError, TimeoutError, OSError):
        return False


def proves_identity(login: Login | None, tls: TlsConfig | None) -> bool:
    """Whether this client logs in (password or certificate): only then does an open broker
    mean that others get in more easily than we do."""
    return login is not None or (tls is not None and tls.cert_file is not None)
