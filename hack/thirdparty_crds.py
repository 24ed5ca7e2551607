"""The upstream cert-manager and Prometheus Operator CRDs the tests need, found or fetched.

`python hack/thirdparty_crds.py fetch` (run by `make tools`) downloads the files pinned in
hack/thirdparty-crds.lock into .tools/thirdparty-crds/, checking each sha256. Where a folder with
them already exists (EVAL_THIRDPARTY_CRDS, or ../shared/thirdparty-crds as CI has it) nothing is
fetched; where the network does not reach GitHub it says so in one line and succeeds, and the tests
that need the files skip saying how to get them. A file whose checksum differs is an error.

The tests find the folder with `find_folder()` (tests/support/thirdparty.py): one order, here.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "hack" / "thirdparty-crds.lock"
CACHE = ROOT / ".tools" / "thirdparty-crds"
SHARED = ROOT.parent / "shared" / "thirdparty-crds"
HOW_TO_GET = (
    "`make tools` fetches them where github.com is reachable, "
    "or set EVAL_THIRDPARTY_CRDS to a folder holding them"
)


def locked_files() -> dict[str, tuple[str, str]]:
    """File name -> (sha256, URL), from the lock."""
    found = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, url = line.split()
            found[url.rsplit("/", 1)[1]] = (digest, url)
    return found


def _complete(folder: Path) -> bool:
    """Every locked file is there with its locked sha256 (about 1 MB to hash)."""
    return folder.is_dir() and all(
        (folder / name).is_file() and _sha256((folder / name).read_bytes()) == digest
        for name, (digest, _) in locked_files().items()
    )


def candidates() -> list[Path]:
    """Where the files may be, first match wins: the variable, ../shared, the fetched cache."""
    chosen = os.environ.get("EVAL_THIRDPARTY_CRDS")
    return ([Path(chosen)] if chosen else []) + [SHARED, CACHE]


def find_folder() -> Path | None:
    """The first folder holding every locked file as locked, or None."""
    return next((folder for folder in candidates() if _complete(folder)), None)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(timeout: float = 20.0) -> int:
    present = find_folder()
    if present is not None and present != CACHE:
        print(f"thirdparty CRDs: using {present}")
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    for name, (digest, url) in locked_files().items():
        target = CACHE / name
        if target.is_file() and _sha256(target.read_bytes()) == digest:
            continue
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            reason = getattr(error, "reason", error)
            print(
                f"thirdparty CRDs: not fetched ({url.split('/')[2]}: {reason}); "
                f"the tests that need them will skip. {HOW_TO_GET}."
            )
            return 0
        if _sha256(data) != digest:
            print(f"thirdparty CRDs: {url} has sha256 {_sha256(data)}, the lock says {digest}")
            return 1
        partial = target.with_suffix(".partial")
        partial.write_bytes(data)
        os.replace(partial, target)
    print(f"thirdparty CRDs: {len(locked_files())} files in {CACHE}, checksums verified")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit(f"usage: {sys.argv[0]} fetch")
    sys.exit(fetch())
