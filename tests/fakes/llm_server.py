"""Fake Anthropic Messages and OpenAI chat-completions APIs: real HTTP on 127.0.0.1.

The official SDKs talk to these through `base_url`, so tests exercise the SDKs' own request
building, response parsing and error classes. Each server answers with a scripted queue of
behaviours, then a failure-rate mode if set, then a default behaviour, and records every
request it receives.

The Anthropic fake is also a billing stand-in: it counts tokens and prompt caching by the
documented rules (`tests.fakes.billing`), keeps a ledger of every billed answer with its price,
and serves the Message Batches API (create, retrieve, results as JSONL, cancel) at half price.
The benchmarks use it too, so it depends on nothing from pytest.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from tests.fakes.billing import CachingError, Charge, PromptCache, charge_usd, prompt_blocks

Provider = Literal["anthropic", "openai"]

ANTHROPIC_PATH = "/v1/messages"
BATCHES_PATH = "/v1/messages/batches"
OPENAI_PATH = "/v1/chat/completions"
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class Omitted:
    """A usage value (or the whole usage) that the answer leaves out, as some servers do."""


OMITTED = Omitted()


@dataclass(frozen=True)
class Reply:
    """The model answers with `payload`: Anthropic tool_use input, OpenAI JSON content."""

    payload: object
    truncated: bool = False  # stop_reason max_tokens / finish_reason length
    thinking: str | None = None  # Anthropic: a thinking block before the tool call
    # Overrides the computed usage fields (OMITTED drops one), or OMITTED drops usage altogether.
    usage: Mapping[str, Any] | Omitted | None = None


@dataclass(frozen=True)
class Text:
    """The model answers in plain text: no tool call (Anthropic), not JSON (OpenAI)."""

    text: str


@dataclass(frozen=True)
class Refusal:
    """The model refuses: stop_reason refusal (Anthropic), a `refusal` message (OpenAI)."""

    explanation: str = "I can't help with that request."


@dataclass(frozen=True)
class Error:
    """An HTTP error in the provider's error format, with retry-after when given."""

    status: int
    retry_after: str | None = None
    retry_after_ms: str | None = None
    message: str = ""


@dataclass(frozen=True)
class Hang:
    """Answer only after `seconds` (or when the server closes): longer than a client's timeout."""

    seconds: float = 30.0


_TRICKLE_STEP_S = 0.2


@dataclass(frozen=True)
class Trickle:
    """A good answer sent a few bytes at a time over `seconds`: never silent for long, so a
    client's timeout between two reads never fires, but long in all."""

    seconds: float = 6.0


@dataclass(frozen=True)
class Extract:
    """A reasonable answer found by regexes in the request's user turns."""


Behaviour = Reply | Text | Refusal | Error | Hang | Trickle | Extract


@dataclass(frozen=True)
class RecordedCall:
    """One request as the server received it, and what it chose to do."""

    method: str
    path: str
    headers: Mapping[str, str]  # names lower-cased
    body: Any
    behaviour: str
    status: int
    response: Any  # the JSON body answered (sent only after the hang, for Hang)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's `messages`."""
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []


@dataclass
class _State:
    script: deque[Behaviour] = field(default_factory=deque)
    default: Behaviour = field(default_factory=Extract)
    fail_rate: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    hang_s: float = 30.0
    calls: list[RecordedCall] = field(default_factory=list)
    seen_prefixes: set[str] = field(default_factory=set)
    ledger: list[Charge] = field(default_factory=list)
    batches: dict[str, _Batch] = field(default_factory=dict)


@dataclass
class _Batch:
    """A Message Batch: its requests, when it ends, and its results once processed."""

    id: str
    requests: list[tuple[str, Any]]
    created: datetime
    ends_at: float
    canceled_at: datetime | None = None
    ended: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)


