"""Get a data file once, check it, and keep it: local folder, then cache, then the internet.

The course's corpora are a few MB each. ``fetch`` looks for a file in three places, in order:

1. a local folder given as ``data_dir`` or ``$S2S_COURSE_DATA`` (offline machines, CI);
2. the cache, ``$S2S_COURSE_CACHE`` or ``~/.cache/s2s_course`` (second and later runs);
3. each URL in turn (primary, then mirrors).

Every copy is checked against a pinned sha256, so a chapter never trains on a file that changed
upstream or was cut short. A download is streamed into a temporary file next to its final place
and renamed into place only once it is complete and verified: an interrupted or corrupt download
never leaves a file that a later run would trust. When everything fails, ONE
``DataUnavailableError`` says which file, what was tried and why it failed, and how to put a copy
in place by hand.

Stdlib only (urllib, hashlib, gzip, zipfile, tempfile), so it works on Colab and in CI unchanged.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

DATA_ENV = "S2S_COURSE_DATA"    # local folder with the corpora (layout: <relpath> under it)
CACHE_ENV = "S2S_COURSE_CACHE"  # where downloads are kept
# Some hosts (manythings.org) refuse urllib's default User-Agent, so present a browser-like one.
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/124.0 Safari/537.36 (s2s-course data loader)")
CHUNK = 1 << 16
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class DataUnavailableError(RuntimeError):
    """A data file could not be found, verified or downloaded; the message says how to fix it."""


def cache_dir() -> Path:
    """The download cache: ``$S2S_COURSE_CACHE`` if set, else ``~/.cache/s2s_course``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "s2s_course"


