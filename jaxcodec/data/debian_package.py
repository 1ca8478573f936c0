"""Debian binary packages (.deb) without dpkg or root: fetch one with `apt-get download` and read its files in
memory (pure Python: `ar` members, then `tarfile`). Nothing is extracted to disk, so no archive member can write
outside a folder; still, an archive naming a path that climbs out (`../x`, `/etc/x`, or a link to one) is refused
as hostile, since no Debian tool builds such a package. No jax, no torch.

A .deb is an `ar` archive: `debian-binary` ("2.0\\n"), `control.tar.*` (the `control` file: Package, Version, ...)
and `data.tar.*` (the files, named `./usr/...`). Debian compresses them with xz (bookworm), gzip, bzip2 or zstd;
Python's tarfile reads all but zstd before Python 3.14, which is refused with a line saying so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import lzma
import os
import posixpath
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

AR_MAGIC = b"!<arch>\n"
AR_HEADER_BYTES = 60  # name 16, mtime 12, uid 6, gid 6, mode 8, size 10, terminator "`\n" (ar(5))
AR_NAME_BYTES, AR_SIZE_FIELD = 16, slice(48, 58)
AR_TERMINATOR = b"`\n"
DEB_FORMAT = b"2.0\n"  # debian-binary: the only format dpkg has written since 1995
TAR_SUFFIXES = {".tar": "r:", ".tar.xz": "r:xz", ".tar.gz": "r:gz", ".tar.bz2": "r:bz2"}
# A single file we keep in memory may be at most this large: the biggest voice prompt is ~0.6 MB, so 64 MB is only
# ever a hostile or broken archive (an xz bomb announcing a huge member), never a prompt.
MAX_MEMBER_BYTES = 64 << 20
# `apt-get download` of a ~10 MB package: seconds on a mirror, minutes on a slow link; beyond this it hangs.
DOWNLOAD_TIMEOUT_S = 600
STDERR_CHARS = 300  # of apt-get's error output quoted in the one-line error


class PackageError(RuntimeError):
    """A package that cannot be fetched or read; the message is one line."""


@dataclasses.dataclass(frozen=True)
class DebContents:
    control: dict[str, str]  # the control file's fields (Package, Version, Architecture, Source, ...)
    files: dict[str, bytes]  # selected regular files, by path without the leading "./" (usr/share/...)


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ar_members(blob: bytes) -> dict[str, bytes]:
    """The members of an `ar` archive by name (GNU names end in '/', which is dropped)."""
    if not blob.startswith(AR_MAGIC):
        raise PackageError("not an ar archive (no '!<arch>' header)")
    members: dict[str, bytes] = {}
    offset = len(AR_MAGIC)
    while offset < len(blob):
        header = blob[offset:offset + AR_HEADER_BYTES]
        if len(header) < AR_HEADER_BYTES or header[58:60] != AR_TERMINATOR:
            raise PackageError(f"damaged ar header at byte {offset}")
        name = header[:AR_NAME_BYTES].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[AR_SIZE_FIELD].decode("ascii").strip())
        except ValueError:
            raise PackageError(f"damaged ar header at byte {offset} (size field)") from None
        start = offset + AR_HEADER_BYTES
        if start + size > len(blob):
            raise PackageError(f"truncated: member {name!r} needs {size} bytes, {len(blob) - start} left")
        members[name] = blob[start:start + size]
        offset = start + size + (size % 2)  # members are padded to an even offset
    return members


def safe_member_path(name: str) -> str:
    """A tar member's path relative to the package root ("./usr/x" → "usr/x"); refuses absolute paths and '..'."""
    if name.startswith("/") or ".." in name.split("/"):
        raise PackageError(f"unsafe path in archive: {name!r} (absolute or climbing out with '..')")
    path = posixpath.normpath(name)
    return "" if path == "." else path