class FakeLLMServer:
    """A fake provider API on an ephemeral loopback port, served from a background thread.

    `min_cacheable_tokens` overrides the documented per-model minimum of the Anthropic fake
    (for the OpenAI fake it is the length from which a repeated system prompt is cached; 0 when
    unset). `clock` drives cache lifetimes and batch completion, so tests can move time on.
    A batch ends `batch_delay_s` after it is created.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        default: Behaviour | None = None,
        min_cacheable_tokens: int | None = None,
        latency_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        batch_delay_s: float = 0.0,
    ) -> None:
        self.provider = provider
        self.latency_s = latency_s  # how long a model "thinks" before every answer
        self.min_cacheable_tokens = min_cacheable_tokens or 0
        self.clock = clock
        self.batch_delay_s = batch_delay_s
        self.prompt_cache = PromptCache(clock, min_cacheable_tokens)
        self._state = _State(default=default or Extract())
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        # A short poll keeps close() quick: shutdown() waits for the serve loop to notice.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name=f"fake-{provider}", daemon=True
        )

    def start(self) -> FakeLLMServer:
        """Serve in the background; returns self."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release hanging requests."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The ephemeral port the server listens on."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What to pass as the SDK's `base_url`."""
        root = f"http://127.0.0.1:{self.port}"
        return root if self.provider == "anthropic" else f"{root}/v1"

    @property
    def calls(self) -> list[RecordedCall]:
        """Every request received so far, oldest first."""
        with self._changed:
            return list(self._state.calls)

    def script(self, *behaviours: Behaviour) -> None:
        """Answer the next requests with these behaviours, in order."""
        with self._changed:
            self._state.script.extend(behaviours)

    def set_default(self, behaviour: Behaviour) -> None:
        """Answer with `behaviour` once the script is used up."""
        with self._changed:
            self._state.default = behaviour

    def fail_randomly(self, rate: float, *, seed: int = 0, hang_s: float = 30.0) -> None:
        """Fail `rate` of unscripted calls with a seeded mix of 429, 529/503, 500 and hangs."""
        with self._changed:
            self._state.fail_rate = rate
            self._state.rng = random.Random(seed)
            self._state.hang_s = hang_s

    @property
    def ledger(self) -> list[Charge]:
        """Every answer billed so far (direct or in a batch), oldest first."""
        with self._changed:
            return list(self._state.ledger)

    def spent_usd(self) -> float:
        """The sum of the ledger: what this server's answers cost at documented prices."""
        return sum(charge.usd for charge in self.ledger)

    def wait_for_calls(self, count: int, timeout: float = 5.0) -> list[RecordedCall]:
        """The calls once at least `count` have arrived; AssertionError after `timeout`."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self._state.calls) >= count, timeout)
            assert arrived, f"expected {count} calls, got {len(self._state.calls)}"
            return list(self._state.calls)

    def _choose(self) -> Behaviour:
        with self._changed:
            state = self._state
            if state.script:
                return state.script.popleft()
            if state.fail_rate and state.rng.random() < state.fail_rate:
                return state.rng.choice(self._failures(state.hang_s))
            return state.default

    def _failures(self, hang_s: float) -> Sequence[Behaviour]:
        overloaded = 529 if self.provider == "anthropic" else 503
        return (Error(429, retry_after="1"), Error(overloaded), Error(500), Hang(hang_s))

    def _record(self, call: RecordedCall) -> None:
        with self._changed:
            self._state.calls.append(call)
            self._changed.notify_all()

    def _bill(self, body: Mapping[str, Any], output_tokens: int, *, batch: bool) -> dict[str, Any]:
        answered_in = 0.0 if batch else self.latency_s
        usage = self.prompt_cache.bill(body, output_tokens, answered_in)
        model = str(body["model"])
        charge = Charge(model, usage, batch, charge_usd(model, usage, batch=batch))
        with self._changed:
            self._state.ledger.append(charge)
        return usage.as_json("batch" if batch else "standard")

    def _cache_hit(self, prefix: str) -> bool:
        key = hashlib.sha256(prefix.encode()).hexdigest()
        with self._changed:
            hit = key in self._state.seen_prefixes
            self._state.seen_prefixes.add(key)
            return hit


@dataclass(frozen=True)
class _Response:
    status: int
    body: object
    headers: Mapping[str, str] = field(default_factory=dict)


def _handler_for(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        fake = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeLLMServer

    def setup(self) -> None:
        """Headers and body go out as separate writes: without TCP_NODELAY the body waits for
        the client's delayed acknowledgement (about 40 ms an answer)."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows failures, not access logs."""

    def do_POST(self) -> None:
        self._guarded(self._serve)

    def do_GET(self) -> None:
        self._guarded(self._serve)

    def _guarded(self, serve: Callable[[], None]) -> None:
        try:
            serve()
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout): nothing left to answer.
            self.close_connection = True

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        body = _json_or_none(raw)
        wire = _ANTHROPIC if self.fake.provider == "anthropic" else _OPENAI
        if wire is _ANTHROPIC and self.path.startswith(BATCHES_PATH):
            self._serve_batches(headers, body)
            return
        if self.command != "POST":
            self._send(wire.error(405, {}, f"Not allowed: {self.command}"), wire.request_id_header)
            return
        problem = wire.validate(self.path, headers, body)
        behaviour: Behaviour | None = None if problem else self.fake._choose()
        response = problem or _render(wire, self.fake, behaviour, body)
        name = "invalid_request" if behaviour is None else type(behaviour).__name__
        call = RecordedCall(
            "POST", self.path, headers, body, name.lower(), response.status, response.body
        )
        self.fake._record(call)
        if isinstance(behaviour, Hang):
            self.fake._stopping.wait(behaviour.seconds)
        elif self.fake.latency_s:
            self.fake._stopping.wait(self.fake.latency_s)
        trickle_s = behaviour.seconds if isinstance(behaviour, Trickle) else 0.0
        self._send(response, wire.request_id_header, trickle_s=trickle_s)

    def _serve_batches(self, headers: Mapping[str, str], body: Any) -> None:
        problem = _ANTHROPIC.check_headers(headers)
        response = problem or batch_endpoint(self.fake, self.command, self.path, body)
        call = RecordedCall(
            self.command, self.path, headers, body, "batch", response.status, response.body
        )
        self.fake._record(call)
        self._send(response, _ANTHROPIC.request_id_header)

    def _send(self, response: _Response, request_id_header: str, trickle_s: float = 0.0) -> None:
        if isinstance(response.body, _JsonLines):
            data = "".join(json.dumps(line) + "\n" for line in response.body.lines).encode()
            content_type = "application/x-jsonl"
        else:
            data = json.dumps(response.body).encode()
            content_type = "application/json"
        self.send_response(response.status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        if request_id_header not in response.headers:
            self.send_header(request_id_header, f"req_{uuid.uuid4().hex[:24]}")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        pieces = max(1, round(trickle_s / _TRICKLE_STEP_S))
        size = -(-len(data) // pieces)
        for start in range(0, len(data), size):
            if start and self.fake._stopping.wait(_TRICKLE_STEP_S):
                return
            try:
                self.wfile.write(data[start : start + size])
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client gave up: expected
                return


def _with_usage(
    answer: dict[str, Any], usage: dict[str, Any], behaviour: Behaviour
) -> dict[str, Any]:
    """`answer` with the computed `usage`, as a scripted Reply overrides or leaves it out."""
    override = behaviour.usage if isinstance(behaviour, Reply) else None
    if isinstance(override, Omitted):
        return answer
    for key, value in (override or {}).items():
        usage.pop(key, None)
        if not isinstance(value, Omitted):
            usage[key] = _without_omitted(value)
    return {**answer, "usage": usage}


def _without_omitted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_omitted(v) for k, v in value.items() if not isinstance(v, Omitted)}
    return value


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _render(wire: _Wire, fake: FakeLLMServer, behaviour: Behaviour | None, body: Any) -> _Response:
    if isinstance(behaviour, Error):
        return wire.error(behaviour.status, _retry_headers(behaviour), behaviour.message)
    if isinstance(behaviour, Extract | Hang | Trickle) or behaviour is None:
        behaviour = Reply(extract_reasonably(wire.user_text(body)))
    return _Response(200, wire.answer(fake, behaviour, body))


def _retry_headers(error: Error) -> dict[str, str]:
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["retry-after"] = error.retry_after
    if error.retry_after_ms is not None:
        headers["retry-after-ms"] = error.retry_after_ms
    if error.status in (408, 409, 429) or error.status >= 500:
        headers["x-should-retry"] = "true"
    return headers


def estimate_tokens(text: str) -> int:
    """Roughly four characters a token, like the providers' own rule of thumb."""
    return max(1, (len(text) + 3) // 4)


_TURN = re.compile(r'<turn role="user">\n(.*?)\n</turn>', re.DOTALL)


def user_turns(text: str) -> list[str]:
    """The prospect's turns inside a rendered <conversation>, or the whole text if none."""
    return _TURN.findall(text) or [text]


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
_NAME = re.compile(
    r"(?:me llamo|mi nombre es|my name is|soy|i am|i'm)\s+"
    r"([A-ZÁÉÍÓÚÑ][a-záéíóúñ]+(?:\s+[A-ZÁÉÍÓÚÑ][a-záéíóúñ]+)?)",
    re.IGNORECASE,
)
_SPANISH = re.compile(r"\b(?:hola|quiero|necesito|gracias|me llamo|precio|empresa)\b", re.I)
_BUYING = re.compile(r"\b(?:comprar|contratar|precio|cotizaci[oó]n|buy|price|quote)\b", re.I)


def _latest(pattern: re.Pattern[str], text: str, group: int = 0) -> str | None:
    matches = list(pattern.finditer(text))
    return matches[-1].group(group) if matches else None


def extract_reasonably(text: str) -> dict[str, Any]:
    """What a careful model would pull out of the prospect's turns, by regexes; a value given
    again later (a correction) wins."""
    said = "\n".join(user_turns(text))
    email = _latest(_EMAIL, said)
    buying = bool(_BUYING.search(said))
    return {
        "nombre": _latest(_NAME, said, 1),
        "email": email.lower() if email else None,
        "telefono": _latest(_PHONE, said),
        "empresa": None,
        "cargo": None,
        "ubicacion": None,
        "productos_interes": [],
        "presupuesto": None,
        "plazo": None,
        "nivel_interes": 7 if buying else 4,
        "intencion": "compra" if buying else "informacion",
        "idioma": "es" if _SPANISH.search(said) else "en",
        "resumen": said[:160] or None,
    }


class _Wire:
    """One provider's request checks and response shapes."""

    path: str
    request_id_header: str

    def validate(self, path: str, headers: Mapping[str, str], body: Any) -> _Response | None:
        raise NotImplementedError

    def error(self, status: int, headers: Mapping[str, str], message: str = "") -> _Response:
        raise NotImplementedError

    def user_text(self, body: Any) -> str:
        raise NotImplementedError

    def answer(self, fake: FakeLLMServer, behaviour: Behaviour, body: Any) -> object:
        raise NotImplementedError


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class _AnthropicWire(_Wire):
    path = ANTHROPIC_PATH
    request_id_header = "request-id"

    def validate(self, path: str, headers: Mapping[str, str], body: Any) -> _Response | None:
        if path != self.path:
            return self.error(404, {}, f"Not found: {path}")
        problem = self.check_headers(headers)
        if problem:
            return problem
        message = _anthropic_body_problem(body)
        return self.error(400, {}, message) if message else None

    def check_headers(self, headers: Mapping[str, str]) -> _Response | None:
        """The 401 or 400 a request without credentials or API version gets."""
        if not (headers.get("x-api-key") or headers.get("authorization")):
            return self.error(401, {}, "x-api-key header is required")
        if not headers.get("anthropic-version"):
            return self.error(400, {}, "anthropic-version: header is required")
        return None

    def error(self, status: int, headers: Mapping[str, str], message: str = "") -> _Response:
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        body = {
            "type": "error",
            "error": {"type": kind, "message": message or kind.replace("_", " ")},
            "request_id": request_id,
        }
        return _Response(status, body, {**headers, self.request_id_header: request_id})

    def user_text(self, body: Any) -> str:
        first = body["messages"][0]["content"]
        if isinstance(first, str):
            return first
        return "\n".join(block.get("text", "") for block in first if isinstance(block, dict))

    def answer(
        self, fake: FakeLLMServer, behaviour: Behaviour, body: Any, *, batch: bool = False
    ) -> dict[str, Any]:
        content, stop_reason = _anthropic_content(behaviour, _forced_tool(body))
        usage = fake._bill(body, estimate_tokens(json.dumps(content)), batch=batch)
        answer = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
        }
        return _with_usage(answer, usage, behaviour)


def _anthropic_body_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body is not valid JSON."
    for key, kind in (("model", str), ("max_tokens", int), ("messages", list)):
        if not isinstance(body.get(key), kind):
            return f"{key}: Field required"
    messages = body["messages"]
    if not messages or messages[0].get("role") != "user":
        return "messages: the first message must use the user role"
    choice = body.get("tool_choice") or {}
    names = {tool.get("name") for tool in body.get("tools", [])}
    if choice.get("type") == "tool" and choice.get("name") not in names:
        return f"tool_choice: tool {choice.get('name')!r} not found in tools"
    try:
        prompt_blocks(body)
    except CachingError as exc:
        return str(exc)
    return _unanswered_tool_use(messages)


def _unanswered_tool_use(messages: list[dict[str, Any]]) -> str | None:
    # The real API refuses a tool_use turn that the next user turn does not answer.
    for index, message in enumerate(messages):
        used = {block["id"] for block in _blocks(message) if block.get("type") == "tool_use"}
        if not used:
            continue
        following = messages[index + 1] if index + 1 < len(messages) else {}
        answered = {
            block.get("tool_use_id")
            for block in _blocks(following)
            if block.get("type") == "tool_result"
        }
        if following.get("role") != "user" or not used <= answered:
            return "tool_use ids were found without tool_result blocks immediately after"
    return None


def _blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, dict)]


