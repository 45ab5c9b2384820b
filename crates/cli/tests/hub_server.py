#!/usr/bin/env python3
"""A stand-in for the Hugging Face hub and torchvision's download host, on 127.0.0.1, for effnet's tests.

    hub_server.py ROOT PORT_FILE LOG_FILE

Serves the repositories under ROOT/hub/ORG/NAME/ with the hub's API shapes: `HEAD|GET /ORG/NAME/resolve/REV/FILE`
answers with `X-Repo-Commit`, an `ETag` (the git blob sha1 of small files) or, for LFS files (weights),
`X-Linked-Etag` (their sha256) and `X-Linked-Size` with a 302 to `/cdn/SHA256` on a second port (another
origin, as the hub's CDN is another host), which serves the bytes with `Range` support. Errors carry `X-Error-Code` as the hub's do: `RepoNotFound`,
`EntryNotFound`, `GatedRepo`. A repository with a file `.gated` needs `Authorization: Bearer secret`; one with
`.corrupt` serves its weights with one byte changed; one with `.cut` breaks the first transfer of its weights
off halfway. `GET /models/FILE` serves ROOT/torchvision/FILE. Every request is logged to LOG_FILE as
`METHOD PATH auth=yes|no range=...`. The port is written to PORT_FILE once the server listens.
"""
import hashlib, os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT, PORT_FILE, LOG_FILE = sys.argv[1:4]
LOCK = threading.Lock()
CUT_DONE = set()
LFS_SUFFIXES = (".safetensors", ".bin", ".pth")
CDN_PORT = [0]


def commit_of(repo):
    return hashlib.sha1(("commit " + repo).encode()).hexdigest()


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def log(self):
        auth = "yes" if self.headers.get("Authorization") else "no"
        with LOCK, open(LOG_FILE, "a") as f:
            f.write(f"{self.command} {self.path} auth={auth} range={self.headers.get('Range', '-')}\n")

    def reply(self, status, headers=(), body=b""):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def do_HEAD(self):
        self.handle_any()

    def do_GET(self):
        self.handle_any()

    def handle_any(self):
        self.log()
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] == "cdn" and len(parts) == 2:
            return self.cdn(parts[1])
        if parts[0] == "models" and len(parts) == 2:
            return self.serve_file(os.path.join(ROOT, "torchvision", parts[1]), None)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        self.reply(404, [("X-Error-Code", "RepoNotFound")])

    def resolve(self, repo, revision, name):
        folder = os.path.join(ROOT, "hub", repo)
        if not os.path.isdir(folder):
            # As the hub: 401 to an anonymous request (it may be private), 404 to an authenticated one.
            status = 404 if self.headers.get("Authorization") else 401
            return self.reply(status, [("X-Error-Code", "RepoNotFound")])
        if os.path.exists(os.path.join(folder, ".gated")) and self.headers.get("Authorization") != "Bearer secret":
            return self.reply(401, [("X-Error-Code", "GatedRepo")])
        if revision not in ("main", commit_of(repo)):
            return self.reply(404, [("X-Error-Code", "RevisionNotFound")])
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return self.reply(404, [("X-Error-Code", "EntryNotFound"), ("X-Repo-Commit", commit_of(repo))])
        data = open(path, "rb").read()
        headers = [("X-Repo-Commit", commit_of(repo))]
        if name.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            blob = os.path.join(ROOT, "cdn", sha)
            os.makedirs(os.path.dirname(blob), exist_ok=True)
            served = bytearray(data)
            if os.path.exists(os.path.join(folder, ".corrupt")):
                served[len(served) // 2] ^= 0xFF
            with open(blob, "wb") as f:
                f.write(served)
            if os.path.exists(os.path.join(folder, ".cut")):
                open(blob + ".cut", "w").close()
            headers += [("X-Linked-Etag", f'"{sha}"'), ("X-Linked-Size", str(len(data))),
                        ("ETag", f'"{git_blob_sha1(data)}"'),
                        ("Location", f"http://127.0.0.1:{CDN_PORT[0]}/cdn/{sha}")]
            return self.reply(302, headers)
        headers += [("ETag", f'"{git_blob_sha1(data)}"'), ("Content-Type", "application/json")]
        self.reply(200, headers, data)

    def cdn(self, sha):
        path = os.path.join(ROOT, "cdn", sha)
        cut = None
        with LOCK:
            if os.path.exists(path + ".cut") and sha not in CUT_DONE:
                CUT_DONE.add(sha)
                cut = os.path.getsize(path) // 2
        self.serve_file(path, cut)

    def serve_file(self, path, cut):
        if not os.path.isfile(path):
            return self.reply(404)
        data = open(path, "rb").read()
        start, status = 0, 200
        header = self.headers.get("Range", "")
        if header.startswith("bytes=") and header.endswith("-"):
            start, status = int(header[6:-1]), 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


def main():
    cdn = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    CDN_PORT[0] = cdn.server_address[1]
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(PORT_FILE + ".part", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(PORT_FILE + ".part", PORT_FILE)
    server.serve_forever()


if __name__ == "__main__":
    main()
