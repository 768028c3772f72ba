"""The rules extractor alone: CPU time per snapshot, for the drain's ordinary snapshots and for
the largest snapshot the producer accepts. `python -m bench.extraction` prints both."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence

from bench.drain import _snapshot
from nexus_ingest.extract.rules import extract_prospect
from nexus_ingest.models import ChatMessage

ROUNDS = 9
VOCABULARY = (
    "hola me llamo soy quiero precio presupuesto euros empresa trabajo en Madrid from the and "
    "de la que el plan premium hosting web CRM call me my name is I am looking for a budget of "
    "next month email phone 612 345 678 Acme Corp Director de ventas gracias thanks tomorrow"
)


def ordinary_snapshots(count: int = 2000) -> list[list[ChatMessage]]:
    """The one-turn snapshots `bench/drain.py` queues."""
    return [
        [ChatMessage(**turn) for turn in _snapshot("bench", n).message["messages"]]
        for n in range(count)
    ]


def largest_snapshot(seed: int = 0) -> list[ChatMessage]:
    """31 user turns of 8,000 characters: the most the default 256 KiB body holds."""
    rng = random.Random(seed)
    vocabulary = VOCABULARY.split()
    turns = []
    for _ in range(31):
        words = [rng.choice(vocabulary) for _ in range(1600)]
        turns.append(ChatMessage(role="user", content=" ".join(words)[:8000]))
    return turns


def cpu_us_per_snapshot(snapshots: Sequence[Sequence[ChatMessage]]) -> float:
    """The median over ROUNDS of the CPU time per snapshot, in microseconds."""
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for messages in snapshots:
            extract_prospect(messages)
        rounds.append((time.process_time() - started) / len(snapshots) * 1e6)
    return statistics.median(rounds)


def run() -> dict[str, object]:
    """Both figures, rounded."""
    return {
        "ordinary_us": round(cpu_us_per_snapshot(ordinary_snapshots()), 1),
        "largest_ms": round(cpu_us_per_snapshot([largest_snapshot()]) / 1000, 1),
    }


if __name__ == "__main__":
    print(run())