def _forced_tool(body: Mapping[str, Any]) -> str:
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        return str(choice["name"])
    tools = body.get("tools") or [{}]
    return str(tools[0].get("name", "record_prospect"))


def _anthropic_content(behaviour: Behaviour, tool: str) -> tuple[list[dict[str, Any]], str]:
    if isinstance(behaviour, Text):
        return [{"type": "text", "text": behaviour.text, "citations": None}], "end_turn"
    if isinstance(behaviour, Refusal):
        return [], "refusal"
    assert isinstance(behaviour, Reply)
    content: list[dict[str, Any]] = []
    if behaviour.thinking is not None:
        signature = hashlib.sha256(behaviour.thinking.encode()).hexdigest()
        content.append({"type": "thinking", "thinking": behaviour.thinking, "signature": signature})
    call_id = f"toolu_{uuid.uuid4().hex[:24]}"
    content.append({"type": "tool_use", "id": call_id, "name": tool, "input": behaviour.payload})
    return content, ("max_tokens" if behaviour.truncated else "tool_use")


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


class _OpenAIWire(_Wire):
    path = OPENAI_PATH
    request_id_header = "x-request-id"

    def validate(self, path: str, headers: Mapping[str, str], body: Any) -> _Response | None:
        if path != self.path:
            return self.error(404, {}, f"Invalid URL (POST {path})")
        if not headers.get("authorization", "").startswith("Bearer "):
            return self.error(401, {}, "You didn't provide an API key.")
        problem = _openai_body_problem(body)
        return self.error(400, {}, problem) if problem else None

    def error(self, status: int, headers: Mapping[str, str], message: str = "") -> _Response:
        kind, code = _OPENAI_ERRORS.get(status, ("server_error", None))
        error = {"message": message or f"{kind} ({status})", "type": kind, "param": None}
        return _Response(status, {"error": {**error, "code": code}}, headers)

    def user_text(self, body: Any) -> str:
        users = [m for m in body["messages"] if m.get("role") == "user"]
        content = users[0].get("content", "") if users else ""
        return content if isinstance(content, str) else json.dumps(content)

    def answer(self, fake: FakeLLMServer, behaviour: Behaviour, body: Any) -> object:
        message, finish = _openai_message(behaviour)
        answer = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": 1_790_000_000,
            "model": body["model"],
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "system_fingerprint": "fp_fake",
        }
        return _with_usage(answer, _openai_usage(fake, body, message), behaviour)


