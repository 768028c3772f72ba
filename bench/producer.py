"""Producer latency at fixed request rates, the load driven from a separate process."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.common import bench_env, free_port, fresh_database, nexus, table, wait_until_serving

RATES = (100, 500, 1000)


def run(rates: tuple[int, ...] = RATES, duration: float = 10.0) -> list[dict[str, object]]:
    """Start `nexus serve`, drive each rate for `duration` seconds, return one row per rate."""
    results = []
    with fresh_database() as url:
        port = free_port()
        with nexus(["serve"], bench_env(url, port, NEXUS_EXTRACTOR="rules")):
            target = f"http://127.0.0.1:{port}/api/nexus/producer"
            wait_until_serving(target)
            for rate in rates:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.loadgen",
                        "--url",
                        target,
                        "--rate",
                        str(rate),
                        "--duration",
                        str(duration),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=duration + 60,
                ).stdout
                results.append(json.loads(out))
    return results


if __name__ == "__main__":
    rows = run()
    print(
        table(
            rows,
            [
                "target_rps",
                "achieved_rps",
                "requests",
                "errors",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                "max_ms",
            ],
        )
    )
