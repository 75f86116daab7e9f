"""URLs and the rules about them: one canonical spelling, what a start URL may be, which network
addresses the crawler may connect to, and the parts of robots.txt the standard library misses.

Addresses: the crawler connects only to public addresses. Link-local (169.254.0.0/16, where cloud
metadata services answer), private, loopback, multicast, reserved and unspecified addresses are
refused before any connection, however the address is spelled (``http://2852039166/``,
``http://0xa9fea9fe/`` and ``http://[::ffff:169.254.169.254]/`` are all 169.254.169.254). The one
exception is loopback for a server the user named as a start URL (a crawl of a local site).
``cllm.crawl.http`` applies :func:`address_refusal` to every address a host name resolves to, and
then connects to the address it checked, so a name that resolves differently the second time (DNS
rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import quote, urldefrag, urljoin, urlsplit, urlunsplit

from cllm.errors import ValidationError

SCHEMES = {"http": 80, "https": 443}
MAX_CRAWL_DELAY = 60.0  # a robots.txt Crawl-delay above this is capped

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdef"}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv4 addresses translated into IPv6


# --- spelling ---


def normalize_url(url: str, base: str | None = None) -> str | None:
    """An absolute http(s) URL in one canonical spelling, or None for anything else.

    Resolves against `base`, drops the fragment and any user:password, lowercases scheme and
    host, writes a numeric IPv4 host in dotted decimal (``0x7f.1`` is ``127.0.0.1``), drops a
    default port, and percent-encodes what must be.
    """
    url = url.strip()
    if base:
        url = urljoin(base, url)
    url = urldefrag(url)[0]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, a bad IPv6 literal
        return None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not parts.hostname:
        return None
    host = parts.hostname.lower()
    v4 = loose_ipv4(host)
    if v4 is not None:
        host = str(v4)
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != SCHEMES[scheme]:
        host += f":{port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return urlunsplit((scheme, host, path, query, ""))


def check_start_url(url: str) -> str:
    """A start URL, normalized; refuses anything that is not an http or https URL, and an
    address the crawler may not connect to (a loopback one is fine: the user named it)."""
    try:
        scheme = urlsplit(url.strip()).scheme.lower() if "://" in url else ""
        norm = normalize_url(url)
    except ValueError as err:  # urllib refuses e.g. an unclosed IPv6 bracket
        raise ValidationError(f"cannot crawl {url!r}: not a valid URL ({err})") from None
    if not scheme:
        raise ValidationError(f"cannot crawl {url!r}: a URL must start with http:// or https://")
    if scheme not in SCHEMES:
        raise ValidationError(
            f"cannot crawl {url!r}: only http and https are crawled, not {scheme}"
        )
    if norm is None:
        raise ValidationError(f"cannot crawl {url!r}: not a valid URL")
    ip = ip_literal(urlsplit(norm).hostname or "")
    why = address_refusal(ip, allow_loopback=True) if ip is not None else None
    if why:
        raise ValidationError(f"cannot crawl {url!r}: {why}")
    return norm


def host_of(url: str) -> str:
    """The host and port of a URL as written in it: what "the same host" compares."""
    return urlsplit(url).netloc.lower()


# --- addresses ---


def loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host means in the spellings inet_aton (and so getaddrinfo) accepts:
    one to four parts, each decimal, octal (leading 0) or hex (0x), the last filling the bytes
    left (``2852039166``, ``0xa9.0376.43518``); None when it is not one."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not host.isascii():
        return None
    values = []
    for p in parts:
        if p[:2].lower() == "0x":
            digits, base = p[2:].lower(), 16
        elif len(p) > 1 and p[0] == "0":
            digits, base = p[1:], 8
        else:
            digits, base = p, 10
        if not digits or digits.strip(_DIGITS[base]):  # int() would take '_', signs, spaces
            return None
        values.append(int(digits, base))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, v in enumerate(head):
        value += v << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def ip_literal(host: str) -> IPAddress | None:
    """The address a URL's host is, when it is an address rather than a name."""
    v4 = loose_ipv4(host)
    if v4 is not None:
        return v4
    try:
        return ipaddress.IPv6Address(host.strip("[]"))
    except ValueError:
        return None


def address_refusal(ip: IPAddress, allow_loopback: bool = False) -> str | None:
    """Why the crawler must not connect to `ip` ('169.254.169.254 is a link-local address'), or
    None. An IPv6 address that carries an IPv4 one (mapped, 6to4, NAT64) is judged by that one,
    the address the packets would reach."""
    inner = None
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    addr, shown = (ip, str(ip)) if inner is None else (inner, f"{ip} ({inner})")
    if addr.is_loopback:
        if allow_loopback:
            return None
        return f"{shown} is a loopback address (allowed only for a start URL on this machine)"
    for kind in ("unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(addr, f"is_{kind}"):
            article = "an" if kind == "unspecified" else "a"
            return f"{shown} is {article} {kind.replace('_', '-')} address"
    if not addr.is_global:  # e.g. 100.64.0.0/10, shared between a carrier's customers
        return f"{shown} is not a public address"
    return None


# --- robots.txt ---


def crawl_delay(lines: list[str], user_agent: str) -> float | None:
    """The Crawl-delay of robots.txt for us: our own group's, else the '*' group's.
    (The standard library's parser reads whole seconds only, and "0.5" is common.)"""
    token = user_agent.split("/")[0].lower()
    ours = anyone = None
    agents: list[str] = []
    in_rules = False
    for raw in lines:
        key, _, value = raw.split("#", 1)[0].partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "user-agent":
            if in_rules:  # a new group starts
                agents, in_rules = [], False
            agents.append(value.lower())
        elif key:
            in_rules = True
            if key != "crawl-delay":
                continue
            try:
                delay = float(value)
            except ValueError:
                continue
            if not 0 <= delay <= 86400:  # also drops nan
                continue
            for agent in agents:
                if agent == "*":
                    anyone = delay
                elif agent and agent in token:
                    ours = delay
    return ours if ours is not None else anyone