def _openai_body_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
        return "you must provide a model parameter and messages"
    response_format = body.get("response_format") or {}
    if response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    return _strict_schema_problem(spec.get("schema")) if spec.get("strict") else None


def _strict_schema_problem(schema: Any) -> str | None:
    # What OpenAI's strict mode insists on, checked on the top-level object.
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return "Invalid schema for response_format: the root must be an object"
    if schema.get("additionalProperties") is not False:
        return "Invalid schema for response_format: 'additionalProperties' must be false"
    if set(schema.get("required", [])) != set(schema.get("properties", {})):
        return "Invalid schema for response_format: 'required' must list every property"
    for name, prop in schema["properties"].items():
        if "maxLength" in prop:
            return f"Invalid schema for response_format: 'maxLength' is not permitted ({name})"
    return None


def _openai_message(behaviour: Behaviour) -> tuple[dict[str, Any], str]:
    if isinstance(behaviour, Text):
        return {"role": "assistant", "content": behaviour.text, "refusal": None}, "stop"
    if isinstance(behaviour, Refusal):
        return {"role": "assistant", "content": None, "refusal": behaviour.explanation}, "stop"
    assert isinstance(behaviour, Reply)
    payload = behaviour.payload
    text = payload if isinstance(payload, str) else json.dumps(payload)
    if behaviour.truncated:
        return {"role": "assistant", "content": text[: len(text) // 2], "refusal": None}, "length"
    return {"role": "assistant", "content": text, "refusal": None}, "stop"


def _openai_usage(fake: FakeLLMServer, body: Mapping[str, Any], message: object) -> dict[str, Any]:
    prompt = estimate_tokens(json.dumps([body["messages"], body.get("response_format")]))
    completion = estimate_tokens(json.dumps(message))
    system = next((m for m in body["messages"] if m.get("role") in ("system", "developer")), None)
    cached = 0
    if system is not None:
        prefix = json.dumps(system)
        tokens = estimate_tokens(prefix)
        # Automatic prefix caching: a repeated system prompt is served from cache.
        if tokens >= fake.min_cacheable_tokens and fake._cache_hit(prefix):
            cached = tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


@dataclass(frozen=True)
class _JsonLines:
    """A body sent as JSON Lines, one object a line (batch results)."""

    lines: list[dict[str, Any]]


def batch_endpoint(fake: FakeLLMServer, method: str, path: str, body: Any) -> _Response:
    """The Message Batches API: create, retrieve, results, cancel."""
    parts = path.split("?", 1)[0].removeprefix(BATCHES_PATH).strip("/").split("/")
    if method == "POST" and parts == [""]:
        return _create_batch(fake, body)
    batch = fake._state.batches.get(parts[0])
    if batch is None:
        return _ANTHROPIC.error(404, {}, f"message batch {parts[0]!r} not found")
    match method, parts[1:]:
        case "GET", []:
            return _Response(200, _batch_json(fake, batch))
        case "GET", ["results"]:
            return _batch_results(fake, batch)
        case "POST", ["cancel"]:
            return _cancel_batch(fake, batch)
    return _ANTHROPIC.error(404, {}, f"Not found: {method} {path}")


def _create_batch(fake: FakeLLMServer, body: Any) -> _Response:
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        return _ANTHROPIC.error(400, {}, "requests: Field required")
    ids = [request.get("custom_id") if isinstance(request, dict) else None for request in requests]
    if not all(isinstance(i, str) and _CUSTOM_ID.match(i) for i in ids):
        return _ANTHROPIC.error(400, {}, "custom_id must match ^[a-zA-Z0-9_-]{1,64}$")
    if len(set(ids)) != len(ids):
        return _ANTHROPIC.error(400, {}, "custom_id values must be unique within a batch")
    batch = _Batch(
        id=f"msgbatch_{uuid.uuid4().hex[:24]}",
        requests=[(request["custom_id"], request.get("params")) for request in requests],
        created=datetime.now(UTC),
        ends_at=fake.clock() + fake.batch_delay_s,
    )
    with fake._changed:
        fake._state.batches[batch.id] = batch
    return _Response(200, _batch_json(fake, batch))


def _batch_json(fake: FakeLLMServer, batch: _Batch) -> dict[str, Any]:
    _process_when_due(fake, batch)
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if batch.ended is None:
        counts["processing"] = len(batch.requests)
    for line in batch.results:
        counts[line["result"]["type"]] += 1
    status = "ended" if batch.ended else "canceling" if batch.canceled_at else "in_progress"
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": counts,
        "created_at": batch.created.isoformat(),
        "expires_at": (batch.created + timedelta(hours=24)).isoformat(),
        "ended_at": batch.ended.isoformat() if batch.ended else None,
        "cancel_initiated_at": batch.canceled_at.isoformat() if batch.canceled_at else None,
        "archived_at": None,
        "results_url": f"{fake.base_url}{BATCHES_PATH}/{batch.id}/results" if batch.ended else None,
    }


def _process_when_due(fake: FakeLLMServer, batch: _Batch) -> None:
    """Answer every request of the batch once it is due, in order, through the same cache."""
    with fake._changed:
        if batch.ended is not None or fake.clock() < batch.ends_at:
            return
        batch.results = [_batch_result(fake, i, params) for i, params in batch.requests]
        batch.ended = datetime.now(UTC)


def _batch_result(fake: FakeLLMServer, custom_id: str, params: Any) -> dict[str, Any]:
    problem = _anthropic_body_problem(params)
    if problem:
        return _errored(custom_id, _ANTHROPIC.error(400, {}, problem))
    behaviour = fake._choose()
    if isinstance(behaviour, Error):
        return _errored(custom_id, _ANTHROPIC.error(behaviour.status, {}, behaviour.message))
    if isinstance(behaviour, Hang):
        return {"custom_id": custom_id, "result": {"type": "expired"}}
    if isinstance(behaviour, Extract):
        behaviour = Reply(extract_reasonably(_ANTHROPIC.user_text(params)))
    message = _ANTHROPIC.answer(fake, behaviour, params, batch=True)
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def _errored(custom_id: str, response: _Response) -> dict[str, Any]:
    error = dict(response.body) if isinstance(response.body, dict) else {}
    return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}


