"""hack/thirdparty_crds.py: the pinned upstream CRDs are found where they exist, fetched with
their checksums checked, and a machine that cannot fetch them says so in one line and succeeds."""

from __future__ import annotations

import hashlib
import io
import urllib.error
from pathlib import Path

import pytest

from tests.support.thirdparty import locator

CONTENT = {
    name: f"kind: CustomResourceDefinition # {name}\n".encode() for name in locator.locked_files()
}
# A lock for CONTENT: the same names and URLs, CONTENT's digests.
LOCKED = {
    name: (hashlib.sha256(CONTENT[name]).hexdigest(), url)
    for name, (_, url) in locator.locked_files().items()
}


def test_the_lock_pins_each_file_by_commit_and_sha256() -> None:
    locked = locator.locked_files()
    assert len(locked) == 6
    for name, (digest, url) in locked.items():
        assert len(digest) == 64 and int(digest, 16) >= 0
        commit = url.split("/")[5]
        assert len(commit) == 40, url  # a commit, never a branch that moves
        assert url.startswith("https://raw.githubusercontent.com/") and url.endswith(name)


def test_the_files_ci_reads_are_the_locked_ones() -> None:
    shared = locator.SHARED
    if not shared.is_dir():
        pytest.skip(f"{shared} is absent (only CI and this project's machines have it)")
    for name, (digest, _) in locator.locked_files().items():
        assert hashlib.sha256((shared / name).read_bytes()).hexdigest() == digest, name


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No variable, no ../shared: only the fetched cache (in tmp_path) may hold them."""
    monkeypatch.delenv("EVAL_THIRDPARTY_CRDS", raising=False)
    monkeypatch.setattr(locator, "SHARED", tmp_path / "shared")
    monkeypatch.setattr(locator, "CACHE", tmp_path / "cache")
    return tmp_path / "cache"


def serve(monkeypatch: pytest.MonkeyPatch, content: dict[str, bytes]) -> list[str]:
    asked: list[str] = []

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        asked.append(url)
        return io.BytesIO(content[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(locator.urllib.request, "urlopen", urlopen)
    return asked


def test_fetched_files_are_checked_and_kept(
    nowhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(locator, "locked_files", lambda: LOCKED)
    asked = serve(monkeypatch, CONTENT)
    assert locator.find_folder() is None
    assert locator.fetch() == 0
    assert len(asked) == 6 and locator.find_folder() == nowhere
    assert "checksums verified" in capsys.readouterr().out
    assert locator.fetch() == 0 and len(asked) == 6  # present and right: not asked again


def test_a_file_that_differs_from_the_lock_is_an_error_and_not_kept(
    nowhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    serve(monkeypatch, CONTENT)  # not the locked bytes
    assert locator.fetch() == 1
    assert "the lock says" in capsys.readouterr().out
    assert locator.find_folder() is None and not list(nowhere.glob("*.yaml"))


def test_without_network_one_line_says_how_to_get_them(
    nowhere: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(url: str, timeout: float) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(locator.urllib.request, "urlopen", refused)
    assert locator.fetch() == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "not fetched" in line and "EVAL_THIRDPARTY_CRDS" in line


def test_a_folder_named_by_the_variable_comes_first(
    nowhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locator, "locked_files", lambda: LOCKED)
    chosen = tmp_path / "mine"
    chosen.mkdir()
    for name in LOCKED:
        (chosen / name).write_bytes(CONTENT[name])
    monkeypatch.setenv("EVAL_THIRDPARTY_CRDS", str(chosen))
    assert locator.find_folder() == chosen
    first = chosen / next(iter(CONTENT))
    first.write_bytes(b"kind: CustomResourceDefinition # another version\n")
    assert locator.find_folder() is None  # a file that is not the locked one: not used
    first.unlink()  # an incomplete folder is not used either
    assert locator.find_folder() is None