def _tar_member(members: dict[str, bytes], stem: str) -> tuple[str, bytes]:
    for name, payload in members.items():
        if name.startswith(stem + ".tar"):
            return name, payload
    raise PackageError(f"no {stem}.tar.* member (members: {', '.join(members) or 'none'})")


def _open_tar(name: str, payload: bytes) -> tarfile.TarFile:
    suffix = name[name.index(".tar"):]
    if suffix == ".tar.zst":
        raise PackageError(f"{name} is zstd-compressed, which this Python's tarfile cannot read (3.14+ can)")
    if suffix not in TAR_SUFFIXES:
        raise PackageError(f"{name}: unknown compression")
    return tarfile.open(fileobj=io.BytesIO(payload), mode=TAR_SUFFIXES[suffix])


def _read_tar(name: str, payload: bytes, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """The regular files of a tar member for which wanted(path) is true; every member's path is checked."""
    files: dict[str, bytes] = {}
    try:
        with _open_tar(name, payload) as archive:
            for member in archive:
                path = safe_member_path(member.name)
                if member.issym() or member.islnk():
                    # Links are never followed here; one that points outside the package (absolute, or climbing
                    # above its root) is refused all the same: it is how a hostile archive escapes an extractor.
                    # A symlink resolves beside itself, a hard link from the archive's root.
                    base = posixpath.dirname(path) if member.issym() else ""
                    resolved = posixpath.normpath(posixpath.join(base, member.linkname))
                    if member.linkname.startswith("/") or resolved == ".." or resolved.startswith("../"):
                        raise PackageError(f"unsafe link in archive: {member.name!r} -> {member.linkname!r}")
                    continue
                if not member.isfile() or not wanted(path):
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise PackageError(f"member {member.name!r} is {member.size} bytes, more than any prompt")
                files[path] = archive.extractfile(member).read()
    except (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError) as err:
        raise PackageError(f"{name} is damaged: {err}") from None
    return files


def parse_control(text: str) -> dict[str, str]:
    """deb822 fields of one paragraph; continuation lines (leading space) are joined to their field."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    return fields


def read_deb(path: str | os.PathLike, wanted: Callable[[str], bool]) -> DebContents:
    """The control fields and the files wanted(path) selects of the .deb at `path` (in memory)."""
    try:
        blob = Path(path).read_bytes()
    except OSError as err:
        raise PackageError(f"cannot read {path}: {err.strerror or err}") from None
    members = ar_members(blob)
    if members.get("debian-binary") != DEB_FORMAT:
        raise PackageError("not a Debian binary package (debian-binary is not '2.0')")
    control_name, control_payload = _tar_member(members, "control")
    control_files = _read_tar(control_name, control_payload, lambda p: p == "control")
    if "control" not in control_files:
        raise PackageError(f"{control_name} holds no control file")
    control = parse_control(control_files["control"].decode("utf-8", "replace"))
    data_name, data_payload = _tar_member(members, "data")
    return DebContents(control, _read_tar(data_name, data_payload, wanted))


def apt_download(package: str, folder: str | os.PathLike, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Runs `apt-get download PACKAGE` (no root needed) in a private subfolder of `folder` and moves the .deb into
    `folder` once apt-get has finished: an interrupted download leaves no .deb behind. Returns its path."""
    folder = Path(folder)
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise PackageError("apt-get not found (not a Debian/Ubuntu machine?)")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as scratch:
        try:
            done = subprocess.run([apt_get, "download", package], cwd=scratch, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise PackageError(f"apt-get download {package} did not finish in {timeout:.0f} s") from None
        except OSError as err:
            raise PackageError(f"apt-get could not run: {err.strerror or err}") from None
        debs = sorted(Path(scratch).glob(f"{package}_*.deb"))
        if done.returncode != 0 or len(debs) != 1:
            detail = " ".join((done.stderr or done.stdout).split())[-STDERR_CHARS:] or f"exit {done.returncode}"
            raise PackageError(f"apt-get download {package} failed: {detail}")
        final = folder / debs[0].name
        os.replace(debs[0], final)
    return final
