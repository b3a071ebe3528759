"""The client's address behind a load balancer, and only behind a trusted one.

Behind a balancer every request comes from the balancer's address, so the per-address login
limit would lock out everyone at once, and logs would name the balancer. The balancer says
who its client was in `Forwarded` (RFC 7239, `for=`) or `X-Forwarded-For`. Anyone can send
those headers, so they count only on a request whose TCP peer is a trusted proxy
(SYNCGATE_TRUSTED_PROXIES, addresses or networks; empty by default: trust nobody).

Each proxy appends the address it got the request from, so the list reads client first,
nearest proxy last. Walking it from the right, past every address that is itself a trusted
proxy, the first one that is not is the client: what a client wrote further left is its
own claim and is never believed.

Anything else falls back to the peer, never to an error: a header that does not parse, a hop
that is not an IP address (`unknown`, an obfuscated name), a list of only trusted proxies,
and `Forwarded` and `X-Forwarded-For` naming different clients (one of them came from the
client, through a proxy that writes only the other).

`client_address_middleware` is the one place that applies it: outermost (installed when
the list is not empty), it hands every later middleware and view a request whose `remote` is
the client.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDictProxy

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# More hops than this is no proxy chain anyone runs: the header is treated as malformed.
MAX_HOPS = 32


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    networks: tuple[IPNetwork, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
        return any(address in network for network in self.networks)


def parse_trusted_proxies(raw: str) -> TrustedProxies:
    """Comma-separated addresses and CIDR networks (`10.0.0.5, 10.1.0.0/16, fd00::/8`);
    ValueError names the first entry that is neither."""
    networks = []
    for position, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"entry {position} ({entry[:64]!r}) is not an IP address or a network "
                "such as 10.0.0.0/8"
            ) from None
    return TrustedProxies(tuple(networks))


class Malformed(ValueError):
    """A forwarding header that does not say which address a hop came from."""


def _address(text: str) -> IPAddress:
    """A hop as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, or
    `[2001:db8::1]:4711`."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not re.fullmatch(r":\d{1,5}", text[end + 1 :])):
            raise Malformed(text)
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; an IPv6 address has two colons or more
        text, port = text.split(":")
        if not port.isdigit():
            raise Malformed(text)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise Malformed(text) from None


def _x_forwarded_for(values: Iterable[str]) -> list[IPAddress]:
    hops = [hop.strip() for value in values for hop in value.split(",")]
    if len(hops) > MAX_HOPS:
        raise Malformed("too many hops")
    return [_address(hop) for hop in hops]


# RFC 7239: forwarded-pair = token "=" ( token / quoted-string ), pairs joined by ";",
# elements by ",". The token characters are RFC 7230's tchar.
_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PAIR = re.compile(rf"\s*({_TCHARS})=({_TCHARS}|{_QUOTED})\s*")


def _forwarded_elements(value: str) -> list[dict[str, str]]:
    elements: list[dict[str, str]] = []
    pairs: dict[str, str] = {}
    position = 0
    while True:
        match = _PAIR.match(value, position)
        if match is None:
            raise Malformed(value[:64])
        name, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if name in pairs:
            raise Malformed(f"{name} twice in one element")
        pairs[name] = raw
        position = match.end()
        if position == len(value):
            elements.append(pairs)
            return elements
        separator = value[position]
        position += 1
        if separator == ",":
            elements.append(pairs)
            pairs = {}
        elif separator != ";":
            raise Malformed(value[:64])


def _forwarded(values: Iterable[str]) -> list[IPAddress]:
    elements = [element for value in values for element in _forwarded_elements(value)]
    if len(elements) > MAX_HOPS:
        raise Malformed("too many hops")
    # A hop without for= (or with "unknown", or an obfuscated name) cannot be followed.
    return [_address(element.get("for", "")) for element in elements]


def _client(hops: Sequence[IPAddress], trusted: TrustedProxies) -> IPAddress | None:
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return None  # only proxies: nobody said who the client was


def client_address(
    peer: str | None, headers: CIMultiDictProxy[str], trusted: TrustedProxies
) -> str | None:
    """The client's address for a request from `peer` with these headers (see the module
    docstring); `peer` itself unless it is a trusted proxy that said who its client was."""
    if not trusted or peer is None:
        return peer
    try:
        if ipaddress.ip_address(peer) not in trusted:
            return peer
    except ValueError:  # not an IP peer (a Unix socket): never a trusted proxy
        return peer
    forwarded = headers.getall(hdrs.FORWARDED, [])
    x_forwarded_for = headers.getall(hdrs.X_FORWARDED_FOR, [])
    try:
        candidates = {
            _client(hops, trusted)
            for hops in (
                _forwarded(forwarded) if forwarded else None,
                _x_forwarded_for(x_forwarded_for) if x_forwarded_for else None,
            )
            if hops is not None
        }
    except Malformed:
        return peer
    if len(candidates) != 1:
        return peer  # no header, or two that disagree
    client = candidates.pop()
    return peer if client is None else str(client)


def client_address_middleware(trusted: TrustedProxies) -> Middleware:
    """Sets each request's `remote` to its client's address. Outermost, so that everything
    after it (the request log, the login limits, the metrics) sees the client."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        client = client_address(request.remote, request.headers, trusted)
        if client is None or client == request.remote:
            return await handler(request)
        return await handler(request.clone(remote=client))

    return middleware
