"""Posting conversations to a producer, as `nexus send` does.

One kept-alive connection per concurrent sender; each conversation carries an Idempotency-Key
derived from its content, so sending the same file again enqueues nothing twice; a 429 or 503
is retried after its Retry-After, a dropped connection after a short pause, both a bounded
number of times. A session's snapshots go in the file's order, one at a time (the producer
numbers them as they arrive); different sessions go side by side.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

_RETRIED_STATUSES = frozenset({429, 503})
_LONGEST_WAIT_S = 60.0
_FIRST_PAUSE_S = 0.2


@dataclass(frozen=True)
class Conversation:
    """One conversation to post, and the line of the input it came from (1 for a whole file)."""

    line: int
    body: dict[str, Any]

    @property
    def session(self) -> str:
        return str(self.body.get("sessionId"))

    def encoded(self) -> bytes:
        """The body as sent: the same bytes for the same conversation, run after run."""
        return json.dumps(self.body, ensure_ascii=False, sort_keys=True).encode()

    def idempotency_key(self) -> str:
        """A key the producer remembers: a rerun of the same line is answered as a duplicate."""
        return f"nexus-send-{hashlib.sha256(self.encoded()).hexdigest()[:48]}"


@dataclass(frozen=True)
class BadLine:
    """A line of the input that is not a conversation, and why."""

    line: int
    reason: str


@dataclass(frozen=True)
class Outcome:
    """What the producer answered to one conversation (status 0: it could not be reached)."""

    line: int
    status: int
    answer: Any
    attempts: int

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


def json_documents(text: str) -> tuple[list[tuple[int, Any]], list[BadLine]]:
    """One JSON document (line 1), or JSON Lines of them with their line numbers, and bad lines."""
    try:
        whole = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        pass  # not one document: read it line by line
    else:
        problem = _unsendable(whole)
        return ([], [BadLine(1, problem)]) if problem else ([(1, whole)], [])
    documents, bad = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                documents.append((number, _document(line)))
            except _BadDocument as exc:
                bad.append(BadLine(number, str(exc)))
    if not documents and not bad:
        bad.append(BadLine(1, "no JSON found"))
    return documents, bad


class _BadDocument(ValueError):
    """A line that is not a document `nexus send` can post; the message says why."""


_TOO_DEEP = "nested too deeply to read"


def _document(line: str) -> Any:
    """The JSON document of one line, or `_BadDocument` saying why it cannot be sent."""
    try:
        document = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _BadDocument(f"not valid JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:
        raise _BadDocument(_TOO_DEEP) from None
    problem = _unsendable(document)
    if problem:
        raise _BadDocument(problem)
    return document


def _unsendable(document: Any) -> str | None:
    """Why a parsed document could not be posted, if it could not.

    json.loads accepts the escape of a lone surrogate (`\\ud800`), which no UTF-8 encoder does:
    found here, its line is a bad line; found when posting, the run would stop half-sent.
    """
    try:
        json.dumps(document, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return "holds a lone surrogate escape (\\ud800-\\udfff), which is not valid Unicode"
    except RecursionError:
        return _TOO_DEEP
    return None


def parse_conversations(
    text: str, *, session: str | None = None, fingerprint: str | None = None
) -> tuple[list[Conversation], list[BadLine]]:
    """The conversations of a JSON object or of JSON Lines; every bad line is reported, none stops."""
    documents, bad = json_documents(text)
    defaults = {"sessionId": session, "fingerprint": fingerprint}
    given = {k: v for k, v in defaults.items() if v is not None}
    good = []
    for number, document in documents:
        if isinstance(document, dict):
            good.append(Conversation(number, {**given, **document}))
        else:
            bad.append(BadLine(number, "not a JSON object with messages, fingerprint, sessionId"))
    return good, sorted(bad, key=lambda b: b.line)


def retry_after(response: httpx.Response) -> float:
    """Seconds to wait as the producer asks (seconds or an HTTP date), within bounds."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            seconds = 1.0
    return min(max(seconds, 0.0), _LONGEST_WAIT_S)


class Sender:
    """Posts conversations to one producer URL over kept-alive connections."""

    def __init__(
        self,
        url: str,
        *,
        concurrency: int = 1,
        attempts: int = 5,
        keep_going: bool = False,
        on_done: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.url = url
        self.attempts = attempts
        self.keep_going = keep_going
        self.on_done = on_done
        self._slots = asyncio.Semaphore(concurrency)
        self._stopped = asyncio.Event()
        self._limits = httpx.Limits(
            max_connections=concurrency, max_keepalive_connections=concurrency
        )

    async def send_all(self, conversations: Sequence[Conversation]) -> list[Outcome]:
        """Post every conversation (until the first failure unless keeping going), in line order."""
        async with httpx.AsyncClient(limits=self._limits, timeout=30) as client:
            per_session = await asyncio.gather(
                *(self._send_session(client, chain) for chain in _by_session(conversations))
            )
        return sorted((o for chain in per_session for o in chain), key=lambda o: o.line)

    async def _send_session(
        self, client: httpx.AsyncClient, chain: Sequence[Conversation]
    ) -> list[Outcome]:
        outcomes = []
        for conversation in chain:
            async with self._slots:
                if self._stopped.is_set():
                    break
                outcome = await self._post(client, conversation)
            outcomes.append(outcome)
            if self.on_done:
                self.on_done(outcome)
            if not outcome.accepted and not self.keep_going:
                self._stopped.set()
        return outcomes

    async def _post(self, client: httpx.AsyncClient, conversation: Conversation) -> Outcome:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": conversation.idempotency_key(),
        }
        pause = _FIRST_PAUSE_S
        for attempt in range(1, self.attempts + 1):
            last = attempt == self.attempts
            try:
                response = await client.post(
                    self.url, content=conversation.encoded(), headers=headers
                )
            except httpx.TransportError as exc:
                # Safe to repeat: the Idempotency-Key makes a second delivery a duplicate.
                if last:
                    reason = f"cannot reach the producer at {self.url}: {type(exc).__name__}"
                    return Outcome(conversation.line, 0, {"message": reason}, attempt)
                await asyncio.sleep(pause)
                pause *= 2
                continue
            if response.status_code not in _RETRIED_STATUSES or last:
                return Outcome(conversation.line, response.status_code, _answer(response), attempt)
            await asyncio.sleep(retry_after(response))
        raise AssertionError("unreachable: the last attempt always returns")


def _by_session(conversations: Iterable[Conversation]) -> list[list[Conversation]]:
    chains: dict[str, list[Conversation]] = {}
    for conversation in conversations:
        chains.setdefault(conversation.session, []).append(conversation)
    return list(chains.values())


def _answer(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"message": response.text[:200]}


def refusal(outcome: Outcome) -> str:
    """One line on why the producer refused a conversation."""
    answer = outcome.answer if isinstance(outcome.answer, dict) else {}
    if outcome.status == 0:
        return str(answer.get("message"))
    details = "; ".join(
        f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}"
        for d in answer.get("detail") or []
        if isinstance(d, dict)
    )
    what = answer.get("error") or answer.get("message") or "refused"
    return f"refused (HTTP {outcome.status} {what}){': ' + details if details else ''}"
