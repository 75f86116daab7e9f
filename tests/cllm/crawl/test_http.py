"""One request, bounded: the addresses it may reach (checked after DNS, at every redirect hop, with
no packet ever sent to a refused address) and the time the whole response may take.

Every test here replaces the resolver with a stub and the sockets' connect with a recorder that
lets only 127.0.0.1 through, so even a broken check could not reach another address.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from cllm.crawl import http
from cllm.crawl.crawler import CrawlConfig, Crawler
from cllm.crawl.http import AddressRefused, fetch, resolve
from cllm.data.dataqueue import DataQueue
from cllm.engine.tokenizer import train_tokenizer

from .crawl_site import Page, Site, chain_routes, html

FAST = dict(min_delay=0.0, max_delay=0.0, timeout=2.0, retries=0, backoff=0.05)
NAMES = {  # the stub resolver's answers
    "meta.test": ["169.254.169.254"],
    "intranet.test": ["10.1.2.3"],
    "mixed.test": ["93.184.216.34", "192.168.0.7"],  # one bad address is enough to refuse
    "public.test": ["93.184.216.34", "2606:4700::1111"],
    "site.test": ["127.0.0.1"],
}


@pytest.fixture
def net(monkeypatch):
    """Stub DNS and a connect() that records every address and only reaches 127.0.0.1."""
    asked: list[str] = []
    connects: list[tuple] = []

    def getaddrinfo(host: str, port: int) -> list[tuple]:
        asked.append(host)
        if host not in NAMES:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for a in NAMES[host]:
            family = socket.AF_INET6 if ":" in a else socket.AF_INET
            addr = (a, port, 0, 0) if family == socket.AF_INET6 else (a, port)
            out.append((family, socket.SOCK_STREAM, 6, "", addr))
        return out

    real_connect = socket.socket.connect

    def connect(self, address):
        connects.append(address)
        if address[0] != "127.0.0.1":
            raise ConnectionRefusedError(f"test: no connection to {address[0]}")
        return real_connect(self, address)

    monkeypatch.setattr(http, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, a: connect(self, a) or 0)
    return asked, connects


def test_resolve_checks_every_address(net):
    asked, connects = net
    assert [a[1][0] for a in resolve("public.test", 80)] == ["93.184.216.34", "2606:4700::1111"]
    for host, why in (
        ("meta.test", "meta.test: 169.254.169.254 is a link-local address"),
        ("intranet.test", "10.1.2.3 is a private address"),
        ("mixed.test", "192.168.0.7 is a private address"),
        ("site.test", "127.0.0.1 is a loopback address"),
        ("2852039166", "169.254.169.254 is a link-local address"),  # no DNS for a literal
        ("0x7f.1", "127.0.0.1 is a loopback address"),
    ):
        with pytest.raises(AddressRefused, match=why):
            resolve(host, 80)
    assert resolve("site.test", 80, allow_loopback=True) == [(socket.AF_INET, ("127.0.0.1", 80))]
    assert "2852039166" not in asked and "0x7f.1" not in asked
    assert connects == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://[::ffff:169.254.169.254]/",
        "http://meta.test/",
        "https://meta.test/",
        "http://mixed.test/",
        "http://127.0.0.1:9/",  # loopback, not allowed for this request
    ],
)
def test_fetch_refuses_before_any_connection(net, url):
    _, connects = net
    with pytest.raises(AddressRefused):
        fetch(url, timeout=2, max_bytes=1000)
    assert connects == []


def test_fetch_connects_to_the_address_it_checked(net):
    """The name is resolved once and the connection goes to that checked address: a second
    lookup that could answer differently (DNS rebinding) never happens."""
    asked, connects = net
    with Site(chain_routes(1)) as site:
        port = site.server.server_address[1]
        resp = fetch(
            f"http://site.test:{port}/p0", timeout=2, max_bytes=10_000, allow_loopback=True
        )
    assert resp.status == 200 and b"page number 0" in resp.body
    assert asked == ["site.test"] and connects == [("127.0.0.1", port)]


def crawl(tmp_path, urls: list[str], **cfg) -> Crawler:
    q = DataQueue(tmp_path / "m_queue", train_tokenizer("byte", "", 256))
    crawler = Crawler(tmp_path, "m", CrawlConfig(**{**FAST, **cfg}), queue_factory=lambda: q)
    crawler.start(urls)
    assert crawler.join(timeout=30), "crawl did not end"
    return crawler


@pytest.mark.parametrize("any_host", [False, True])
def test_redirects_to_refused_addresses_are_not_followed(tmp_path, net, any_host):
    """A loopback start URL (allowed: the user named it) redirects to the metadata address in
    several spellings, and to another loopback server: each hop is refused before connecting."""
    _, connects = net
    targets = {
        "/meta": "http://169.254.169.254/latest/meta-data/",
        "/int": "http://2852039166/latest/",
        "/hex": "http://0xa9fea9fe/",
        "/mapped": "http://[::ffff:169.254.169.254]/",
        "/name": "http://meta.test/",
        "/private": "http://intranet.test/",
        "/other-loopback": "http://127.0.0.1:9/",
        "/hop": "/hop2",  # a first hop on the same server, then the refused one
    }
    routes = {p: Page(status=302, headers={"Location": t}) for p, t in targets.items()}
    routes["/hop2"] = Page(status=302, headers={"Location": "http://2852039166/"})
    with Site(routes) as site:
        c = crawl(tmp_path, [site.url(p) for p in targets], same_host=not any_host)
        port = site.server.server_address[1]
        rows = {p: c.db.get(site.url(p)) for p in targets}
        c.close()
    assert {a for a in connects} == {("127.0.0.1", port)}, connects  # nothing else, ever
    for path, row in rows.items():
        assert row.state == "blocked", (path, row)
        assert row.reason.startswith("redirect to "), row.reason
    assert "169.254.169.254 is a link-local address" in rows["/int"].reason
    assert "meta.test: 169.254.169.254 is a link-local" in rows["/name"].reason
    assert "10.1.2.3 is a private address" in rows["/private"].reason
    assert "127.0.0.1 is a loopback address" in rows["/other-loopback"].reason
    assert rows["/hop"].reason.startswith("redirect to http://169.254.169.254/: refused")
    assert sorted(site.paths()) == sorted(["/robots.txt", *targets, "/hop2"])  # each once


def test_start_urls_and_links_to_refused_addresses(tmp_path, net):
    """A start URL whose name resolves to a private address is refused before any connection;
    links to refused addresses are refused too, even when other hosts are followed."""
    _, connects = net
    links = ("http://169.254.169.254/", "http://meta.test/x", "http://[::1]:9/")
    with Site({"/": html("Home", "Links out.", links)}) as site:
        c = crawl(tmp_path, [site.url("/"), "http://intranet.test/"], same_host=False)
        port = site.server.server_address[1]
        states = {u.url: (u.state, u.reason) for u in c.db.urls()}
        c.close()
    assert {a for a in connects} == {("127.0.0.1", port)}, connects
    assert states[site.url("/")][0] == "crawled"
    for url in ("http://intranet.test/", *links):
        state, reason = states[url]
        assert state == "blocked" and "refused:" in reason, (url, reason)


# --- the timeout bounds the whole response ---


class SlowHeaders:
    """A server on 127.0.0.1 that answers with one header line a second, for a minute (and
    at once to robots.txt: it has none)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                if conn.recv(65536).startswith(b"GET /robots.txt "):
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                for i in range(60):
                    conn.sendall(f"X-Slow-{i}: {i}\r\n".encode())
                    time.sleep(1.0)
            except OSError:
                pass  # the client gave up

    def __enter__(self) -> SlowHeaders:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


def test_the_timeout_bounds_headers_sent_one_line_a_second(tmp_path):
    with SlowHeaders() as server:
        url = f"http://127.0.0.1:{server.port}/"
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="timed out after 1.5 s"):
            fetch(url, timeout=1.5, max_bytes=1000, allow_loopback=True)
        took = time.monotonic() - t0
        assert 1.4 < took < 2.5, took  # each line came within the per-read timeout
        # the crawler records it as a timeout of the whole request
        t0 = time.monotonic()
        c = crawl(tmp_path, [url], timeout=1.5)
        row = c.db.get(url)
        c.close()
        assert row.state == "failed" and row.reason.startswith("timed out after 1.5 s"), row
        assert time.monotonic() - t0 < 2.5
