#!/usr/bin/env python3
"""Load test of `effnet serve` on the loopback interface, bounded in requests and time.

Phases (each reported in the JSON it prints):
  load     CLIENTS concurrent clients send REQUESTS predictions of the given images over keep-alive
           connections, each request with its own x-request-id; every answer must carry that id, and no
           request may be lost or answered twice. Reports throughput and p50/p99 latency.
  hostile  a decompression bomb (a tiny PNG whose header claims 100000 x 100000 pixels), garbage bytes,
           a truncated PNG and an over-large body each get a 4xx, and the server then still answers.
  flood    (--flood, against a server started with a small --queue) CLIENTS clients send at once: some
           get 503 with Retry-After, and a request after the flood succeeds.
  predict  (--effnet BIN --weights W) `effnet predict --batch B` on the same images, timed on N and on a
           few images so that its start-up cancels out; reports the server's throughput relative to it.

usage: loadtest.py URL IMAGE... [--clients 32] [--requests 256] [--time-limit 300] [--flood]
                   [--effnet BIN --weights W --threads T --batch B]"""

import argparse
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zlib


def connection(url, timeout=60):
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def post(conn, path, body, request_id=None, content_type="application/octet-stream"):
    headers = {"Content-Type": content_type}
    if request_id:
        headers["x-request-id"] = request_id
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, dict(response.getheaders()), data


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def load(url, images, clients, requests, deadline):
    bodies = [open(path, "rb").read() for path in images]
    lock = threading.Lock()
    next_request = [0]
    latencies, answers, statuses, errors = [], {}, {}, []

    def client(index):
        conn = connection(url)
        while time.time() < deadline:
            with lock:
                n = next_request[0]
                if n >= requests:
                    return
                next_request[0] += 1
            request_id = f"load-{n}"
            started = time.perf_counter()
            try:
                status, headers, data = post(conn, "/v1/predict", bodies[n % len(bodies)], request_id)
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(f"{request_id}: {e}")
                conn.close()
                conn = connection(url)
                continue
            elapsed = time.perf_counter() - started
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(elapsed)
                echoed = json.loads(data).get("id") if data else None
                answers.setdefault(request_id, []).append((echoed, headers.get("x-request-id")))

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    sent = next_request[0]
    wrong = [r for r, a in answers.items() if any(e != r or h != r for e, h in a)]
    return {
        "clients": clients,
        "sent": sent,
        "answered": sum(len(a) for a in answers.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "lost": sent - len(answers),
        "answered_twice": sum(1 for a in answers.values() if len(a) > 1),
        "wrong_id": len(wrong),
        "errors": errors[:5],
        "seconds": wall,
        "images_per_second": statuses.get(200, 0) / wall if wall > 0 else 0.0,
        "p50_ms": 1000 * percentile(latencies, 50) if latencies else None,
        "p99_ms": 1000 * percentile(latencies, 99) if latencies else None,
    }


def png_claiming(width, height):
    """A valid-looking PNG whose header claims width x height pixels, with one tiny compressed row."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def hostile(url, image):
    conn = connection(url)
    good = open(image, "rb").read()
    cases = {
        "bomb": png_claiming(100_000, 100_000),
        "garbage": os.urandom(4096),
        "truncated": good[: len(good) // 3],
        "empty": b"",
    }
    out = {}
    for name, body in cases.items():
        status, _, data = post(conn, "/v1/predict", body, f"hostile-{name}")
        out[name] = {"status": status, "error": json.loads(data).get("error") if data else None}
    # A body that announces 64 MiB: the server answers from the Content-Length alone, before the body.
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as raw:
        raw.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: effnet\r\nx-request-id: hostile-big\r\n"
                    b"Content-Length: 67108864\r\n\r\n" + b"\0" * 4096)
        line = raw.makefile("rb").readline().decode("latin-1").split()
        out["too_big"] = {"status": int(line[1]) if len(line) > 1 else None}
    status, _, _ = post(connection(url), "/v1/predict", good, "hostile-after")
    out["after"] = {"status": status}
    return out


def flood(url, image, clients):
    body = open(image, "rb").read()
    results = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(i):
        conn = connection(url)
        barrier.wait()
        status, headers, _ = post(conn, "/v1/predict", body, f"flood-{i}")
        with lock:
            results.append((status, headers.get("retry-after")))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.5)
    status, _, _ = post(connection(url), "/v1/predict", body, "flood-after")
    return {
        "ok": sum(1 for s, _ in results if s == 200),
        "refused": sum(1 for s, _ in results if s == 503),
        "refused_with_retry_after": sum(1 for s, r in results if s == 503 and r),
        "other": sum(1 for s, _ in results if s not in (200, 503)),
        "after": status,
    }


def predict_throughput(effnet, weights, images, count, threads, batch):
    """Images per second of `effnet predict` on `count` images, start-up cancelled out."""
    with tempfile.TemporaryDirectory() as folder:
        runs = [0]

        def run(n):
            # Copies, not links: predict reads a file reached twice only once.
            runs[0] += 1
            files = []
            for i in range(n):
                src = images[i % len(images)]
                dst = os.path.join(folder, f"{runs[0]}-{i:05d}{os.path.splitext(src)[1]}")
                shutil.copyfile(src, dst)
                files.append(dst)
            started = time.perf_counter()
            subprocess.run([effnet, "--threads", str(threads), "predict", "--weights", weights,
                            "--batch", str(batch), "--json", *files],
                           check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter() - started
        few = max(batch, 8)
        small = min(run(few) for _ in range(2))
        large = run(count)
        return (count - few) / (large - small)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--time-limit", type=float, default=300)
    parser.add_argument("--flood", action="store_true")
    parser.add_argument("--effnet")
    parser.add_argument("--weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    deadline = time.time() + args.time_limit
    report = {}
    if args.flood:
        report["flood"] = flood(args.url, args.images[0], args.clients)
    else:
        report["load"] = load(args.url, args.images, args.clients, args.requests, deadline)
        report["hostile"] = hostile(args.url, args.images[0])
        if args.effnet and args.weights:
            rate = predict_throughput(args.effnet, args.weights, args.images, args.requests,
                                      args.threads, args.batch)
            report["predict"] = {
                "images_per_second": rate,
                "server_over_predict": report["load"]["images_per_second"] / rate,
            }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
