"""fetch() against a real HTTP server on 127.0.0.1: mirrors, checksums, truncation, caching, zips."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import socket
import threading
import time
import zipfile
from pathlib import Path

import pytest

from s2s_course.data.download import DataUnavailableError, cache_dir, fetch, read_lines

BODY = "Zwei junge weiße Männer sind im Freien.\nTwo young, White males are outside.\n".encode() * 50


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def all_files(root: Path) -> list[str]:
    """Every file under root (temporary files included), as sorted relative paths."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.routes[path] = (kind, body); kind: ok, truncate, slow, hangup; else 404."""

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        kind, body = self.server.routes.get(self.path, ("404", b""))
        if kind == "404":
            self.send_error(404, "Not Found")
            return
        if kind == "hangup":  # close the connection without any response
            self.close_connection = True
            return
        if kind == "slow":
            time.sleep(0.6)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        # "truncate" promises more bytes than it sends, then closes the connection (HTTP/1.0).
        self.send_header("Content-Length", str(len(body) + (1000 if kind == "truncate" else 0)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


class Server:
    def __init__(self, httpd: http.server.ThreadingHTTPServer) -> None:
        self.httpd = httpd

    def add(self, path: str, body: bytes, kind: str = "ok") -> str:
        self.httpd.routes[path] = (kind, body)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.routes, httpd.requests = {}, []
    httpd.handle_error = lambda request, address: None  # the "slow" client hangs up: ignore
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Server(httpd)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def closed_url() -> str:
    """A URL on a local port where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing/here.txt"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch) -> Path:
    """No local data folder, and a private cache, whatever the caller's environment says."""
    monkeypatch.delenv("S2S_COURSE_DATA", raising=False)
    monkeypatch.setenv("S2S_COURSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ----------------------------------------------------------------------------- downloads


def test_good_file_is_downloaded_verified_and_cached(server, tmp_path):
    url = server.add("/data/train.de.gz", BODY)
    cache = tmp_path / "mycache"
    path = fetch("corpus/train.de.gz", [url], sha(BODY), cache_dir=cache, timeout=2)
    assert path == cache / "corpus" / "train.de.gz"
    assert path.read_bytes() == BODY
    assert server.requests == ["/data/train.de.gz"]
    assert all_files(cache) == ["corpus/train.de.gz"]  # no temporary file left over
    again = fetch("corpus/train.de.gz", [url], sha(BODY).upper(), cache_dir=cache, timeout=2)
    assert again == path
    assert server.requests == ["/data/train.de.gz"]  # the second call did not hit the server


def test_cache_location_comes_from_the_environment(server, tmp_path, monkeypatch, isolated_env):
    assert cache_dir() == isolated_env
    url = server.add("/a.txt", BODY)
    assert fetch("x/a.txt", [url], sha(BODY), timeout=2) == isolated_env / "x" / "a.txt"
    monkeypatch.delenv("S2S_COURSE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "s2s_course"


def test_outdated_cached_copy_is_downloaded_again(server, tmp_path):
    url = server.add("/a.txt", BODY)
    stale = tmp_path / "c" / "x" / "a.txt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an older release\n")
    assert fetch("x/a.txt", [url], sha(BODY), cache_dir=tmp_path / "c", timeout=2) == stale
    assert stale.read_bytes() == BODY
    assert server.requests == ["/a.txt"]


def test_wrong_checksum_fails_and_leaves_nothing(server, tmp_path):
    url = server.add("/a.txt", BODY)
    pinned = sha(b"the version the course was written for")
    with pytest.raises(DataUnavailableError) as info:
        fetch("x/a.txt", [url], pinned, cache_dir=tmp_path / "c", timeout=2)
    msg = str(info.value)
    assert "checksum mismatch" in msg and pinned in msg and sha(BODY) in msg
    assert all_files(tmp_path / "c") == []


def test_404_on_first_url_then_mirror_succeeds(server, tmp_path):
    missing = server.url("/primary/a.txt")
    mirror = server.add("/mirror/a.txt", BODY)
    path = fetch("x/a.txt", [missing, mirror], sha(BODY), cache_dir=tmp_path / "c", timeout=2)
    assert path.read_bytes() == BODY
    assert server.requests == ["/primary/a.txt", "/mirror/a.txt"]


def test_checksum_mismatch_on_first_url_then_mirror_succeeds(server, tmp_path):
    bad = server.add("/primary/a.txt", BODY + b"extra line\n")
    good = server.add("/mirror/a.txt", BODY)
    path = fetch("x/a.txt", [bad, good], sha(BODY), cache_dir=tmp_path / "c", timeout=2)
    assert path.read_bytes() == BODY and all_files(tmp_path / "c") == ["x/a.txt"]


def test_truncated_body_fails_cleanly_then_mirror_succeeds(server, tmp_path):
    cut = server.add("/cut/a.txt", BODY[:100], kind="truncate")
    with pytest.raises(DataUnavailableError, match="truncated download: got 100 of 1100 bytes"):
        fetch("x/a.txt", [cut], sha(BODY), cache_dir=tmp_path / "c", timeout=2)
    assert all_files(tmp_path / "c") == []
    good = server.add("/mirror/a.txt", BODY)
    path = fetch("x/a.txt", [cut, good], sha(BODY), cache_dir=tmp_path / "c", timeout=2)
    assert path.read_bytes() == BODY and all_files(tmp_path / "c") == ["x/a.txt"]


def test_empty_body_is_rejected(server, tmp_path):
    url = server.add("/empty.txt", b"")
    with pytest.raises(DataUnavailableError, match=r"empty response \(0 bytes\)"):
        fetch("x/a.txt", [url], sha(b""), cache_dir=tmp_path / "c", timeout=2)
    assert all_files(tmp_path / "c") == []


def test_all_mirrors_failing_give_one_clear_error(server, tmp_path, closed_url):
    missing = server.url("/gone/train.de.gz")
    slow = server.add("/slow/train.de.gz", BODY, kind="slow")
    hangup = server.add("/hangup/train.de.gz", BODY, kind="hangup")
    urls = [closed_url, missing, slow, hangup, "xyz://127.0.0.1/train.de.gz"]
    start = time.perf_counter()
    with pytest.raises(DataUnavailableError) as info:
        fetch("multi30k/train.de.gz", urls, sha(BODY), cache_dir=tmp_path / "c", timeout=0.2,
              note="Expected layout: multi30k/<split>.<lang>.gz")
    assert time.perf_counter() - start < 1.0
    msg = str(info.value)
    assert "multi30k/train.de.gz" in msg and sha(BODY) in msg
    assert f"{closed_url}: connection refused" in msg
    assert f"{missing}: HTTP 404 Not Found" in msg
    assert f"{slow}: timeout after 0.2 s" in msg
    assert f"{hangup}: RemoteDisconnected" in msg
    assert "xyz://127.0.0.1/train.de.gz: URL error: unknown url type: xyz" in msg
    assert "S2S_COURSE_DATA" in msg and f"download {closed_url}" in msg
    assert "/path/to/data/multi30k/train.de.gz" in msg
    assert "Expected layout: multi30k/<split>.<lang>.gz" in msg
    assert all_files(tmp_path / "c") == []


def test_no_urls_at_all(tmp_path):
    with pytest.raises(DataUnavailableError, match="no URLs were given"):
        fetch("x/a.txt", [], sha(BODY), cache_dir=tmp_path / "c")


def test_cache_folder_that_cannot_be_created(tmp_path, server):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    url = server.add("/a.txt", BODY)
    with pytest.raises(DataUnavailableError, match="cannot create the cache folder"):
        fetch("x/a.txt", [url], sha(BODY), cache_dir=blocker / "cache", timeout=2)
    assert server.requests == []


# ----------------------------------------------------------------------------- local folder


def test_local_data_dir_wins_without_any_request(server, tmp_path, monkeypatch):
    url = server.add("/a.txt", BODY)
    local = tmp_path / "data" / "x" / "a.txt"
    local.parent.mkdir(parents=True)
    local.write_bytes(BODY)
    assert fetch("x/a.txt", [url], sha(BODY), data_dir=tmp_path / "data") == local
    monkeypatch.setenv("S2S_COURSE_DATA", str(tmp_path / "data"))
    assert fetch("x/a.txt", [url], sha(BODY)) == local
    assert server.requests == []
    assert all_files(tmp_path / "cache") == []


def test_local_data_dir_without_the_file_falls_back_to_download(server, tmp_path):
    url = server.url("/missing.txt")
    with pytest.raises(DataUnavailableError) as info:
        fetch("x/a.txt", [url], sha(BODY), data_dir=tmp_path / "data", timeout=2)
    msg = str(info.value)
    assert f"{tmp_path / 'data' / 'x' / 'a.txt'} (not there)" in msg
    assert f"export S2S_COURSE_DATA={tmp_path / 'data'}" in msg
    server.add("/missing.txt", BODY)
    assert fetch("x/a.txt", [url], sha(BODY), data_dir=tmp_path / "data", timeout=2).read_bytes() == BODY


def test_corrupt_local_copy_is_a_clear_error(server, tmp_path):
    url = server.add("/a.txt", BODY)
    local = tmp_path / "data" / "x" / "a.txt"
    local.parent.mkdir(parents=True)
    local.write_bytes(BODY[:-1])
    with pytest.raises(DataUnavailableError) as info:
        fetch("x/a.txt", [url], sha(BODY), data_dir=tmp_path / "data")
    msg = str(info.value)
    assert str(local) in msg and sha(BODY) in msg and sha(BODY[:-1]) in msg
    assert server.requests == []


# ----------------------------------------------------------------------------- zip archives


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


KOR = "Go.\t가.\tCC-BY 2.0 (France) Attribution: tatoeba.org #1 & #2\n".encode()


def test_zip_member_is_extracted_and_its_checksum_checked(server, tmp_path):
    url = server.add("/kor-eng.zip", make_zip({"_about.txt": b"about", "kor.txt": KOR}))
    cache = tmp_path / "c"
    path = fetch("tatoeba/kor.txt", [url], sha(KOR), cache_dir=cache, extract="kor.txt", timeout=2)
    assert path == cache / "tatoeba" / "kor.txt" and path.read_bytes() == KOR
    assert all_files(cache) == ["tatoeba/kor.txt"]  # neither the archive nor a temp file is kept
    # the archive is rebuilt upstream (new member order, a folder prefix): same member, still fine
    other = server.add("/v2/kor-eng.zip", make_zip({"kor-eng/kor.txt": KOR, "_about.txt": b"v2"}))
    path.unlink()
    assert fetch("tatoeba/kor.txt", [other], sha(KOR), cache_dir=cache, extract="kor.txt",
                 timeout=2).read_bytes() == KOR


def test_zip_problems_are_reported_per_url(server, tmp_path):
    no_member = server.add("/a.zip", make_zip({"_about.txt": b"about"}))
    changed = server.add("/b.zip", make_zip({"kor.txt": KOR + b"new line\n"}))
    emptied = server.add("/e.zip", make_zip({"kor.txt": b""}))
    not_zip = server.add("/c.zip", b"<html>Please enable cookies</html>")
    with pytest.raises(DataUnavailableError) as info:
        fetch("t/kor.txt", [no_member, changed, emptied, not_zip], sha(KOR), cache_dir=tmp_path / "c",
              extract="kor.txt", timeout=2)
    msg = str(info.value)
    assert "member 'kor.txt' of a zip archive" in msg
    assert "zip archive has no member 'kor.txt' (members: ['_about.txt'])" in msg
    assert "checksum mismatch for member 'kor.txt'" in msg
    assert f"{emptied}: zip member 'kor.txt' is empty" in msg
    assert "not a valid zip archive" in msg
    assert "extract 'kor.txt' from the zip archive" in msg
    assert all_files(tmp_path / "c") == []


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs, match", [
    (dict(relpath="../a.txt"), "relpath must be a relative path"),
    (dict(relpath="/etc/a.txt"), "relpath must be a relative path"),
    (dict(relpath=""), "relpath must be a relative path"),
    (dict(sha256="abc"), "sha256 must be 64 hexadecimal characters, got 'abc'"),
    (dict(urls="http://example.org/a.txt"), "urls must be a list"),
    (dict(timeout=0), "timeout must be > 0 seconds, got 0"),
])
def test_bad_arguments_name_the_argument(kwargs, match, tmp_path):
    args = dict(relpath="x/a.txt", urls=["http://127.0.0.1:9/a.txt"], sha256=sha(BODY), timeout=1)
    args.update(kwargs)
    relpath, urls, digest = args.pop("relpath"), args.pop("urls"), args.pop("sha256")
    with pytest.raises(ValueError, match=match):
        fetch(relpath, urls, digest, cache_dir=tmp_path / "c", **args)


# ----------------------------------------------------------------------------- read_lines


def test_read_lines_plain_and_gzip(tmp_path):
    text = "\ufeffeins\r\nzwei\n\nvier \u2028 mit Trenner\nfünf\n"
    expected = ["eins", "zwei", "", "vier \u2028 mit Trenner", "fünf"]
    plain = tmp_path / "a.txt"
    plain.write_bytes(text.encode("utf-8"))
    packed = tmp_path / "a.txt.gz"
    packed.write_bytes(gzip.compress(text.encode("utf-8")))
    assert read_lines(plain) == expected
    assert read_lines(packed) == expected
    no_final_newline = tmp_path / "b.txt"
    no_final_newline.write_text("a\nb", encoding="utf-8")
    assert read_lines(no_final_newline) == ["a", "b"]
    trailing_blank = tmp_path / "c.txt"
    trailing_blank.write_text("a\n\n", encoding="utf-8")
    assert read_lines(trailing_blank) == ["a", ""]
    empty = tmp_path / "d.txt"
    empty.write_bytes(b"")
    assert read_lines(empty) == []
