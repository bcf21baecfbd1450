"""A small Hugging Face Hub on 127.0.0.1 for the tests, and the client side that talks to it.

`FakeHub` holds the state and the server; `HubRequestHandler` answers each request. They speak
the subset of the Hub HTTP API that huggingface_hub's client uses (what huggingface_hub 2.4.0
sends, checked against its source): create repo, branches, preupload, commit (ndjson, with
regular and LFS files), the git-lfs batch API, repo info, tree listing, HEAD/GET resolve.
It is honest: content is stored and served back byte for byte, every commit gets a new
commit id over its parent and its files, LFS uploads are checked against their sha256,
and what does not exist is a 404 with the Hub's error code. It also serves plain files
under ``/static/`` (a stand-in for a download server, for ``import-official URL``).

``HF_ENDPOINT``/``HF_HUB_DISABLE_XET`` are read when huggingface_hub is imported, so the
client side runs in a fresh interpreter: :func:`hub_env` gives the environment for a
subprocess, and :func:`client_pool` a spawned process pool with that environment,
which keeps this pytest process (and the other test files) untouched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import urllib.parse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import get_context

TOKEN = "hf_simsiamhubTESTtoken0123456789"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool = False
    branches: dict = field(default_factory=dict)  # branch -> commit id
    commits: dict = field(default_factory=dict)  # commit id -> {path: (blob key, is_lfs)}


class FakeHub:
    """The Hub's state (repos, commits, blobs) and an HTTP server over it."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> content (regular and LFS files alike)
        self.static: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        # Set hold to an Event to keep every file download waiting (after `downloading` is set)
        # until it is set: a download in progress, for as long as a test needs one.
        self.hold: threading.Event | None = None
        self.downloading = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), HubRequestHandler)
        self.server.daemon_threads = True
        self.server.hub = self  # what each HubRequestHandler reaches as self.server.hub
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def commit(self, repo: Repo, branch: str, files: dict, summary: str) -> str:
        parent = repo.branches.get(branch, "")
        listing = json.dumps(sorted((p, k) for p, (k, _) in files.items()))
        oid = hashlib.sha1(f"{parent}\n{summary}\n{listing}\n{time.time_ns()}".encode()).hexdigest()
        repo.commits[oid] = dict(files)
        repo.branches[branch] = oid
        return oid

    def resolve(self, repo: Repo, rev: str) -> str | None:
        """A branch name or a (full) commit id -> the commit id."""
        if rev in repo.branches:
            return repo.branches[rev]
        return rev if rev in repo.commits else None


def _split_repo(path: str) -> tuple[str, str]:
    """``org/name/rest`` -> (``org/name``, ``rest``); model ids here always have an org."""
    parts = path.split("/", 2)
    return "/".join(parts[:2]), parts[2] if len(parts) > 2 else ""


