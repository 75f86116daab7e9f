"""Archives: one compressed file (.gz .bz2 .xz), .zip, and tars (.tar, .tar.gz/.tgz, .tar.bz2,
.tar.xz). Members are expanded as a stream (a zip read from a pipe or from inside another archive
is held in memory up to ``Limits.in_memory``) and each is extracted by its kind.

An archive is refused whole (``ArchiveRefused``) when it expands past ``Limits.archive_bytes``
or holds more than ``Limits.archive_members`` members (a bomb), when a member's path leaves the
archive (``../x``, ``/etc/x``), or when its stream is corrupt. The queue adds the members of one
archive in one transaction, so a refusal found late leaves nothing half-added.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import BinaryIO

from cllm.data.extract import (
    ArchiveRefused,
    Doc,
    Limits,
    Skipped,
    short,
    stream_documents,
    whole_bytes,
)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
SINGLE = {".gz": "gz", ".bz2": "bz2", ".xz": "xz"}
# What the standard library's readers raise on damaged archives (zipfile alone raises six kinds).
_STREAM_ERRORS = (
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    zipfile.BadZipFile,
    tarfile.TarError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
)


def archive_kind(name: str) -> str:
    """``tar``, ``zip``, ``gz``, ``bz2``, ``xz`` by a (lower-case) name, or ``""``."""
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    for suffix, kind in SINGLE.items():
        if name.endswith(suffix):
            return kind
    return ""


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


class Budget:
    """What one archive (with the archives inside it) has expanded to so far."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.bytes = 0
        self.members = 0

    def add(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.archive_bytes:
            raise ArchiveRefused(
                f"archive expands past {_mib(self.limits.archive_bytes)}: refused as a "
                "possible archive bomb"
            )

    def member(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.archive_members:
            raise ArchiveRefused(
                f"archive holds more than {self.limits.archive_members:,} members: refused as a "
                "possible archive bomb"
            )
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise ArchiveRefused(f"unsafe path in archive: {name[:100]}")


class _Counted(io.RawIOBase):
    """A decompressing stream whose bytes count against the budget; its errors refuse the
    archive."""

    def __init__(self, f: BinaryIO, budget: Budget | None) -> None:
        self.f, self.budget = f, budget

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            data = self.f.read(len(b))
        except Skipped:
            raise
        except _STREAM_ERRORS as err:
            raise ArchiveRefused(f"corrupt archive ({short(err)})") from None
        if self.budget is not None:
            self.budget.add(len(data))
        b[: len(data)] = data
        return len(data)


def _hidden(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def archive_documents(
    kind: str,
    stream: BinaryIO,
    name: str,
    source: str,
    *,
    field: str | None,
    limits: Limits,
    budget: Budget | None,
    depth: int,
    head: bytes,
    raw: BinaryIO,
) -> Iterator[Doc]:
    """The documents of an archive's members; ``ArchiveRefused`` refuses all of them."""
    if depth >= limits.depth:
        yield Doc(source, kind, skipped=f"archive nested more than {limits.depth} deep")
        return
    budget = budget or Budget(limits)
    sub = dict(field=field, limits=limits, budget=budget, depth=depth + 1)
    if kind == "tar":
        yield from _tar(stream, source, budget, sub)
    elif kind == "zip":
        try:
            fobj = whole_bytes(head, raw, limits, "zip archive")
        except ArchiveRefused:
            raise
        except Skipped as err:
            raise ArchiveRefused(err.reason) from None
        yield from _zip(fobj, source, budget, sub)
    else:
        opener = {"gz": gzip.GzipFile, "bz2": bz2.BZ2File, "xz": lzma.LZMAFile}[kind]
        try:
            inner = opener(fileobj=stream) if kind == "gz" else opener(stream)
        except _STREAM_ERRORS as err:
            raise ArchiveRefused(f"corrupt {kind} file ({short(err)})") from None
        base = name[: name.lower().rfind(".")] if "." in name else name
        counted = io.BufferedReader(_Counted(inner, budget), 1 << 16)
        yield from stream_documents(counted, base, source, **sub)


def _tar(stream: BinaryIO, source: str, budget: Budget, sub: dict) -> Iterator[Doc]:
    try:
        tf = tarfile.open(fileobj=stream, mode="r|*")
    except ArchiveRefused:
        raise
    except _STREAM_ERRORS as err:
        raise ArchiveRefused(f"corrupt tar archive ({short(err)})") from None
    with tf:
        members = iter(tf)
        while True:
            try:
                m = next(members, None)
            except ArchiveRefused:
                raise
            except _STREAM_ERRORS as err:
                raise ArchiveRefused(f"corrupt tar archive ({short(err)})") from None
            if m is None:
                return
            budget.member(m.name)
            if not m.isfile() or _hidden(m.name):  # links, devices and folders hold no text
                continue
            budget.add(m.size)  # the header says how much follows: refuse before reading it
            try:
                f = tf.extractfile(m)
            except _STREAM_ERRORS as err:
                raise ArchiveRefused(f"corrupt tar archive ({short(err)})") from None
            if f is None:
                continue
            counted = io.BufferedReader(_Counted(f, None), 1 << 16)
            yield from stream_documents(counted, m.name, f"{source}!{m.name}", **sub)


def _zip(fobj: BinaryIO, source: str, budget: Budget, sub: dict) -> Iterator[Doc]:
    try:
        zf = zipfile.ZipFile(fobj)
        infos = zf.infolist()
    except _STREAM_ERRORS as err:
        raise ArchiveRefused(f"corrupt zip archive ({short(err)})") from None
    if any(not i.filename for i in infos):
        raise ArchiveRefused("corrupt zip archive (a member without a name)")
    with zf:
        for info in infos:  # every path and the declared sizes are checked before any read
            budget.member(info.filename)
        declared = sum(i.file_size for i in infos if not i.is_dir())
        if budget.bytes + declared > budget.limits.archive_bytes:
            budget.add(declared)  # raises with the reason
        for info in infos:
            if info.is_dir() or _hidden(info.filename):
                continue
            if info.flag_bits & 0x1:
                yield Doc(f"{source}!{info.filename}", "text", skipped="encrypted zip member")
                continue
            try:
                f = zf.open(info)
            except _STREAM_ERRORS as err:
                yield Doc(f"{source}!{info.filename}", "text", skipped=f"unreadable ({short(err)})")
                continue
            with f:
                counted = io.BufferedReader(_Counted(f, budget), 1 << 16)
                yield from stream_documents(
                    counted, info.filename, f"{source}!{info.filename}", **sub
                )
