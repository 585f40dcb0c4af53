"""Address ranges in the site file skip the .0 and .255 of every /24 they cross (issue 13):
a phantom miner there would be counted at its maximum. What the operator wrote stays."""

from __future__ import annotations

import random

import pytest

from wattshift.daemon.config.site import MinerGroup, address_count, expand_addresses


def test_a_range_across_two_24s_skips_their_network_and_broadcast_addresses() -> None:
    assert list(expand_addresses("10.0.0.253-10.0.1.2")) == ["10.0.0.253", "10.0.0.254", "10.0.1.1", "10.0.1.2"]


def test_a_3000_miner_range_has_no_phantom_miners() -> None:
    hosts = list(expand_addresses("10.20.0.1-10.20.11.200"))
    assert not [h for h in hosts if h.endswith((".0", ".255"))]
    assert len(hosts) == 11 * 254 + 200
    assert address_count("10.20.0.1-10.20.11.200") == len(hosts)


@pytest.mark.parametrize(("entry", "kept"), [
    ("10.0.1.0-10.0.1.3", "10.0.1.0"),  # starts on a network address: written, so kept
    ("10.0.0.250-10.0.0.255", "10.0.0.255"),  # ends on a broadcast address
    ("10.0.0.255", "10.0.0.255"),  # a single address
])
def test_what_the_operator_wrote_is_kept(entry: str, kept: str) -> None:
    assert kept in list(expand_addresses(entry))


def test_a_network_keeps_its_hosts_between_and_ipv6_ranges_are_left_whole() -> None:
    assert len(list(expand_addresses("10.0.0.0/23"))) == 510  # 10.0.0.255 and 10.0.1.0 are hosts of a /23
    assert list(expand_addresses("fd00::ff-fd00::101")) == ["fd00::ff", "fd00::100", "fd00::101"]


@pytest.mark.parametrize("seed", range(50))
def test_the_count_matches_the_listing_without_listing(seed: int) -> None:
    rng = random.Random(seed)
    start = rng.randrange(0, 2**24)
    first = f"10.{start >> 16}.{start >> 8 & 255}.{start & 255}"
    end = min(start + rng.choice([1, 2, 3, 255, 256, 257, 700, 3000]), 2**24 - 1)
    entry = f"{first}-10.{end >> 16}.{end >> 8 & 255}.{end & 255}"
    assert address_count(entry) == len(list(expand_addresses(entry)))
    assert MinerGroup(addresses=[entry]).count() == address_count(entry)