class HubRequestHandler(BaseHTTPRequestHandler):
    """One request to the :class:`FakeHub` that ``self.server.hub`` holds, routed by :attr:`ROUTES`."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    # --- helpers -------------------------------------------------------------------------------
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers=None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str, message: str):
        self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {TOKEN}"

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
            return None
        return repo

    def _commit_of(self, repo_id: str, repo: Repo, rev: str) -> str | None:
        oid = self.hub.resolve(repo, urllib.parse.unquote(rev))
        if oid is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev} in {repo_id}")
        return oid

    def _dispatch(self):
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        self.hub.requests.append((self.command, path))
        with self.hub.lock:
            # git-lfs batch: POST /{org}/{name}.git/info/lfs/objects/batch
            if self.command == "POST" and url.path.endswith(".git/info/lfs/objects/batch"):
                return self._lfs_batch()
            for prefix, route in self.ROUTES[self.command]:
                if path.startswith(prefix):
                    return route(self, path[len(prefix) :])
            return self._error(404, "EntryNotFound", f"no route {self.path}")

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    # --- routes: each gets the path after its prefix ---------------------------------------------
    def _create_repo(self, rest):
        if not self._authorized():
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        body = json.loads(self._body() or b"{}")
        if body.get("type", "model") != "model":
            return self._error(400, "BadRequest", "this test hub holds model repos only")
        repo_id = "/".join(p for p in (body.get("organization"), body["name"]) if p)
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:
            return self._json(409, {"error": "You already created this model repo", "url": url})
        repo = self.hub.repos[repo_id] = Repo(private=bool(body.get("private")))
        attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        key = hashlib.sha256(attributes).hexdigest()
        self.hub.blobs[key] = attributes
        self.hub.commit(repo, "main", {".gitattributes": (key, False)}, "initial commit")
        return self._json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, rest):
        self._body()
        return self._json(200, {"errors": [], "warnings": []})

    def _api_models(self, rest):
        """GET info / tree; POST preupload, commit, branch (``/api/models/`` stripped)."""
        repo_id, rest = _split_repo(rest)
        if self.command == "POST":
            body = self._body()
        repo = self._repo(repo_id)
        if repo is None:
            return
        action, _, rev_path = rest.partition("/")
        if self.command in ("GET", "HEAD") and action in ("", "revision"):
            oid = self._commit_of(repo_id, repo, rev_path or "main")
            if oid is None:
                return
            siblings = [{"rfilename": p} for p in sorted(repo.commits[oid])]
            return self._json(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": oid,
                    "private": repo.private,
                    "siblings": siblings,
                    "tags": [],
                    "downloads": 0,
                    "likes": 0,
                },
            )
        if self.command == "GET" and action == "tree":
            rev, _, sub = rev_path.partition("/")
            oid = self._commit_of(repo_id, repo, rev)
            if oid is None:
                return
            entries = []
            for p, (key, lfs) in sorted(repo.commits[oid].items()):
                if sub and not p.startswith(sub.rstrip("/") + "/"):
                    continue
                data = self.hub.blobs[key]
                entry = {"type": "file", "path": p, "size": len(data), "oid": git_blob_sha1(data)}
                if lfs:
                    entry["lfs"] = {"oid": key, "size": len(data), "pointerSize": 134}
                entries.append(entry)
            return self._json(200, entries)
        if self.command != "POST":
            return self._error(404, "EntryNotFound", f"no route {self.path}")
        if not self._authorized():
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        if action == "preupload":
            oid = self._commit_of(repo_id, repo, rev_path)
            if oid is None:
                return
            files = []
            for f in json.loads(body)["files"]:
                lfs = f["path"].endswith(".safetensors") or f["size"] > 10_000_000
                files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
            return self._json(200, {"files": files, "commitOid": oid})
        if action == "commit":
            return self._commit(repo_id, repo, rev_path, body)
        if action == "branch":
            branch = rev_path
            if branch in repo.branches:
                return self._error(409, "Conflict", f"Reference already exists: refs/heads/{branch}")
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            oid = self._commit_of(repo_id, repo, start)
            if oid is None:
                return
            repo.branches[branch] = oid
            return self._json(200, {})
        return self._error(404, "EntryNotFound", f"no route {self.path}")

    def _commit(self, repo_id, repo, rev, body):
        rev = urllib.parse.unquote(rev)
        if rev not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        files = dict(repo.commits[repo.branches[rev]])
        summary = ""
        for line in body.decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                parent = value.get("parentCommit")
                if parent and parent != repo.branches[rev]:
                    return self._error(412, "PreconditionFailed", "parentCommit is not the branch head")
            elif key == "file":
                data = (
                    base64.b64decode(value["content"])
                    if value.get("encoding") == "base64"
                    else value["content"].encode()
                )
                blob = hashlib.sha256(data).hexdigest()
                self.hub.blobs[blob] = data
                files[value["path"]] = (blob, False)
            elif key == "lfsFile":
                if value["oid"] not in self.hub.blobs or len(self.hub.blobs[value["oid"]]) != value["size"]:
                    return self._error(400, "BadRequest", f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = (value["oid"], True)
            elif key == "deletedFile":
                if value["path"] not in files:
                    return self._error(404, "EntryNotFound", f"cannot delete {value['path']}: not in {rev}")
                del files[value["path"]]
            else:
                return self._error(400, "BadRequest", f"unsupported commit operation {key}")
        oid = self.hub.commit(repo, rev, files, summary)
        return self._json(
            200,
            {
                "commitUrl": f"{self.hub.url}/{repo_id}/commit/{oid}",
                "commitOid": oid,
                "success": True,
                "pullRequestUrl": None,
            },
        )

    def _lfs_batch(self):
        body = json.loads(self._body())
        if not self._authorized():
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.blobs:  # already stored: no upload action
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}/{obj['size']}", "header": {}}
                }
            objects.append(entry)
        return self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_upload(self, rest):
        oid, size = rest.split("/")
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid or len(data) != int(size):
            return self._error(400, "BadRequest", "content does not match its oid/size")
        self.hub.blobs[oid] = data
        return self._send(200)

    def _static(self, rest):
        data = self.hub.static.get(rest)
        if data is None:
            return self._error(404, "EntryNotFound", f"{rest} not found")
        return self._send(200, data, content_type="application/octet-stream")

    def _resolve(self, rest):
        """HEAD/GET /{org}/{name}/resolve/{rev}/{file}."""
        repo_id, rest = _split_repo(rest.lstrip("/"))
        if not rest.startswith("resolve/"):
            return self._error(404, "EntryNotFound", f"no route {self.path}")
        repo = self._repo(repo_id)
        if repo is None:
            return
        rev, _, file = rest[len("resolve/") :].partition("/")
        oid = self._commit_of(repo_id, repo, rev)
        if oid is None:
            return
        if file not in repo.commits[oid]:
            return self._error(404, "EntryNotFound", f"{file} does not exist at {rev}")
        key, lfs = repo.commits[oid][file]
        data = self.hub.blobs[key]
        etag = key if lfs else git_blob_sha1(data)
        headers = {"X-Repo-Commit": oid, "ETag": f'"{etag}"'}
        if lfs:
            headers.update({"X-Linked-Etag": f'"{key}"', "X-Linked-Size": str(len(data))})
        if self.command == "GET" and self.hub.hold is not None:
            self.hub.downloading.set()
            self.hub.hold.wait(300)
        return self._send(200, data, headers, content_type="application/octet-stream")

    # method -> (path prefix, route), first match wins; what matches none is a 404
    ROUTES = {
        "GET": [("/api/models/", _api_models), ("/static/", _static), ("/", _resolve)],
        "HEAD": [("/api/models/", _api_models), ("/static/", _static), ("/", _resolve)],
        "POST": [
            ("/api/repos/create", _create_repo),
            ("/api/validate-yaml", _validate_yaml),
            ("/api/models/", _api_models),
        ],
        "PUT": [("/lfs-upload/", _lfs_upload)],
    }


# --- the client side: a fresh interpreter with the Hub's environment --------------------------


def hub_env(hub_url: str, hf_home, *, offline: bool = False, token: bool = True) -> dict:
    """Environment for a client process talking to the test hub (its own HF_HOME cache)."""
    env = dict(os.environ)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(key, None)
    env.update(
        HF_ENDPOINT=hub_url,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        OMP_NUM_THREADS="1",
    )
    if token:
        env["HF_TOKEN"] = TOKEN
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def _set_env(env: dict) -> None:
    os.environ.clear()
    os.environ.update(env)


def _warm_up() -> None:
    import huggingface_hub  # noqa: F401
    import torchvision  # noqa: F401

    import simsiam_hub.hub.loading  # noqa: F401


def client_pool(env: dict) -> ProcessPoolExecutor:
    """One spawned worker process whose environment is ``env`` before anything is imported.

    It starts importing at once, in the background, while the tests go on.
    """
    pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=_set_env, initargs=(env,))
    pool.env = env
    pool.submit(_warm_up)
    return pool
