"""HTTP load generator for bench_api.py: a separate process, raw asyncio sockets.

Two modes, each printing one JSON object on stdout:

* ``open``: open loop at a fixed rate. Request ``i`` is *scheduled* at ``t0 + i / rate``
  and its latency is measured from that scheduled time, not from when a connection was
  free, so a slow server cannot hide its queueing delay (no coordinated omission).
  ``--connections`` keep-alive connections carry the requests; a request whose
  connection is busy waits, and that wait counts in its latency.
* ``closed``: each of ``--connections`` connections sends its next request as soon as
  the previous answer arrived, for ``--duration`` seconds: the sustained maximum
  throughput.

Bodies come from a JSON file (a list of JSON objects, sent round-robin). Only the
status line and ``Content-Length`` are parsed; any non-2xx answer or socket error counts
as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def build_requests(
    host: str, port: int, path: str, key: str | None, bodies: list[Any]
) -> list[bytes]:
    out = []
    for body in bodies:
        data = json.dumps(body).encode()
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
        ]
        if key:
            head.append(f"Authorization: Bearer {key}")
        out.append(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    return out


async def open_loop(args: argparse.Namespace, raws: list[bytes]) -> dict[str, Any]:
    total = int(args.rate * args.duration)
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    latencies: list[float] = [float("nan")] * total
    sent_at: list[float] = [0.0] * total
    errors = 0
    statuses: dict[str, int] = {}

    async def worker() -> None:
        nonlocal errors
        conn = Connection(args.host, args.port)
        while True:
            i, scheduled = await queue.get()
            if i < 0:
                conn.close()
                return
            try:
                status = await conn.request(raws[i % len(raws)])
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if not 200 <= status < 300:
                    errors += 1
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                conn.close()
            latencies[i] = time.perf_counter() - scheduled

    workers = [asyncio.create_task(worker()) for _ in range(args.connections)]
    t0 = time.perf_counter() + 0.05
    for i in range(total):
        scheduled = t0 + i / args.rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[i] = scheduled - t0
        queue.put_nowait((i, scheduled))
    for _ in workers:
        queue.put_nowait((-1, 0.0))
    await asyncio.gather(*workers)
    wall = time.perf_counter() - t0
    return {
        "mode": "open",
        "rate": args.rate,
        "requests": total,
        "errors": errors,
        "statuses": statuses,
        "wall_s": wall,
        "latency_ms": [round(x * 1000.0, 4) for x in latencies],
        "scheduled_s": [round(x, 4) for x in sent_at],
    }


async def closed_loop(args: argparse.Namespace, raws: list[bytes]) -> dict[str, Any]:
    done = 0
    errors = 0
    stop_at = time.perf_counter() + args.warmup + args.duration
    count_from = time.perf_counter() + args.warmup

    async def worker(offset: int) -> None:
        nonlocal done, errors
        conn = Connection(args.host, args.port)
        i = offset
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                conn.close()
                return
            try:
                status = await conn.request(raws[i % len(raws)])
                ok = 200 <= status < 300
            except (OSError, asyncio.IncompleteReadError, ValueError):
                ok = False
                conn.close()
            if time.perf_counter() >= count_from:
                done += 1
                errors += not ok
            i += args.connections

    await asyncio.gather(*(worker(c) for c in range(args.connections)))
    return {
        "mode": "closed",
        "connections": args.connections,
        "requests": done,
        "errors": errors,
        "duration_s": args.duration,
        "throughput_rps": done / args.duration,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["open", "closed"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/recommendations")
    parser.add_argument("--key", default=None)
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    bodies = json.loads(args.bodies.read_text())
    raws = build_requests(args.host, args.port, args.path, args.key, bodies)
    runner = open_loop if args.mode == "open" else closed_loop
    result = asyncio.run(runner(args, raws))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