def _batch_results(fake: FakeLLMServer, batch: _Batch) -> _Response:
    _process_when_due(fake, batch)
    if batch.ended is None:
        return _ANTHROPIC.error(400, {}, f"message batch {batch.id} is still in progress")
    return _Response(200, _JsonLines(batch.results))


def _cancel_batch(fake: FakeLLMServer, batch: _Batch) -> _Response:
    _process_when_due(fake, batch)
    if batch.ended is None:
        batch.canceled_at = datetime.now(UTC)
        batch.results = [
            {"custom_id": custom_id, "result": {"type": "canceled"}}
            for custom_id, _ in batch.requests
        ]
        batch.ended = batch.canceled_at
    return _Response(200, _batch_json(fake, batch))


_ANTHROPIC = _AnthropicWire()
_OPENAI = _OpenAIWire()


def running(provider: Provider, **options: Any) -> Iterator[FakeLLMServer]:
    """A started server, closed afterwards: the body of a pytest fixture."""
    with FakeLLMServer(provider, **options) as server:
        yield server


__all__ = [
    "ANTHROPIC_PATH",
    "BATCHES_PATH",
    "OMITTED",
    "OPENAI_PATH",
    "Behaviour",
    "Error",
    "Extract",
    "FakeLLMServer",
    "Hang",
    "Omitted",
    "RecordedCall",
    "Refusal",
    "Reply",
    "Text",
    "Trickle",
    "extract_reasonably",
    "running",
]
