"""Whose rate-limit bucket a dashboard request takes: the peer, or behind a trusted proxy the
right-most X-Forwarded-For address that is not a trusted proxy; never what a client wrote."""

from __future__ import annotations

import ipaddress

import pytest

from eval_runner.dashboard.ratelimit import client_address

INGRESS = [ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("fd00:10::/64")]
LB = [*INGRESS, ipaddress.ip_network("192.168.7.0/24")]  # a load balancer before the ingress


@pytest.mark.parametrize(
    ("peer", "headers", "trusted", "client"),
    [
        # No proxy configured: the header means nothing, whoever sends it.
        ("10.244.1.5", ["203.0.113.7"], [], "10.244.1.5"),
        # A peer that is not a trusted proxy writes what it likes: ignored.
        ("198.51.100.2", ["203.0.113.7"], INGRESS, "198.51.100.2"),
        ("198.51.100.2", ["10.244.1.5"], INGRESS, "198.51.100.2"),
        # Through the ingress: the address it appended.
        ("10.244.1.5", ["203.0.113.7"], INGRESS, "203.0.113.7"),
        # A client that sends its own header to the ingress: its entries are on the left.
        ("10.244.1.5", ["1.2.3.4, 203.0.113.7"], INGRESS, "203.0.113.7"),
        ("10.244.1.5", ["10.244.9.9, 203.0.113.7"], INGRESS, "203.0.113.7"),
        # Two headers read as one list, in order.
        ("10.244.1.5", ["1.2.3.4", "203.0.113.7"], INGRESS, "203.0.113.7"),
        # A chain of trusted proxies (load balancer, then ingress): past all of them.
        ("10.244.1.5", ["1.2.3.4, 203.0.113.7, 192.168.7.3"], LB, "203.0.113.7"),
        # Without the load balancer trusted, its address is the client (one shared bucket,
        # never a forged one).
        ("10.244.1.5", ["1.2.3.4, 203.0.113.7, 192.168.7.3"], INGRESS, "192.168.7.3"),
        # Only proxies: the left-most (a request from inside the proxy network).
        ("10.244.1.5", ["10.244.3.3, 10.244.2.2"], INGRESS, "10.244.3.3"),
        # No header, an empty one, garbage where the proxy's entry should be: the last
        # trusted address, not anything further left.
        ("10.244.1.5", [], INGRESS, "10.244.1.5"),
        ("10.244.1.5", [""], INGRESS, "10.244.1.5"),
        ("10.244.1.5", ["203.0.113.7, not-an-address"], INGRESS, "10.244.1.5"),
        ("10.244.1.5", ["203.0.113.7,"], INGRESS, "10.244.1.5"),
        ("10.244.1.5", ["1.2.3.4, <script>, 10.244.2.2"], INGRESS, "10.244.2.2"),
        # Ports as some proxies write them; IPv6 in one spelling, so no spelling escapes its
        # bucket; an IPv4-mapped peer (a dual-stack socket) is its IPv4 address.
        ("10.244.1.5", ["203.0.113.7:51234"], INGRESS, "203.0.113.7"),
        ("10.244.1.5", ["[2001:DB8:0::7]:443"], INGRESS, "2001:db8::7"),
        ("fd00:10::5", ["2001:0db8::7"], INGRESS, "2001:db8::7"),
        ("::ffff:10.244.1.5", ["203.0.113.7"], INGRESS, "203.0.113.7"),
        ("::ffff:198.51.100.2", ["203.0.113.7"], INGRESS, "198.51.100.2"),
        # No peer address at all (a Unix socket).
        (None, ["203.0.113.7"], INGRESS, "unknown"),
    ],
)
def test_the_client_is_the_right_most_address_a_trusted_proxy_appended(
    peer: str | None, headers: list[str], trusted: list, client: str
) -> None:
    assert client_address(peer, headers, trusted) == client
