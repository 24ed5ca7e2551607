"""A stand-in Hugging Face Hub over real HTTP, for the dataset tests: the real huggingface_hub
client (HF_ENDPOINT pointed here) downloads from it as it does from huggingface.co.

It serves what the client asks of a dataset repo (read in huggingface_hub's file_download.py,
hf_api.py and utils/_http.py): `HEAD`/`GET /datasets/{repo}/resolve/{revision}/{path}` with the
`X-Repo-Commit` and `ETag` headers the client requires, `GET /api/datasets/{repo}/revision/
{revision}` (the commit a tag or branch points at) and `GET /api/datasets/{repo}/tree/{revision}`
(the files of a commit). Errors carry the `X-Error-Code` the client maps to its exceptions
(EntryNotFound, RevisionNotFound, RepoNotFound, GatedRepo): over http:// it recognises no other.
A revision in a URL may hold a quoted slash (refs%2Fconvert%2Fparquet), so paths are split
before they are unquoted.

A repo is a set of commits (40-hex ids), each a {path: bytes} snapshot, and refs (branches and
tags) naming commits. A gated repo answers 401 without `Authorization: Bearer <token>` and 403
with another token. Every request is recorded (method, path, the token it carried).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
from aiohttp import web

from tests.support.background import LoopbackServer


def parquet(rows: list[dict[str, Any]]) -> bytes:
    """`rows` as a parquet file's bytes, as the Hub serves a split."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    token: str | None = None  # gated: only this token may read it

    def add_commit(self, files: dict[str, bytes], *, refs: tuple[str, ...] = ("main",)) -> str:
        """A new commit holding exactly `files`; the refs named now point at it."""
        digest = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()  # noqa: S324
        self.commits[digest] = dict(files)
        for ref in refs:
            self.refs[ref] = digest
        return digest

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.refs.get(revision)


@dataclass(frozen=True)
class Asked:
    method: str
    path: str
    token: str | None


class StandInHub(LoopbackServer):
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Asked] = []

    def repo(self, repo_id: str, *, token: str | None = None) -> Repo:
        return self.repos.setdefault(repo_id, Repo(token=token))

    def downloads(self, name: str) -> int:
        """GETs of files named `name` (the file's last path segment)."""
        return sum(
            1
            for r in self.requests
            if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(f"/{name}")
        )

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    # --- HTTP -----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token if scheme.lower() == "bearer" and token else None
        raw_path = request.rel_url.raw_path
        self.requests.append(Asked(request.method, unquote(raw_path), token))
        parts = [unquote(p) for p in raw_path.split("/") if p]
        if len(parts) >= 6 and parts[0] == "datasets" and parts[3] == "resolve":
            repo_id, revision, path = f"{parts[1]}/{parts[2]}", parts[4], "/".join(parts[5:])
            return self._resolve(request, repo_id, revision, path, token)
        if (
            len(parts) >= 6
            and parts[:2] == ["api", "datasets"]
            and parts[4] in ("revision", "tree")
        ):
            repo_id, revision = f"{parts[2]}/{parts[3]}", parts[5]
            prefix = "/".join(parts[6:])
            return self._api(parts[4], repo_id, revision, prefix, token)
        return _error(404, "RepoNotFound", f"no route {raw_path}")

    def _open(
        self, repo_id: str, revision: str, token: str | None
    ) -> tuple[Repo, str] | web.Response:
        repo = self.repos.get(repo_id)
        if repo is None:
            return _error(404, "RepoNotFound", f"Repository Not Found for url: {repo_id}")
        if repo.token is not None and token != repo.token:
            status = 401 if token is None else 403
            return _error(status, "GatedRepo", f"Access to dataset {repo_id} is restricted.")
        commit = repo.resolve(revision)
        if commit is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, commit

    def _resolve(
        self, request: web.Request, repo_id: str, revision: str, path: str, token: str | None
    ) -> web.Response:
        opened = self._open(repo_id, revision, token)
        if isinstance(opened, web.Response):
            return opened
        repo, commit = opened
        data = repo.commits[commit].get(path)
        if data is None:
            return _error(404, "EntryNotFound", f"{path} does not exist", commit=commit)
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Content-Length": str(len(data)),
            "Content-Type": "application/octet-stream",
        }
        if request.method == "HEAD":
            return web.Response(status=200, headers=headers)
        return web.Response(status=200, body=data, headers=headers)

    def _api(
        self, what: str, repo_id: str, revision: str, prefix: str, token: str | None
    ) -> web.Response:
        opened = self._open(repo_id, revision, token)
        if isinstance(opened, web.Response):
            return opened
        repo, commit = opened
        files = repo.commits[commit]
        if what == "revision":
            siblings = [{"rfilename": path} for path in sorted(files)]
            return web.json_response({"id": repo_id, "sha": commit, "siblings": siblings})
        inside = {p: d for p, d in files.items() if not prefix or p.startswith(prefix + "/")}
        entries = [
            {"type": "file", "path": p, "oid": hashlib.sha1(d).hexdigest(), "size": len(d)}  # noqa: S324
            for p, d in sorted(inside.items())
        ]
        folders = sorted({p.rsplit("/", 1)[0] for p in inside if "/" in p})
        entries += [{"type": "directory", "path": f, "oid": "0" * 40} for f in folders]
        return web.json_response(entries)


def _error(status: int, code: str, message: str, *, commit: str | None = None) -> web.Response:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    if commit is not None:
        headers["X-Repo-Commit"] = commit
    return web.json_response({"error": message}, status=status, headers=headers)
