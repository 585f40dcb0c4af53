"""Whether this process may listen on port 80, which the stock Antminer and VNish simulators need.

pyasic reaches those firmwares' web APIs on port 80 of the miner's address and offers no other
port to identification, so their simulators must bind it: as root, with CAP_NET_BIND_SERVICE, or
where ``net.ipv4.ip_unprivileged_port_start`` allows it. Tests that need it skip elsewhere, and
say why.
"""

from __future__ import annotations

import socket

import pytest

PROBE_ADDRESS = "127.0.139.254"


def can_listen_on_port_80() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((PROBE_ADDRESS, 80))
        except PermissionError:
            return False
    return True


needs_port_80 = pytest.mark.skipif(
    not can_listen_on_port_80(),
    reason="the stock Antminer and VNish simulators listen on port 80 (root or CAP_NET_BIND_SERVICE)",
)
