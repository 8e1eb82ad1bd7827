"""Load test of `imgcls serve`: throughput, latency, errors by kind, memory, and what batching buys.

    python scripts/bench_serve.py --run runs/latest                  # 1, 8 and 32 clients, 30 s each
    python scripts/bench_serve.py --model exports/x/ --seconds 60 --clients 1,8,32
    python scripts/bench_serve.py --run runs/latest --seconds 3 --warmup 0.5 --clients 1,4 --json   # the tests

Starts the server on loopback (a process of its own, as a user would), then
for each number of concurrent clients sends real JPEGs for a bounded time
(the run's validation images, else generated ones), with one request in
`--bad-every` a bad upload (not an image, truncated, a decompression bomb,
empty, the wrong content type, over the upload limit). Prints throughput,
p50/p95/p99 latency of the good requests, answers by kind and status, the
server's RSS after warm-up and after each level, and the mean batch size.
The baseline, in the same invocation: a second server with --max-batch 1
(no batching) under the largest number of clients; and 1 client against 8
and 32 on the batching server. Timings depend on the machine; the ratios
are the result.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

UPLOAD_LIMIT_MB = 2  # small, so the over-limit upload costs little to send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path)
    source.add_argument("--model", type=Path)
    parser.add_argument("--seconds", type=float, default=30, help="per number of clients")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of each load before it is measured")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--bad-every", type=int, default=25, help="one request in this many is a bad upload")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5)
    parser.add_argument("--jpeg-size", type=int, default=0, help="side of the JPEGs sent (default: the model's input size x 1.5)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unbatched server (--max-batch 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]

    target = ["--model", str(args.model)] if args.model else [str(args.run)]
    results = {"levels": [], "server": {}}
    with Server(target, args.max_batch, args.max_wait_ms) as server:
        meta = server.get("/metadata")
        side = args.jpeg_size or int(max(meta["input"]["height"], meta["input"]["width"]) * 1.5)
        good = real_jpegs(args.run, side, meta["input"]["channels"])
        bad = bad_uploads(good[0])
        results["server"] = {"model": meta["model"], "kind": meta["kind"], "input": meta["input"],
                             "rss_after_warmup_mb": server.rss_mb(), "jpeg_side": side}
        for n in clients:
            results["levels"].append(drive(server, n, args.seconds, good, bad, args.bad_every, label=f"batched, {n} clients",
                                           warmup=args.warmup))
    if not args.no_baseline:
        with Server(target, 1, 0) as server:
            results["levels"].append(drive(server, max(clients), args.seconds, good, bad, args.bad_every,
                                           label=f"unbatched (--max-batch 1), {max(clients)} clients", warmup=args.warmup))
    results["ratios"] = ratios(results["levels"], clients)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        report(results)


class Server:
    """`imgcls serve ... --port 0` in a process of its own; the port read from its start line."""

    def __init__(self, target: list[str], max_batch: int, max_wait_ms: float):
        self.command = [sys.executable, "-m", "imgcls", "serve", *target, "--port", "0", "--max-batch", str(max_batch),
                        "--max-wait-ms", str(max_wait_ms), "--max-upload-mb", str(UPLOAD_LIMIT_MB)]

    def __enter__(self) -> Server:
        self.process = subprocess.Popen(self.command, stderr=subprocess.PIPE, text=True)
        lines = []
        for line in self.process.stderr:
            lines.append(line)
            found = re.search(r"http://([\d.]+):(\d+)/", line)
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                break
        else:
            raise SystemExit("the server did not start:\n" + "".join(lines))
        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()  # keep its pipe drained
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)

    def get(self, path: str) -> dict:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def real_jpegs(run: Path | None, side: int, channels: int, count: int = 64) -> list[bytes]:
    """JPEGs of the run's validation images at `side` x `side` (generated photos-like noise without a run)."""
    images = []
    if run is not None:
        with open(run.resolve() / "split.csv", encoding="utf-8", newline="") as f:
            paths = [row["path"] for row in csv.DictReader(f) if row["subset"] == "val"][:count]
        root = _data_dir(run)
        images = [Image.open(Path(root) / path).convert("L" if channels == 1 else "RGB") for path in paths
                  if (Path(root) / path).is_file()]
    rng = np.random.default_rng(0)
    while len(images) < 8:
        pixels = np.clip(rng.normal(128, 60, (side, side, 3)), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.resize((side, side), Image.BILINEAR).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def _data_dir(run: Path) -> str:
    import yaml

    config = yaml.safe_load((run.resolve() / "config.yaml").read_text(encoding="utf-8"))
    return config.get("imgcls", {}).get("data_dir") or config["data"]["dir"]


def bad_uploads(jpeg: bytes) -> dict[str, tuple[bytes, str]]:
    """Each kind of bad upload: (body, content type). Every one must get a 4xx."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
    return {
        "not an image": (b"%PDF-1.4 not a picture at all" * 10, "image/jpeg"),
        "truncated": (jpeg[: len(jpeg) // 2], "image/jpeg"),
        "decompression bomb": (bomb, "image/png"),
        "empty": (b"", "image/jpeg"),
        "wrong content type": (jpeg, "text/plain"),
        "over the upload limit": (os.urandom(UPLOAD_LIMIT_MB * 2**20 + 1024), "image/jpeg"),
    }


def drive(server: Server, clients: int, seconds: float, good: list[bytes], bad: dict, bad_every: int, label: str,
          warmup: float = 0) -> dict:
    """`clients` threads, each sending one request after another for `seconds`, over keep-alive connections, after
    `warmup` seconds of the same load that are not counted (RSS then says what this load costs, and what grows)."""
    if warmup:
        drive(server, clients, warmup, good, bad, bad_every, label)
    rss_start = server.rss_mb()
    before = server.get("/healthz")
    latencies: list[float] = []
    answers: dict[str, dict[int, int]] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    bad_kinds = itertools.cycle(bad)  # shared: every kind comes round, whatever the number of clients

    def client(index: int) -> None:
        connection = connect(server)
        sent = index
        while time.perf_counter() < deadline:
            sent += 1
            is_bad = sent % bad_every == 0
            with lock:
                kind = next(bad_kinds) if is_bad else "good"
            body, content_type = bad[kind] if is_bad else (good[sent % len(good)], "image/jpeg")
            started = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                status = response.status
                if response.getheader("connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException):
                status = 0  # the connection failed: counted, and a new one opened
                connection.close()
                connection = connect(server)
            elapsed = time.perf_counter() - started
            with lock:
                answers.setdefault(kind, {}).setdefault(status, 0)
                answers[kind][status] += 1
                if kind == "good" and status == 200:
                    latencies.append(elapsed)
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    after = server.get("/healthz")
    batches, images = after["batches"] - before["batches"], after["images"] - before["images"]
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "label": label, "clients": clients, "seconds": round(elapsed, 1), "good_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1), "answers": answers,
        "server_5xx": sum(n for statuses in answers.values() for status, n in statuses.items() if status >= 500),
        "failed_connections": sum(statuses.get(0, 0) for statuses in answers.values()),
        "bad_not_4xx": sum(n for kind, statuses in answers.items() if kind != "good"
                           for status, n in statuses.items() if not 400 <= status < 500),
        "good_not_200": sum(n for status, n in answers.get("good", {}).items() if status != 200),
        "mean_batch": round(images / batches, 2) if batches else 0.0, "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(server.rss_mb(), 1),
    }


def connect(server: Server) -> http.client.HTTPConnection:
    """A keep-alive connection without Nagle's delay, as HTTP clients set up (urllib3, curl): http.client sends a
    request's headers and body in two writes, and the second would wait for the server's delayed ACK (40 ms)."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def ratios(levels: list[dict], clients: list[int]) -> dict:
    batched = {level["clients"]: level["good_per_second"] for level in levels if level["label"].startswith("batched")}
    out = {}
    if 1 in batched:
        out.update({f"throughput_{n}_clients_over_1": round(batched[n] / batched[1], 2) for n in batched if n != 1 and batched[1]})
    unbatched = [level for level in levels if level["label"].startswith("unbatched")]
    if unbatched and unbatched[0]["good_per_second"]:
        n = unbatched[0]["clients"]
        out[f"batched_over_unbatched_at_{n}_clients"] = round(batched.get(n, 0) / unbatched[0]["good_per_second"], 2)
    return out


def report(results: dict) -> None:
    s = results["server"]
    print(f"model {s['model']} ({s['kind']}, input {s['input']['height']}x{s['input']['width']}x{s['input']['channels']}), "
          f"JPEGs of {s['jpeg_side']}x{s['jpeg_side']}; server RSS after warm-up {s['rss_after_warmup_mb']:.0f} MB")
    print(f"{'':44} {'good/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'batch':>6} {'5xx':>4} {'bad!4xx':>7} "
          f"{'RSS MB start -> end':>20}")
    for level in results["levels"]:
        print(f"{level['label']:44} {level['good_per_second']:8.1f} {level['p50_ms']:8.1f} {level['p95_ms']:8.1f} "
              f"{level['p99_ms']:8.1f} {level['mean_batch']:6.1f} {level['server_5xx']:4d} {level['bad_not_4xx']:7d} "
              f"{level['rss_start_mb']:11.0f} -> {level['rss_end_mb']:4.0f}")
    for level in results["levels"]:
        print(f"  {level['label']}: " + "; ".join(f"{kind} {statuses}" for kind, statuses in level["answers"].items()))
    bad = sum(n for level in results["levels"] for kind, statuses in level["answers"].items() if kind != "good"
              for n in statuses.values())
    wrong = sum(level["bad_not_4xx"] for level in results["levels"])
    errors = sum(level["server_5xx"] + level["failed_connections"] for level in results["levels"])
    print(f"bad uploads: {bad}, of which answered other than 4xx: {wrong}; 5xx and failed connections: {errors}")
    for name, value in results["ratios"].items():
        print(f"{name.replace('_', ' ')}: {value:.2f}x")


if __name__ == "__main__":
    main()
