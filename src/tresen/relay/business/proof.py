"""The domain proof: the business serves a token the relay issued, and the operator's check
fetches it over HTTPS (``/.well-known/tresen-verification.txt``) or reads a DNS TXT record
(``_tresen-verification.DOMAIN`` = ``tresen-verification=TOKEN``).

Only the operator triggers a check, with a timeout, reading at most a few kilobytes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import dns.asyncresolver
import dns.exception
import dns.resolver
import httpx

from tresen.config import Settings

WELL_KNOWN_PATH = "/.well-known/tresen-verification.txt"
DNS_PREFIX = "_tresen-verification."
DNS_VALUE_PREFIX = "tresen-verification="
MAX_PROOF_BYTES = 4096


def proof_url(domain: str, settings: Settings) -> str:
    loopback = domain.startswith(("127.0.0.1:", "localhost:"))
    scheme = "http" if loopback and settings.domain_proof_allow_loopback_http else "https"
    return f"{scheme}://{domain}{WELL_KNOWN_PATH}"


def dns_name(domain: str) -> str:
    return DNS_PREFIX + domain


def dns_value(token: str) -> str:
    return DNS_VALUE_PREFIX + token


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return ip.is_global and not ip.is_multicast


async def private_address(host: str, port: int) -> str | None:
    """The first non-public address ``host`` resolves to, if any (None: all public).

    The relay fetches a business-supplied host, so it refuses one that points into the relay's
    own network (loopback, private, link-local) before connecting.
    """
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for info in infos:
        address = str(info[4][0])
        if not is_public_address(address):
            return address
    return None


async def check_http(domain: str, token: str, settings: Settings) -> tuple[bool, str]:
    url = proof_url(domain, settings)
    if not url.startswith("http://"):  # loopback is allowed only in tests, over plain http
        try:
            inside = await asyncio.wait_for(
                private_address(domain, 443), settings.domain_proof_timeout_seconds
            )
        except (OSError, TimeoutError) as exc:
            return False, f"cannot resolve {domain}: {type(exc).__name__}"
        if inside is not None:
            return False, f"{domain} resolves to the non-public address {inside}; not fetched"
    try:
        async with (
            httpx.AsyncClient(
                timeout=settings.domain_proof_timeout_seconds, follow_redirects=False
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                return False, f"{url} answered HTTP {response.status_code}"
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_PROOF_BYTES:
                    return False, f"{url} is larger than {MAX_PROOF_BYTES} bytes"
    except httpx.HTTPError as exc:
        return False, f"cannot fetch {url}: {type(exc).__name__} {exc}".strip()
    lines = {line.strip() for line in body.decode("utf-8", "replace").splitlines()}
    if token in lines or dns_value(token) in lines:
        return True, f"{url} serves the token"
    return False, f"{url} does not contain the token"


def _resolver(settings: Settings) -> dns.asyncresolver.Resolver:
    if not settings.domain_proof_nameservers:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        servers, port = [], 53
        for entry in settings.domain_proof_nameservers.split(","):
            host, _, port_text = entry.strip().rpartition(":")
            if not host:  # no port given
                host, port_text = port_text, "53"
            servers.append(host)
            port = int(port_text)
        resolver.nameservers = servers
        resolver.port = port
    resolver.lifetime = settings.domain_proof_timeout_seconds
    resolver.timeout = settings.domain_proof_timeout_seconds
    return resolver


async def check_dns(domain: str, token: str, settings: Settings) -> tuple[bool, str]:
    name = dns_name(domain.partition(":")[0])
    try:
        answer = await _resolver(settings).resolve(name, "TXT")
    except dns.resolver.NXDOMAIN:
        return False, f"no DNS name {name}"
    except dns.resolver.NoAnswer:
        return False, f"{name} has no TXT record"
    except (TimeoutError, dns.exception.DNSException, OSError) as exc:
        return False, f"DNS lookup of {name} failed: {type(exc).__name__}"
    for record in answer:
        text = b"".join(record.strings).decode("utf-8", "replace").strip()
        if text == dns_value(token):
            return True, f"{name} has the TXT record"
    return False, f"{name} has TXT records but none is {dns_value(token)!r}"


async def check_proof(
    domain: str, token: str, method: str, settings: Settings
) -> tuple[bool, str | None, str]:
    """``(ok, method that passed or None, what was found)``; ``method`` is http, dns or any."""
    notes = []
    if method in ("http", "any"):
        ok, note = await check_http(domain, token, settings)
        if ok:
            return True, "http", note
        notes.append(note)
    if method in ("dns", "any"):
        ok, note = await check_dns(domain, token, settings)
        if ok:
            return True, "dns", note
        notes.append(note)
    return False, None, "; ".join(notes)