_default_cache_dir = cache_dir  # `fetch` has an argument of the same name


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks (the corpora do not need to fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file, gzip-compressed or plain, without their line endings.

    Splits on ``\\n`` only (``str.splitlines`` would also split on rare characters such as
    U+2028 inside a sentence and break the line-by-line alignment of parallel files). A final
    newline does not add an empty last line; empty lines inside the file are kept, so line i of
    a source file still matches line i of its translation. A trailing ``\\r`` (Windows line
    endings) and a leading byte-order mark are removed.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip magic number: trust the content, not the file name
        data = gzip.decompress(data)
    text = data.decode("utf-8-sig")
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# ----------------------------------------------------------------------------- downloading


class _Rejected(Exception):
    """A download arrived but is unusable (truncated, wrong checksum, missing zip member)."""


def _describe_error(err: BaseException, timeout: float) -> str:
    """A short human reason for a failed request: 'HTTP 404 Not Found', 'timeout after 5 s'..."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        if not isinstance(err.reason, BaseException):
            return f"URL error: {err.reason}"
        err = err.reason  # the socket error underneath
    if isinstance(err, TimeoutError):
        return f"timeout after {timeout:g} s"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    return f"{type(err).__name__}: {err}"


def _download_to(url: str, dest: Path, timeout: float) -> None:
    """Stream ``url`` into the file ``dest``; raise on HTTP errors and short or empty bodies."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        expected = response.headers.get("Content-Length")
        received = 0
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
            received += len(block)
    # http.client stops quietly when the server closes early, so compare with Content-Length here.
    if expected is not None and expected.isdigit() and received != int(expected):
        raise _Rejected(f"truncated download: got {received} of {expected} bytes")
    if received == 0:
        raise _Rejected("empty response (0 bytes)")


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    """Copy ``member`` of the zip ``archive`` into ``dest`` (matched by full name, else basename)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            matches = [n for n in names if n == member] or \
                      [n for n in names if PurePosixPath(n).name == member]
            if not matches:
                raise _Rejected(f"zip archive has no member {member!r} (members: {names})")
            with zf.open(matches[0]) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
    except zipfile.BadZipFile as err:
        raise _Rejected(f"not a valid zip archive ({err})") from None


def _try_url(url: str, final: Path, sha256: str, extract: str | None, timeout: float) -> None:
    """Download one URL into ``final`` via temporary files; leave nothing behind on failure."""
    tmp_paths: list[Path] = []

    def new_tmp(suffix: str) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
        os.close(fd)
        tmp_paths.append(Path(name))
        return tmp_paths[-1]

    try:
        payload = new_tmp(".part")
        _download_to(url, payload, timeout)
        if extract is not None:
            member = new_tmp(".member")
            _extract_member(payload, extract, member)
            payload = member
            if payload.stat().st_size == 0:
                raise _Rejected(f"zip member {extract!r} is empty")
        got = sha256_of(payload)
        if got != sha256:
            what = f"member {extract!r}" if extract else "file"
            raise _Rejected(f"checksum mismatch for {what}: expected sha256 {sha256}, got {got}")
        os.replace(payload, final)  # atomic on the same filesystem: readers see all or nothing
    finally:
        for tmp in tmp_paths:
            tmp.unlink(missing_ok=True)


def _fix_instructions(relpath: str, urls: list[str], extract: str | None,
                      data_root: Path | None, cached: Path) -> str:
    """The 'how to fix it' part of the error: what to download, and where to put it."""
    source = urls[0] if urls else "the file's source"
    what = f"download {source} and extract {extract!r} from the zip archive" if extract \
        else f"download {source}"
    folder = data_root if data_root is not None else "/path/to/data"
    return (
        f"To fix it, on a machine with internet access {what}, save it as\n"
        f"    {folder}/{relpath}\n"
        f"and point the course at that folder before loading the data:\n"
        f"    export {DATA_ENV}={folder}\n"
        f"    (in a notebook: import os; os.environ[{DATA_ENV!r}] = '{folder}')\n"
        f"or put the file at the cache path {cached}.")


def fetch(relpath: str, urls: list[str], sha256: str, *, cache_dir: str | os.PathLike | None = None,
          data_dir: str | os.PathLike | None = None, timeout: float = 30,
          extract: str | None = None, note: str | None = None) -> Path:
    """Return a local, sha256-verified copy of the data file ``relpath`` (e.g. ``"multi30k/val.de.gz"``).

    Looks in ``data_dir`` (default ``$S2S_COURSE_DATA``), then the cache (default ``cache_dir()``),
    then downloads from ``urls`` in order. ``extract`` names a member of a zip archive: the URLs
    then point at the archive, ``sha256`` is the member's (archives are often rebuilt while the
    member stays the same) and the member is what gets stored at ``relpath``. ``note`` is extra
    text for the error message (e.g. the expected folder layout).
    """
    rel = PurePosixPath(relpath)
    if not relpath or rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"relpath must be a relative path inside the data folder, got {relpath!r}")
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256.lower()):
        raise ValueError(f"sha256 must be 64 hexadecimal characters, got {sha256!r}")
    if isinstance(urls, str):
        raise ValueError(f"urls must be a list of URLs, got the single string {urls!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    sha256 = sha256.lower()
    urls = list(urls)

    # 1. A local folder wins, and must hold exactly the pinned file.
    if data_dir is None and os.environ.get(DATA_ENV, "").strip():
        data_dir = os.environ[DATA_ENV].strip()
    data_root = Path(data_dir).expanduser() if data_dir is not None else None
    local = data_root.joinpath(*rel.parts) if data_root is not None else None
    if local is not None and local.is_file():
        got = sha256_of(local)
        if got != sha256:
            raise DataUnavailableError(
                f"The local copy {local} of {relpath} does not match the course's pinned version:\n"
                f"    expected sha256 {sha256}\n    got      sha256 {got}\n"
                f"It is corrupt or a different release: replace it with the file from "
                f"{urls[0] if urls else 'its source'}, or remove it to download a fresh copy.")
        return local

    # 2. A verified copy in the cache (a corrupt or outdated one is simply downloaded again).
    root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    cached = root.joinpath(*rel.parts)
    if cached.is_file() and sha256_of(cached) == sha256:
        return cached

    # 3. Download, trying each mirror in turn.
    failures: list[str] = []
    to_try = urls
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        failures.append(f"cannot create the cache folder {cached.parent}: {err}")
        to_try = []
    for url in to_try:
        log.info("downloading %s from %s", relpath, url)
        try:
            _try_url(url, cached, sha256, extract, timeout)
            return cached
        except _Rejected as err:
            failures.append(f"{url}: {err}")
        except (OSError, http.client.HTTPException, ValueError) as err:  # URLError is an OSError
            failures.append(f"{url}: {_describe_error(err, timeout)}")

    # 4. Nothing worked: one error that says everything.
    tried = "\n".join(f"  - {f}" for f in failures) if failures else "  (no URLs were given)"
    where = f"{local} (not there)" if local is not None else f"${DATA_ENV} is not set"
    message = (
        f"Could not get the data file {relpath!r}"
        + (f" (member {extract!r} of a zip archive)" if extract else "")
        + f", sha256 {sha256}.\n"
        f"Local folder: {where}. Cache: {cached} (not there or outdated).\n"
        f"Downloads tried:\n{tried}\n"
        + _fix_instructions(relpath, urls, extract, data_root, cached)
        + (f"\n{note}" if note else ""))
    raise DataUnavailableError(message)
