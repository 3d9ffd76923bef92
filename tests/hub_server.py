"""A small server on 127.0.0.1 that speaks the parts of the Hugging Face Hub HTTP API that
`huggingface_hub` (2.4), `datasets` (5.2) and `transformers` (5.23) call when `HF_ENDPOINT` points
at it. Repositories live in memory as commits (full file trees) and named refs.

Endpoints (as `huggingface_hub` builds them; revisions arrive URL-encoded, `refs%2Fconvert%2Fparquet`):
    GET  /api/{models|datasets}/{repo}[/revision/{rev}]       repo_info / dataset_info / model_info
    GET  /api/{models|datasets}/{repo}/tree/{rev}[/{path}]    list_repo_tree (?recursive=, ?expand=)
    POST /api/{models|datasets}/{repo}/paths-info/{rev}       get_paths_info (form: paths=..., expand=...)
    GET  /api/{models|datasets}/{repo}/refs                   list_repo_refs
    HEAD/GET /datasets/{repo}/resolve/{rev}/{path}            hf_hub_download of a dataset file
    HEAD/GET /{repo}/resolve/{rev}/{path}                     hf_hub_download of a model file
Misses answer 404 with the `X-Error-Code` header the Hub sends (RepoNotFound, RevisionNotFound,
EntryNotFound), which `huggingface_hub.utils.hf_raise_for_status` turns into its typed errors.
Every request is logged in `HubServer.requests` as (method, path) so tests can assert what was asked.

Why not PyPI `olah`: it is a caching mirror of the real Hub; its offline mode serves what it has
mirrored or local git mirrors, which needs git repositories with LFS-free blobs on disk and an
extra virtualenv with its own pins. This stdlib server starts in milliseconds, needs no install,
and lets a fixture name exact commit ids (the pinned revisions of jobs.data.registry are real
Hub commit ids, and the server must answer for exactly those).
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_BRANCH = "main"


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """One Hub repository: commits (sha -> {path: bytes}) and refs (name -> sha)."""

    repo_type: str  # "model" | "dataset"
    repo_id: str
    source: str = ""  # where the layout was copied from (documented listings), for readers of the fixture
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], refs: tuple[str, ...] = (DEFAULT_BRANCH,), sha: str | None = None) -> str:
        """Add a commit holding exactly `files`; point `refs` at it. `sha`: a real Hub commit id to serve."""
        if sha is None:
            digest = hashlib.sha1()
            for path in sorted(files):
                digest.update(path.encode() + b"\0" + git_blob_sha(files[path]).encode())
            sha = digest.hexdigest()
        if len(sha) != 40:
            raise ValueError(f"a commit id has 40 hex digits, got {sha!r}")
        self.commits[sha] = dict(files)
        for ref in refs:
            self.refs[ref] = sha
        return sha

    def resolve(self, revision: str | None) -> str | None:
        revision = revision or DEFAULT_BRANCH
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        return None


class _Miss(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class HubServer:
    """`with HubServer(repos) as hub:` serves `repos` at `hub.url` (use it as HF_ENDPOINT)."""

    def __init__(self, repos: list[Repo]):
        self.repos: dict[tuple[str, str], Repo] = {(r.repo_type, r.repo_id): r for r in repos}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    # ---- lookups -------------------------------------------------------------------------------
    def find(self, repo_type: str, segments: list[str]) -> tuple[Repo, list[str]]:
        """The repo named by the first one or two path segments, and the remaining segments."""
        for n in (2, 1):
            if len(segments) >= n:
                repo = self.repos.get((repo_type, "/".join(segments[:n])))
                if repo is not None:
                    return repo, segments[n:]
        raise _Miss(404, "RepoNotFound", f"Repository {'/'.join(segments[:2])!r} ({repo_type}) not found")

    @staticmethod
    def files_at(repo: Repo, revision: str) -> tuple[str, dict[str, bytes]]:
        sha = repo.resolve(revision)
        if sha is None:
            raise _Miss(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha, repo.commits[sha]


def _tree_entries(files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
    """Files and directories under `prefix` (the Hub's tree format: type, oid, size, path)."""
    prefix = prefix.strip("/")
    base = prefix + "/" if prefix else ""
    entries: dict[str, dict] = {}
    for path, data in sorted(files.items()):
        if not path.startswith(base):
            continue
        rest = path[len(base):].split("/")
        for depth in range(1, len(rest)):
            directory = base + "/".join(rest[:depth])
            if depth == 1 or recursive:
                entries.setdefault(directory, {"type": "directory", "oid": hashlib.sha1(directory.encode()).hexdigest(),
                                               "size": 0, "path": directory})
            if not recursive:
                break
        if len(rest) == 1 or recursive:
            entries[path] = _file_entry(path, data)
    return list(entries.values())


def _file_entry(path: str, data: bytes) -> dict:
    return {"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": path}


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # ---- dispatch ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.hub.log(method, self.path)
        raw = [s for s in parts.path.split("/") if s]
        try:
            if raw[:1] == ["api"] and len(raw) >= 2 and raw[1] in ("models", "datasets"):
                self._api(method, raw[1][:-1], raw[2:], parse_qs(parts.query))
            elif "resolve" in raw:
                repo_type = "dataset" if raw[0] == "datasets" else "model"
                self._resolve(method, repo_type, raw[1:] if repo_type == "dataset" else raw)
            else:
                raise _Miss(404, "", f"no such endpoint: {parts.path}")
        except _Miss as miss:
            self._send_json({"error": miss.message}, status=miss.status, error_code=miss.code, head=method == "HEAD")

    # ---- /api/... ------------------------------------------------------------------------------
    def _api(self, method: str, repo_type: str, segments: list[str], query: dict) -> None:
        repo, rest = self.hub.find(repo_type, [unquote(s) for s in segments[:2]] + segments[2:])
        if not rest or rest[0] == "revision":
            revision = unquote(rest[1]) if len(rest) > 1 else DEFAULT_BRANCH
            sha, files = self.hub.files_at(repo, revision)
            self._send_json({
                "id": repo.repo_id, "_id": repo.repo_id, "sha": sha, "private": False, "disabled": False,
                "gated": False, "downloads": 0, "likes": 0, "tags": [],
                "lastModified": "2024-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": p} for p in sorted(files)],
            })
        elif rest[0] == "tree" and len(rest) >= 2:
            sha, files = self.hub.files_at(repo, unquote(rest[1]))
            path = unquote("/".join(rest[2:]))
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            if path and path not in files and not any(p.startswith(path.rstrip("/") + "/") for p in files):
                raise _Miss(404, "EntryNotFound", f"{path} does not exist on {sha}")
            if path in files:
                self._send_json([_file_entry(path, files[path])])
            else:
                self._send_json(_tree_entries(files, path, recursive))
        elif rest[0] == "paths-info" and len(rest) >= 2 and method == "POST":
            sha, files = self.hub.files_at(repo, unquote(rest[1]))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            if "json" in (self.headers.get("Content-Type") or ""):
                paths = json.loads(body).get("paths", [])
            else:
                paths = parse_qs(body).get("paths", [])
            out = []
            for p in paths:
                p = p.strip("/")
                if p in files:
                    out.append(_file_entry(p, files[p]))
                elif any(f.startswith(p + "/") for f in files):
                    out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p})
            self._send_json(out)
        elif rest[0] == "refs":
            branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                        for n, s in repo.refs.items() if not n.startswith("refs/")]
            converts = [{"name": n.split("/")[-1], "ref": n, "targetCommit": s}
                        for n, s in repo.refs.items() if n.startswith("refs/convert/")]
            self._send_json({"branches": branches, "converts": converts, "tags": []})
        else:
            raise _Miss(404, "", f"unsupported API call: {'/'.join(rest)}")

    # ---- .../resolve/{rev}/{path} --------------------------------------------------------------
    def _resolve(self, method: str, repo_type: str, segments: list[str]) -> None:
        i = segments.index("resolve")
        repo, _ = self.hub.find(repo_type, [unquote(s) for s in segments[:i]])
        if len(segments) < i + 3:
            raise _Miss(404, "EntryNotFound", "no file named")
        sha, files = self.hub.files_at(repo, unquote(segments[i + 1]))
        path = unquote("/".join(segments[i + 2:]))
        if path not in files:  # the Hub names the commit of a miss too (huggingface_hub caches the absence)
            self._send_json({"error": f"{path} does not exist on {sha}"}, status=404, error_code="EntryNotFound",
                            head=method == "HEAD", headers={"X-Repo-Commit": sha})
            return
        data = files[path]
        etag = git_blob_sha(data)
        start, end, status = 0, len(data), 200
        byte_range = self.headers.get("Range")
        if byte_range and byte_range.startswith("bytes="):
            first, _, last = byte_range[len("bytes="):].partition("-")
            start = int(first or 0)
            end = min(len(data), int(last) + 1) if last else len(data)
            if start >= len(data) and len(data) > 0:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:end]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", sha)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    # ---- helpers -------------------------------------------------------------------------------
    def _send_json(self, obj, status: int = 200, error_code: str = "", head: bool = False,
                   headers: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if error_code:
            self.send_header("X-Error-Code", error_code)
            self.send_header("X-Error-Message", obj.get("error", ""))
        self.end_headers()
        if not head:
            self.wfile.write(body)
