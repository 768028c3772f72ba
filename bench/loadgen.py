"""An open-loop HTTP load generator, run as its own process so it does not share the server's CPU time slice.

Requests are scheduled at a fixed rate; each latency is measured from the request's scheduled
start, so a server (or client) that falls behind shows up in the figures instead of hiding
(no coordinated omission). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

MESSAGES = [
    {"role": "user", "content": "Hola"},
    {"role": "assistant", "content": "Hola, ¿en qué puedo ayudarte?"},
    {"role": "user", "content": "Me llamo Carlos y quiero información sobre los paquetes"},
]


def request_bytes(host: str, port: int, path: str, index: int, run: str) -> bytes:
    body = json.dumps(
        {
            "messages": MESSAGES,
            "fingerprint": f"bench-{run}-{index % 5000}",
            "sessionId": f"bench-{run}-{index % 5000}",
        }
    ).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


FAILURES: Counter[str] = Counter()


class Connections:
    """Keep-alive connections handed out one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle:
            return self.idle.pop()
        return await asyncio.open_connection(self.host, self.port)

    def put(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.idle.append(conn)


async def one(
    conns: Connections, payload: bytes, scheduled: float, results: list[tuple[float, int]]
) -> None:
    try:
        conn = await conns.get()
        conn[1].write(payload)
        status = await read_response(conn[0])
        conns.put(conn)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        status = 0
        FAILURES[type(exc).__name__ + ": " + str(exc)[:80]] += 1
    results.append((time.perf_counter() - scheduled, status))


async def run(url: str, rate: float, duration: float, warmup: float) -> dict[str, object]:
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
    run_id = uuid.uuid4().hex[:8]
    conns = Connections(host, port)
    total = int(rate * (duration + warmup))
    payloads = [request_bytes(host, port, path, i, run_id) for i in range(min(total, 20_000))]
    results: list[tuple[float, int]] = []
    tasks = []
    start = time.perf_counter() + 0.1
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(
            asyncio.create_task(
                one(
                    conns,
                    payloads[i % len(payloads)],
                    scheduled,
                    results if i >= rate * warmup else [],
                )
            )
        )
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start - warmup
    return summarize(results, rate, elapsed)


def summarize(results: list[tuple[float, int]], rate: float, elapsed: float) -> dict[str, object]:
    latencies = sorted(r[0] for r in results)
    errors = sum(1 for _, status in results if status != 202)

    def pct(p: float) -> float:
        return (
            round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2)
            if latencies
            else 0.0
        )

    return {
        "target_rps": rate,
        "achieved_rps": round(len(results) / elapsed, 1) if elapsed > 0 else 0.0,
        "requests": len(results),
        "errors": errors,
        "failures": dict(FAILURES),
        "statuses": {
            str(k): v for k, v in sorted(Counter(status for _, status in results).items())
        },
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.rate, args.duration, args.warmup))))


if __name__ == "__main__":
    main()
