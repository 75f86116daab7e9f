"""Which addresses the crawler may reach, decided without the network: the decision function,
the spellings of an IPv4 address, and start URLs refused before anything is written."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.crawl.urls import address_refusal, check_start_url, ip_literal, loose_ipv4, normalize_url
from cllm.errors import ValidationError

METADATA = ipaddress.ip_address("169.254.169.254")


@pytest.mark.parametrize(
    "address, why",
    [
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "private"),  # reserved, and Python files it under private first
        ("255.255.255.255", "private"),
        ("100.64.0.1", "not a public address"),  # shared by a carrier's customers
        # IPv6 spellings of an IPv4 address are judged by that address
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64
    ],
)
def test_refused_addresses(address, why):
    ip = ipaddress.ip_address(address)
    reason = address_refusal(ip)
    assert reason is not None and why in reason, reason
    if "loopback" not in why:  # a start URL on this machine allows loopback, nothing else
        assert address_refusal(ip, allow_loopback=True) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_loopback_passes_only_when_allowed():
    for a in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert address_refusal(ipaddress.ip_address(a), allow_loopback=True) is None


@given(st.integers(0, 2**32 - 1), st.lists(st.sampled_from("dox"), min_size=4, max_size=4))
@settings(max_examples=300)
def test_every_spelling_of_an_ipv4_address_is_that_address(value, bases):
    """Dotted, integer, hex and octal spellings (and mixes, and fewer parts) all mean the address
    the system's own parser (inet_aton) reads: the decision sees through them."""
    ip = ipaddress.IPv4Address(value)
    b = ip.packed

    def spell(n: int, base: str) -> str:
        return {"d": str(n), "o": "0" + oct(n)[2:], "x": hex(n)}[base]

    spellings = [
        ".".join(spell(x, base) for x, base in zip(b, bases, strict=True)),
        spell(value, bases[0]),  # one part: the whole address
        f"{spell(b[0], bases[1])}.{spell(int.from_bytes(b[1:]), bases[2])}",  # two parts
        f"{b[0]}.{b[1]}.{spell(int.from_bytes(b[2:]), bases[3])}",  # three parts
    ]
    for s in spellings:
        assert socket.inet_aton(s) == b, s  # the system agrees it is this address
        assert loose_ipv4(s) == ip and ip_literal(s) == ip, s
        assert normalize_url(f"http://{s}/x") == f"http://{ip}/x"


@given(st.text(alphabet="0123456789abcdefxX.", min_size=1, max_size=16))
@settings(max_examples=500)
def test_the_loose_parser_agrees_with_inet_aton(text):
    try:
        want = ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        want = None
    assert loose_ipv4(text) == want


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://2852039166/", "169.254.169.254 is a link-local"),
        ("http://0xa9fea9fe/", "169.254.169.254 is a link-local"),
        ("http://0251.0376.0251.0376/", "169.254.169.254 is a link-local"),
        ("http://169.254.43518/", "169.254.169.254 is a link-local"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[fe80::1]:8080/", "link-local"),
        ("http://10.0.0.1/", "private"),
        ("http://0.0.0.0:8000/", "unspecified"),
        ("https://224.0.0.1/", "multicast"),
    ],
)
def test_start_urls_at_refused_addresses_are_refused(url, why):
    with pytest.raises(ValidationError, match=why):
        check_start_url(url)


def test_loopback_and_named_start_urls_are_taken():
    assert check_start_url("http://127.0.0.1:8080/a") == "http://127.0.0.1:8080/a"
    assert check_start_url("http://0x7f.1:8080/") == "http://127.0.0.1:8080/"
    assert check_start_url("http://[::1]:8080/") == "http://[::1]:8080/"
    # a name is judged by what it resolves to, at each request (cllm.crawl.http)
    assert check_start_url("http://localhost:8080/") == "http://localhost:8080/"
    assert check_start_url("https://example.com") == "https://example.com/"
