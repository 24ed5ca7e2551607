"""Per-client rate limiting: a token bucket per client address.

Each client may send `burst` requests at once and `rate` a second after that; a refused request
learns when the next token comes (Retry-After, in whole seconds, rounded up). The buckets are
an LRU of at most `max_clients` addresses, so a flood of distinct addresses costs bounded memory
(an evicted client starts again with a full bucket, which errs on the side of serving).

The client is the connection's peer address. Behind proxies (an ingress) the peer is the proxy,
shared by every user, so the proxies may be named (trusted proxies, as CIDRs): from one of them
the client is read from X-Forwarded-For (client_address). The header is whatever the client
wants it to be except for what the trusted proxies appended, so it is read from the right, and
from any other peer it is ignored.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> Address | None:
    """An address of X-Forwarded-For or of the peer: IPv4, IPv6, either with a port as some
    proxies write it ("192.0.2.1:443", "[2001:db8::1]:443"); IPv4-mapped IPv6 as IPv4."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[Network]
) -> str:
    """Whose bucket a request takes: the peer, or, when the peer is a trusted proxy, the
    right-most X-Forwarded-For address that is not itself a trusted proxy.

    Each proxy appends the address it was connected from, so read from the right, every entry
    up to the first untrusted one was written by a trusted proxy; what lies to its left came
    from the client and is ignored. When every entry is a trusted proxy the left-most is the
    client. An entry that is not an address ends the walk at the last trusted address before it
    (the proxy that passed it on), never at something a client wrote. `forwarded_for` holds the
    values of every X-Forwarded-For header, in order (they read as one list).
    """
    address = _address(peer) if peer else None
    if address is None:
        return peer or "unknown"

    def is_trusted(candidate: Address) -> bool:
        return any(candidate in network for network in trusted)

    if not is_trusted(address):
        return str(address)
    for entry in reversed(",".join(forwarded_for).split(",")):
        hop = _address(entry)
        if hop is None:
            break
        address = hop
        if not is_trusted(hop):
            break
    return str(address)


class TokenBuckets:
    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """Take a token for `client`: 0 when allowed, else the seconds until one is there."""
        now = self._clock()
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        """The Retry-After header's value: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait)))

    def __len__(self) -> int:
        return len(self._buckets)
