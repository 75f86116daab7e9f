"""A small web site on 127.0.0.1 for the crawler tests; it logs every request it serves.

`Site(routes)` serves a dict of path -> route in a ThreadingHTTPServer on port 0 (one thread per
request, so a slow page does not hold up the rest). A route is bytes/str (an HTML page), a
`Page(...)` for anything else, or a callable `(site, path) -> Page` for pages that change.
Run as a script, it serves the demo site until killed and prints its base URL.
"""

from __future__ import annotations

import gzip
import http.server
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Page:
    body: bytes | str = b""
    status: int = 200
    type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the response starts
    trickle: float = 0.0  # seconds between 100-byte pieces of the body


Route = bytes | str | Page | Callable[["Site", str], Page]


class Site:
    def __init__(self, routes: dict[str, Route], tls: ssl.SSLContext | None = None):
        self.routes = routes
        self.requests: list[tuple[float, str]] = []  # (time.monotonic(), path), in order
        self.lock = threading.Lock()
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                with site.lock:
                    site.requests.append((time.monotonic(), self.path))
                page = site.page(self.path)
                if page.delay:
                    time.sleep(page.delay)
                body = page.body.encode() if isinstance(page.body, str) else page.body
                try:
                    self.send_response(page.status)
                    self.send_header("Content-Type", page.type)
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in page.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if not page.trickle:
                        self.wfile.write(body)
                    for i in range(0, len(body) if page.trickle else 0, 100):
                        self.wfile.write(body[i : i + 100])
                        self.wfile.flush()
                        time.sleep(page.trickle)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the crawler gave up on a slow or oversized page

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.base = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def page(self, path: str) -> Page:
        route = self.routes.get(path)
        if route is None:
            return Page("not found", status=404, type="text/plain")
        if callable(route):
            return route(self, path)
        return route if isinstance(route, Page) else Page(route)

    def url(self, path: str) -> str:
        return self.base + path

    def paths(self) -> list[str]:
        with self.lock:
            return [p for _, p in self.requests]

    def count(self, path: str) -> int:
        return self.paths().count(path)

    def times(self) -> list[float]:
        with self.lock:
            return [t for t, _ in self.requests]

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1, made with the openssl tool: (its PEM, a server context)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    return cert, tls


def html(title: str, body: str = "", links: tuple[str, ...] = ()) -> str:
    anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
    return (
        f"<!doctype html><html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>{body}</p><ul>{anchors}</ul></body></html>"
    )


def flaky(site: Site, path: str) -> Page:
    """503 on the first request, 200 after."""
    if site.count(path) <= 1:
        return Page("busy", status=503, type="text/plain")
    return Page(html("Flaky", "The flaky page answered on the second try."))


BIG_SIZE = 200_000


def demo_routes() -> dict[str, Route]:
    """The test site: every case the crawler must handle, linked from the home page."""
    filler = "The quick brown fox jumps over the lazy dog. " * (BIG_SIZE // 45)
    return {
        "/robots.txt": Page("User-agent: *\nDisallow: /private/\n", type="text/plain"),
        "/": html(
            "Home",
            "Welcome to the test site.",
            (
                "/a",
                "/private/secret",
                "/loop/a",
                "/big",
                "/slow",
                "/data.bin",
                "/notes.txt",
                "mailto:someone@example.com",
                "ftp://127.0.0.1/file.txt",
                "javascript:void(0)",
                "/dup1",
                "/dup2",
                "/flaky",
                "/gz",
                "/missing",
                "/a#section",
                "http://127.0.0.1:1/offsite",  # another host (port), never followed
            ),
        ),
        "/a": html("Page A", "Depth one.", ("/a/1", "/")),
        "/a/1": html("Page A1", "Depth two.", ("/a/1/x",)),
        "/a/1/x": html("Page A1x", "Depth three: beyond the limit."),
        "/private/secret": html("Secret", "Robots say no."),
        "/loop/a": Page("", status=302, headers={"Location": "/loop/b"}),
        "/loop/b": Page("", status=302, headers={"Location": "/loop/a"}),
        "/big": html("Big", filler),
        "/slow": Page(html("Slow", "Too slow."), delay=4.0),
        "/data.bin": Page(bytes(range(256)) * 8, type="application/octet-stream"),
        "/notes.txt": Page("Plain notes, taken as they are.\n", type="text/plain; charset=utf-8"),
        "/dup1": html("Same", "Two URLs, one text."),
        "/dup2": html("Same", "Two URLs, one text."),
        "/flaky": flaky,
        # gzip although the crawler asked for none
        "/gz": Page(
            gzip.compress(html("Zipped", "Squeezed text.").encode()),
            headers={"Content-Encoding": "gzip"},
        ),
    }


def chain_routes(n: int) -> dict[str, Route]:
    """n pages in a row, /p0 -> /p1 -> ... each with its own text."""
    routes: dict[str, Route] = {"/robots.txt": Page("User-agent: *\n", type="text/plain")}
    for i in range(n):
        links = (f"/p{i + 1}",) if i + 1 < n else ()
        routes[f"/p{i}"] = html(f"Page {i}", f"This is page number {i} of the chain.", links)
    return routes


if __name__ == "__main__":
    with Site(demo_routes()) as s:
        print(s.base, flush=True)
        s.thread.join()
