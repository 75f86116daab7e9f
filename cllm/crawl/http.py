"""One HTTP request, bounded: the addresses it may reach and the time it may take.

:func:`fetch` sends one GET (redirects are the crawler's to follow, hop by hop). Before any
connection it resolves the host and checks every address with
:func:`cllm.crawl.urls.address_refusal`; it then connects to an address it checked, never
resolving again, so DNS rebinding cannot slip another address in between. The timeout bounds the
whole exchange, from the connection to the last byte of the body: a watchdog cuts the socket at
the deadline, so a server that trickles its headers one line a second is cut like any other.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from cllm.crawl.urls import SCHEMES, address_refusal, ip_literal

USER_AGENT = "CrystallineCLLM/0.1"
REDIRECTS = {301, 302, 303, 307, 308}
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
# timeouts, resets, refused and dropped connections may pass; DNS and TLS failures will not
TRANSIENT_ERRORS = (TimeoutError, ConnectionError, http.client.IncompleteRead)


class AddressRefused(Exception):
    """The host is, or resolves to, an address the crawler must not connect to."""


@dataclass
class Response:
    url: str
    status: int
    headers: dict[str, str]  # names lowercased
    body: bytes  # read for 2xx responses only
    truncated: bool  # the body was cut at max_bytes


def getaddrinfo(host: str, port: int) -> list[tuple]:
    """The system resolver (a test puts a stub here)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def resolve(host: str, port: int, allow_loopback: bool = False) -> list[tuple[int, tuple]]:
    """(family, socket address) to connect to for host:port, each one checked. Raises
    AddressRefused when any address of the host is refused (whichever the system would try
    first), socket.gaierror when the name does not resolve."""
    ip = ip_literal(host)
    if ip is not None:  # a literal in any spelling: the address it means, no DNS
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        found = [(family, (str(ip), port))]
    else:
        found = [(info[0], info[4]) for info in getaddrinfo(host, port)]
    for _, sockaddr in found:
        why = address_refusal(ipaddress.ip_address(sockaddr[0].split("%")[0]), allow_loopback)
        if why:
            raise AddressRefused(why if ip is not None else f"{host}: {why}")
    if not found:
        raise OSError(f"{host} has no address")
    return found


class _Watchdog:
    """Shuts a connection's socket down at the deadline: any read then ends at once."""

    def __init__(self, seconds: float) -> None:
        self.fd = -1
        self.fired = self.over = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self.over:
                return
            self.fired = True
            if self.fd >= 0:  # the same descriptor before and after a TLS wrap
                sock = socket.socket(fileno=self.fd)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                finally:
                    sock.detach()  # the connection still owns and closes it

    def end(self) -> None:
        """Before the socket is closed: the watchdog must not touch its descriptor after."""
        self._timer.cancel()
        with self._lock:
            self.over = True


def _connect(addresses: list[tuple[int, tuple]], deadline: float, dog: _Watchdog) -> socket.socket:
    """A TCP connection to the first of the checked addresses that answers."""
    problem: OSError = OSError("no address to connect to")
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.connect(sockaddr)
        except OSError as err:
            sock.close()
            problem = err
            continue
        dog.fd = sock.fileno()
        return sock
    raise problem


def fetch(
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    user_agent: str = USER_AGENT,
    context: ssl.SSLContext | None = None,
    allow_loopback: bool = False,
) -> Response:
    """One GET request, redirects not followed; the whole request must end within `timeout`.

    Raises AddressRefused before connecting to a refused address (a loopback one only passes
    with `allow_loopback`), else TimeoutError, ConnectionError, OSError or
    http.client.HTTPException.
    """
    parts = urlsplit(url)
    port = parts.port or SCHEMES[parts.scheme]  # explicit: a bare IPv6 host would lose its tail
    deadline = time.monotonic() + timeout
    addresses = resolve(parts.hostname, port, allow_loopback)
    if parts.scheme == "https":
        context = context or ssl.create_default_context()
        conn = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    dog = _Watchdog(timeout)
    # the connection goes to the addresses checked above (the Host header and TLS keep the name)
    conn._create_connection = lambda *_: _connect(addresses, deadline, dog)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {
        "User-Agent": user_agent,
        "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5",
        "Accept-Encoding": "identity",
        "Connection": "close",
    }
    try:
        conn.request("GET", target, headers=headers)
        resp = conn.getresponse()
        head = {k.lower(): v for k, v in resp.getheaders()}
        body, truncated = b"", False
        if 200 <= resp.status < 300:
            chunks, n = [], 0
            # one byte past the cap tells us the page was cut
            while n <= max_bytes:
                chunk = resp.read1(min(65536, max_bytes + 1 - n))
                if not chunk:
                    break
                chunks.append(chunk)
                n += len(chunk)
            body = b"".join(chunks)
            truncated = len(body) > max_bytes
            body = body[:max_bytes]
        if dog.fired:  # what was read may end early: the cut looks like the end
            raise TimeoutError(f"timed out after {timeout:g} s")
        return Response(url, resp.status, head, body, truncated)
    except (OSError, http.client.HTTPException, ValueError):
        if dog.fired or time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s") from None
        raise
    finally:
        dog.end()
        conn.close()


def describe(err: BaseException) -> str:
    """A failure in a few words, for the URL list and the events."""
    if isinstance(err, TimeoutError):
        return str(err) if str(err).startswith("timed out after") else "timed out"
    if isinstance(err, AddressRefused):
        return str(err)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def retry_after(resp: Response) -> float:
    """The seconds a 429 or 503 asks us to wait (at most a minute); 0 when it does not say."""
    try:
        return min(float(resp.headers.get("retry-after", "")), 60.0)
    except ValueError:  # absent, or an HTTP date: use our own backoff
        return 0.0


def content_type(headers: dict[str, str]) -> tuple[str, str | None]:
    """('text/html', 'utf-8') from a Content-Type header; ('', None) when there is none."""
    raw = headers.get("content-type", "")
    mime, _, params = raw.partition(";")
    m = re.search(r"charset\s*=\s*\"?([^\";\s]+)", params, re.I)
    return mime.strip().lower(), (m.group(1) if m else None)


def decode_content(body: bytes, headers: dict[str, str], max_bytes: int) -> bytes | None:
    """The body without its Content-Encoding (we ask for none, not every server listens);
    None when it cannot be undone. A cut gzip stream still gives what it holds."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return None
    try:  # wbits 47: gzip or zlib, told apart by the header
        return zlib.decompressobj(47).decompress(body, max_bytes)
    except zlib.error:
        try:  # some servers send raw deflate
            return zlib.decompressobj(-15).decompress(body, max_bytes)
        except zlib.error:
            return None
