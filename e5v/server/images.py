"""Image references in requests -> bytes: ``data:`` URIs always; ``http(s)`` URLs only when allowed.

SSRF protection: remote URLs are refused unless the server runs with ``--allow-remote-images``, and then
only for allowlisted hosts whose every resolved address is public (not private, loopback, link-local,
reserved, shared or multicast; ``allow_private`` lifts this for trusted networks). Redirects are followed
by hand, at most ``max_redirects``, and every hop is checked again, so a public allowlisted host cannot
bounce the server to ``http://169.254.169.254/`` or ``localhost``. Proxies from the environment are
ignored (they would bypass the address check). Size and total time are capped.

DNS rebinding: the name is resolved once, by the check, and the connection goes to the exact address that
was checked (``Host`` header and TLS server name keep the original host, so certificates are still
verified against it). IPv6 forms that wrap an IPv4 address (mapped, NAT64, 6to4, Teredo, compatible) are
judged by the IPv4 address they reach.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

from .errors import APIError
from .limits import Limits, RemoteImages, check_image_bytes


def decode_data_uri(uri: str, limits: Limits, param: str) -> bytes:
    """``data:image/<type>;base64,<payload>`` -> bytes, with the byte limit checked before decoding."""
    header, sep, payload = uri.partition(",")
    if not sep:
        raise APIError(400, f"{param}: malformed data URI (no ',' after the header)", "invalid_image", param)
    media, *params = header[len("data:"):].split(";")
    if media and not media.lower().startswith("image/"):
        raise APIError(400, f"{param}: data URI media type is {media!r}, expected image/*", "invalid_image", param)
    if "base64" not in (p.lower() for p in params):
        raise APIError(400, f"{param}: data URI must be base64-encoded ('data:image/png;base64,...')",
                       "invalid_image", param)
    payload = "".join(payload.split())  # line breaks are common in pasted base64
    check_image_bytes(len(payload) * 3 // 4 - payload.count("="), limits, param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise APIError(400, f"{param}: invalid base64 in data URI: {exc}", "invalid_base64", param) from None
    check_image_bytes(len(data), limits, param)
    return data


def host_allowed(host: str, allowlist: tuple[str, ...]) -> bool:
    """Exact host, ``*.domain`` (subdomains only) or ``*`` (any host)."""
    host = host.lower().rstrip(".")
    for entry in allowlist:
        entry = entry.lower().rstrip(".")
        if entry == "*" or host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and routes to: mapped, NAT64, 6to4, Teredo, compatible."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str) -> bool:
    """A global unicast address; an IPv6 address that wraps an IPv4 one is judged by the IPv4 it reaches
    (``[::ffff:127.0.0.1]``, ``[64:ff9b::a9fe:a9fe]``, ``[2002:a9fe:a9fe::1]``, ``[::127.0.0.1]`` are not)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            ip = inner
    return ip.is_global and not ip.is_multicast


async def check_url(url: str, policy: RemoteImages, param: str) -> str:
    """Refuse a URL the policy does not allow (scheme, host allowlist, resolved addresses); return the checked
    address to connect to (the connection must not resolve the name again: DNS rebinding)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in policy.schemes:
        raise APIError(400, f"{param}: URL scheme {parts.scheme!r} is not allowed", "invalid_image_url", param)
    host = parts.hostname
    if not host:
        raise APIError(400, f"{param}: URL has no host", "invalid_image_url", param)
    if not host_allowed(host, policy.hosts):
        raise APIError(400, f"{param}: host {host!r} is not in the server's remote image allowlist "
                            "(server option --remote-host)", "remote_host_not_allowed", param)
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise APIError(400, f"{param}: cannot resolve {host!r}: {exc}", "invalid_image_url", param) from None
    addresses = [info[4][0] for info in infos]
    private = sorted({a for a in addresses if not is_public(a)})
    if private and not policy.allow_private:
        raise APIError(400, f"{param}: host {host!r} resolves to a non-public address ({', '.join(private)}); "
                            "refused (SSRF protection)", "remote_host_not_allowed", param)
    if not addresses:
        raise APIError(400, f"{param}: cannot resolve {host!r}", "invalid_image_url", param)
    return addresses[0]


def pinned_request(url: str, address: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(URL naming the checked address, Host header, TLS server name): connect there, speak to the host."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    literal = f"[{address.split('%')[0]}]" if ":" in address else address
    pinned = parts._replace(netloc=f"{literal}:{port}").geturl()
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return pinned, {"Host": host_header}, {"sni_hostname": parts.hostname or ""}


async def fetch_image(url: str, policy: RemoteImages, limits: Limits, param: str) -> bytes:
    """Download an allowed remote image within the policy's size and time limits."""
    if not policy.enabled:
        raise APIError(400, f"{param}: remote image URLs are disabled on this server (SSRF protection); send "
                            "the image as a data: URI, or start the server with --allow-remote-images and "
                            "--remote-host", "remote_images_disabled", param)
    try:
        return await asyncio.wait_for(_fetch(url, policy, limits, param), policy.timeout_s)
    except asyncio.TimeoutError:
        raise APIError(400, f"{param}: fetching the image took longer than {policy.timeout_s:g} s",
                       "image_fetch_failed", param) from None


async def _fetch(url: str, policy: RemoteImages, limits: Limits, param: str) -> bytes:
    import httpx

    cap = min(policy.max_bytes, limits.max_image_bytes)
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=policy.timeout_s) as client:
        for _ in range(policy.max_redirects + 1):
            address = await check_url(url, policy, param)
            pinned, headers, extensions = pinned_request(url, address)
            try:
                async with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise APIError(400, f"{param}: fetching the image returned HTTP {response.status_code}",
                                       "image_fetch_failed", param)
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > cap:
                        raise APIError(400, f"{param}: remote image is {int(declared):,} bytes, over the limit "
                                            f"of {cap:,}", "image_too_large", param)
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > cap:
                            raise APIError(400, f"{param}: remote image is over the limit of {cap:,} bytes",
                                           "image_too_large", param)
                    check_image_bytes(len(data), limits, param)
                    return bytes(data)
            except httpx.HTTPError as exc:
                raise APIError(400, f"{param}: fetching the image failed: {type(exc).__name__}: {exc}",
                               "image_fetch_failed", param) from None
    raise APIError(400, f"{param}: more than {policy.max_redirects} redirects", "image_fetch_failed", param)
