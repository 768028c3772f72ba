"""LLM spend of real-looking chats, against a billing stand-in that follows Anthropic's rules.

Chats are paced as people type: 12 sessions of 8 turns, a turn every 4 s per session. Every
figure is billed by the fake Anthropic API (`tests.fakes.llm_server`, rules in
`tests.fakes.billing`): tokens by kind (input, cache writes, cache reads, output) and their
price at Claude Haiku 5.5's rates. The spend is compared with the seed's design, one uncached
call on the whole transcript per snapshot (the system prompt and tool, no breakpoints), billed
by a second stand-in.

Rows:
- `pipeline`: `nexus serve` and one `nexus worker` on the Anthropic extractor, as built: the
  worker paces its calls by the extraction policy (worker/pace.py) at its default settings. The
  paced chats are posted in real time; so are bursts (every session's snapshot 1, then every
  session's snapshot 2, ... 200 sessions x 5). First and final rows are measured in the
  database: the prospect row's creation and the last snapshot's history row.
- `simulated`: the extraction policy (`nexus_ingest.policy`) replayed over the same schedule on
  a simulated clock; each extraction it decides is a real request of the Anthropic extractor
  (its cached prompt layout) to the stand-in. First and final rows are counted from the call
  plus `MODEL_LATENCY_S`, as if the worker read each snapshot as it arrived.
- the same simulation with every snapshot extracted (caching alone), with incremental
  extraction (the profile so far plus only the new turns), on long chats, and on bursts.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import time
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import anthropic
import httpx
import psycopg
from anthropic.types import MessageParam, TextBlockParam
from tests.fakes.billing import Charge
from tests.fakes.llm_server import FakeLLMServer

from bench.bursty import _claude_env, _logged_nexus, _wait_for_workers, conversation
from bench.common import free_port, fresh_database, nexus, wait_until_serving
from nexus_ingest.extract.anthropic import AnthropicExtractor, prospect_from_message, record_tool
from nexus_ingest.extract.prompt import (
    CONVERSATION_CLOSE,
    CONVERSATION_OPEN,
    SYSTEM_PROMPT,
    render_conversation,
    render_turn,
)
from nexus_ingest.models import ChatMessage, Prospect
from nexus_ingest.policy import (
    Defer,
    ExtractionPolicy,
    ExtractNow,
    SnapshotFacts,
    decide,
    turned_hot,
)

SESSIONS = 12
TURNS = 8
SPACING_S = 4.0
LONG_SESSIONS = 4
LONG_TURNS = 40
BURST_SESSIONS = 200
BURST_SNAPSHOTS = 5
MODEL = "claude-haiku-5-5"
MODEL_LATENCY_S = 1.5
COALESCE_S = 2.0  # the producer's default coalescing window with an LLM extractor
PIPELINE_LATENCY_S = 0.5
API_KEY = "sk-ant-bench"
POLICY_CASE = "paced, policy"
BURST_CASE = "bursts, policy"
PIPELINE = "pipeline"
POSTERS = 16  # as many chats posting at once as tests/acceptance/test_end_to_end.py has

Row = dict[str, object]

_NAMES = ["Ana", "Luis", "Marta", "Jorge", "Elena", "Pablo", "Sara", "Iván", "Nuria", "Raúl"]
_SAID = [
    "Hola, buenas tardes",
    "Estoy mirando vuestro CRM para una inmobiliaria de {city}",
    "Me llamo {name} Gil, soy la gerente de {company}",
    "¿Cuánto cuesta el plan Pro para 10 usuarios?",
    "Mi email es {email}",
    "Nos gustaría empezar el mes que viene, con unos 3.000 euros de presupuesto",
    "Perdona, el email bueno es {fixed}, el otro tenía una errata",
    "Gracias, quedo a la espera de la propuesta",
]
_REPLIES = [
    "¡Hola! Soy Sofía, de Nexus CRM. ¿En qué te puedo ayudar?",
    "¡Genial! Tenemos planes para equipos de ventas. ¿Con quién hablo?",
    "Encantada. ¿Qué plan te interesa?",
    "El plan Pro cuesta 29 € por usuario al mes. ¿Te mando una propuesta por correo?",
    "Perfecto, ¿para cuándo lo necesitaríais?",
    "Apuntado. ¿Algo más que deba saber?",
    "Corregido, gracias. Te escribo hoy mismo.",
    "¡A ti! Un saludo.",
]
_EXTRA = [
    "Otra pregunta: ¿la app móvil funciona sin conexión?",
    "¿Y se puede integrar con nuestro correo de Outlook?",
    "Vale. ¿Incluye formación para el equipo?",
    "Entendido, gracias por la paciencia",
]


def _chat_values(session: int) -> dict[str, str]:
    name = _NAMES[session % len(_NAMES)]
    login = unicodedata.normalize("NFKD", name.lower()).encode("ascii", "ignore").decode()
    return {
        "name": name,
        "city": ["Madrid", "Valencia", "Sevilla"][session % 3],
        "company": f"Inmobiliaria {name} {session:02d}",
        "email": f"{login}{session:02d}@inmo.example",
        "fixed": f"{login}.gil{session:02d}@inmo.example",
    }


def corrected_email(session: int) -> str:
    """The email a paced chat's visitor gives in the 7th turn, correcting the 5th."""
    return _chat_values(session)["fixed"]


def paced_chat(session: int, turns: int) -> list[dict[str, str]]:
    """A sales chat that gives a name, asks a price, gives an email and corrects it late; past
    the eighth turn it goes on with questions."""
    values = _chat_values(session)
    messages: list[dict[str, str]] = []
    for turn in range(turns):
        if turn < len(_SAID):
            said, reply = _SAID[turn].format(**values), _REPLIES[turn]
        else:
            said, reply = _EXTRA[turn % len(_EXTRA)], "Sí, claro. ¿Algo más?"
        messages += [{"role": "user", "content": said}, {"role": "assistant", "content": reply}]
    return messages


@dataclass(frozen=True)
class Post:
    """One snapshot a session posts: `at` seconds after the run began."""

    session: int
    seq: int
    at: float
    messages: tuple[ChatMessage, ...]


def paced_schedule(sessions: int, turns: int, spacing_s: float) -> list[Post]:
    """Every session posts a snapshot every `spacing_s`, the sessions staggered evenly."""
    posts = [
        Post(s, k + 1, k * spacing_s + s * spacing_s / sessions, _chat(paced_chat(s, k + 1)))
        for s in range(sessions)
        for k in range(turns)
    ]
    return sorted(posts, key=lambda post: post.at)


def burst_schedule(sessions: int, snapshots: int, gap_s: float = 0.2) -> list[Post]:
    """Every session's snapshot 1, then every session's snapshot 2, ... (bench/bursty.py)."""
    return [
        Post(s, k + 1, k * gap_s + s * gap_s / sessions, _chat(conversation(s, k + 1)))
        for k in range(snapshots)
        for s in range(sessions)
    ]


def _chat(messages: list[dict[str, str]]) -> tuple[ChatMessage, ...]:
    return tuple(ChatMessage.model_validate(message) for message in messages)


@dataclass(frozen=True)
class Call:
    """One extraction the policy decided: when, of which snapshot, why."""

    at: float
    post: Post
    reason: str


@dataclass
class _SessionState:
    started: float | None = None
    newest: int = 0
    last_extracted: float | None = None
    extracted_turns: int | None = None


_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _when(seconds: float) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def policy_calls(
    posts: Sequence[Post], policy: ExtractionPolicy | None, coalesce_s: float = COALESCE_S
) -> list[Call]:
    """The extractions the policy makes over a schedule (None: every snapshot it reads).

    Like the pipeline, a snapshot becomes readable `coalesce_s` after it is posted (the
    producer's coalescing window) and is dropped if a newer one of its session came meanwhile;
    the worker reads it then, or when its deferral ends.
    """
    sessions: dict[int, _SessionState] = {}
    # (time, arrival before read at the same time, order, post)
    events = [(post.at, 0, i, post) for i, post in enumerate(posts)]
    heapq.heapify(events)
    calls: list[Call] = []
    order = len(events)
    while events:
        now, kind, _, post = heapq.heappop(events)
        state = sessions.setdefault(post.session, _SessionState())
        order += 1
        if kind == 0:
            state.started = now if state.started is None else state.started
            state.newest = max(state.newest, post.seq)
            heapq.heappush(events, (now + coalesce_s, 1, order, post))
            continue
        if post.seq < state.newest:
            continue  # superseded by a newer snapshot of the session
        decision = ExtractNow("first") if policy is None else _decision(post, now, state, policy)
        if isinstance(decision, Defer):
            heapq.heappush(events, ((decision.until - _EPOCH).total_seconds(), 1, order, post))
            continue
        calls.append(Call(now, post, decision.reason if policy else "every"))
        state.last_extracted, state.extracted_turns = now, len(post.messages)
    return calls


def _decision(
    post: Post, now: float, state: _SessionState, policy: ExtractionPolicy
) -> ExtractNow | Defer:
    assert state.started is not None
    facts = SnapshotFacts(
        received_at=_when(post.at),
        session_started_at=_when(state.started),
        last_extracted_at=None if state.last_extracted is None else _when(state.last_extracted),
        turned_hot=turned_hot(post.messages, state.extracted_turns),
    )
    decision = decide(facts, _when(now), policy)
    if isinstance(decision, ExtractNow | Defer):
        return decision
    raise AssertionError(f"the simulation does not batch: {decision}")


@dataclass
class SimClock:
    """The stand-in's clock during a simulation: set to each call's time."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Spend:
    """What a stand-in billed: answers, tokens by kind, dollars."""

    calls: int = 0
    input: int = 0
    cache_write: int = 0
    cache_read: int = 0
    output: int = 0
    usd: float = 0.0

    @classmethod
    def of(cls, ledger: Sequence[Charge]) -> Spend:
        """The sums of a stand-in's ledger."""
        spend = cls(calls=len(ledger))
        for charge in ledger:
            spend.input += charge.usage.input_tokens
            spend.cache_write += charge.usage.cache_creation_input_tokens
            spend.cache_read += charge.usage.cache_read_input_tokens
            spend.output += charge.usage.output_tokens
            spend.usd += charge.usd
        return spend


def seed_design_spend(posts: Sequence[Post]) -> Spend:
    """One uncached call per snapshot with the seed's prompt, billed by a fresh stand-in."""
    tool = record_tool()

    async def bill_all(client: anthropic.AsyncAnthropic) -> None:
        for post in posts:
            await client.messages.create(
                model=MODEL,
                max_tokens=1024,
                system=SYSTEM_PROMPT,
                tools=[tool],
                tool_choice={"type": "tool", "name": tool["name"]},
                messages=[{"role": "user", "content": render_conversation(post.messages)}],
            )

    with FakeLLMServer("anthropic") as fake:
        asyncio.run(_with_client(fake, bill_all))
        return Spend.of(fake.ledger)


async def _with_client(
    fake: FakeLLMServer, work: Callable[[anthropic.AsyncAnthropic], Any]
) -> None:
    client = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    try:
        await work(client)
    finally:
        await client.close()


@dataclass
class _Incremental:
    """Per session: the profile extracted so far and how many turns it read."""

    profiles: dict[int, tuple[Prospect, int]] = field(default_factory=dict)


def incremental_turns(
    profile: Prospect | None, messages: Sequence[ChatMessage], since: int
) -> list[MessageParam]:
    """The incremental variant's user turn: the profile so far, then only the new turns."""
    known = profile.model_dump(mode="json") if profile else {}
    head = f"<profile_so_far>{json.dumps(known, ensure_ascii=False)}</profile_so_far>\n"
    turns = [render_turn(message) for message in messages[since:]]
    opening = (
        f'{head}{CONVERSATION_OPEN}<omitted turns="{since}"/>\n'
        if since
        else head + CONVERSATION_OPEN
    )
    blocks: list[TextBlockParam] = [{"type": "text", "text": opening + (turns[0] if turns else "")}]
    blocks += [{"type": "text", "text": turn} for turn in turns[1:]]
    return [{"role": "user", "content": [*blocks, {"type": "text", "text": CONVERSATION_CLOSE}]}]


async def _run_calls(
    calls: Sequence[Call], fake: FakeLLMServer, clock: SimClock, incremental: bool
) -> dict[tuple[int, int], Prospect]:
    extractor = AnthropicExtractor(API_KEY, fake.base_url, MODEL, 30.0, 1024)
    client = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    state = _Incremental()
    found: dict[tuple[int, int], Prospect] = {}
    try:
        for call in sorted(calls, key=lambda c: c.at):
            clock.now = call.at
            if incremental:
                found[(call.post.session, call.post.seq)] = await _incremental_call(
                    extractor, client, state, call.post
                )
            else:
                extraction = await extractor.extract(call.post.messages)
                found[(call.post.session, call.post.seq)] = extraction.prospect
    finally:
        await extractor.aclose()
        await client.close()
    return found


async def _incremental_call(
    extractor: AnthropicExtractor,
    client: anthropic.AsyncAnthropic,
    state: _Incremental,
    post: Post,
) -> Prospect:
    profile, since = state.profiles.get(post.session, (None, 0))
    params = extractor.request_params(incremental_turns(profile, post.messages, since))
    message = await client.messages.create(**params)
    prospect = prospect_from_message(message)
    state.profiles[post.session] = (prospect, len(post.messages))
    return prospect


@dataclass(frozen=True)
class Simulation:
    """The spend and latencies of one simulated run."""

    spend: Spend
    calls: list[Call]
    found: dict[tuple[int, int], Prospect]


def simulate(
    posts: Sequence[Post], policy: ExtractionPolicy | None, *, incremental: bool = False
) -> Simulation:
    """Replay the policy over the schedule and bill its extractions on a simulated clock."""
    calls = policy_calls(posts, policy)
    clock = SimClock()
    with FakeLLMServer("anthropic", clock=clock) as fake:
        found = asyncio.run(_run_calls(calls, fake, clock, incremental))
        return Simulation(Spend.of(fake.ledger), calls, found)


def _last_of_each(posts: Sequence[Post]) -> dict[int, Post]:
    return {post.session: post for post in sorted(posts, key=lambda p: p.seq)}


def latencies(posts: Sequence[Post], calls: Sequence[Call], model_s: float) -> tuple[float, float]:
    """The worst first-row and final-row delays (seconds) over all sessions."""
    first_post: dict[int, float] = {}
    for post in sorted(posts, key=lambda p: p.at):
        first_post.setdefault(post.session, post.at)
    last_post = _last_of_each(posts)
    first_call: dict[int, float] = {}
    final_call: dict[int, float] = {}
    for call in sorted(calls, key=lambda c: c.at):
        first_call.setdefault(call.post.session, call.at)
        if call.post.seq == last_post[call.post.session].seq:
            final_call[call.post.session] = call.at
    first = max(first_call[s] + model_s - at for s, at in first_post.items())
    final = max(final_call[s] + model_s - p.at for s, p in last_post.items())
    return round(first, 2), round(final, 2)


def merged_emails(sim: Simulation) -> dict[int, str | None]:
    """Each session's email as `prospect_data` would hold it after merging its extractions in
    order (a new value replaces, a null never erases)."""
    emails: dict[int, str | None] = {}
    for (session, _), prospect in sorted(sim.found.items()):
        emails[session] = prospect.email or emails.get(session)
    return emails


def corrections_kept(sim: Simulation, posts: Sequence[Post]) -> str:
    """How many sessions end with the email the visitor corrected late."""
    sessions = {post.session for post in posts}
    emails = merged_emails(sim)
    kept = sum(emails.get(session) == corrected_email(session) for session in sessions)
    return f"{kept}/{len(sessions)}"


def spend_row(case: str, posts: Sequence[Post], spend: Spend, seed: Spend, **extra: object) -> Row:
    """One row of the report."""
    sessions = len({post.session for post in posts})
    return {
        "case": case,
        "sessions": sessions,
        "snapshots": len(posts),
        "calls": spend.calls,
        "calls_per_snapshot": round(spend.calls / len(posts), 2),
        "calls_per_session": round(spend.calls / sessions, 2),
        "input": spend.input,
        "cache_write": spend.cache_write,
        "cache_read": spend.cache_read,
        "output": spend.output,
        "usd": round(spend.usd, 5),
        "seed_usd": round(seed.usd, 5),
        "vs_seed": round(spend.usd / seed.usd, 3) if seed.usd else None,
        **extra,
    }


@dataclass(frozen=True)
class SpendPlan:
    """Sizes and pace of the spend benchmark."""

    sessions: int = SESSIONS
    turns: int = TURNS
    spacing_s: float = SPACING_S
    long_sessions: int = LONG_SESSIONS
    long_turns: int = LONG_TURNS
    burst_sessions: int = BURST_SESSIONS
    pipeline: bool = True


FULL = SpendPlan()
QUICK = SpendPlan(spacing_s=0.5, long_sessions=2, long_turns=24, burst_sessions=40)


def run(plan: SpendPlan = FULL) -> list[Row]:
    """Every row: the real pipeline (when the plan says so), then the simulations."""
    rows = _pipeline_rows(plan) if plan.pipeline else []
    return rows + simulated_rows(plan)


def simulated_rows(plan: SpendPlan) -> list[Row]:
    """The policy and its variants replayed on a simulated clock (seconds of real time)."""
    policy = ExtractionPolicy()
    paced = paced_schedule(plan.sessions, plan.turns, SPACING_S)
    seed = seed_design_spend(paced)
    long = paced_schedule(plan.long_sessions, plan.long_turns, SPACING_S)
    long_seed = seed_design_spend(long)
    bursts = burst_schedule(plan.burst_sessions, BURST_SNAPSHOTS)
    long_case = f"long chats, {plan.long_turns} turns"
    return [
        _simulated(POLICY_CASE, paced, seed, policy),
        _simulated("paced, policy, incremental", paced, seed, policy, incremental=True),
        _simulated("paced, every snapshot", paced, seed, None),
        _simulated(f"{long_case}, policy", long, long_seed, policy),
        _simulated(f"{long_case}, policy, incremental", long, long_seed, policy, incremental=True),
        _simulated(BURST_CASE, bursts, seed_design_spend(bursts), policy, paced=False),
    ]


def _simulated(
    case: str,
    posts: Sequence[Post],
    seed: Spend,
    policy: ExtractionPolicy | None,
    *,
    incremental: bool = False,
    paced: bool = True,
) -> Row:
    sim = simulate(posts, policy, incremental=incremental)
    first, final = latencies(posts, sim.calls, MODEL_LATENCY_S)
    extra: Row = {"mode": "simulated", "first_row_max_s": first, "final_row_max_s": final}
    if paced:
        extra["late_fix_kept"] = corrections_kept(sim, posts)
    return spend_row(case, posts, sim.spend, seed, **extra)


def _pipeline_rows(plan: SpendPlan) -> list[Row]:
    """The paced chats and the bursts through `nexus serve` and `nexus worker`, in real time."""
    scale = plan.spacing_s / SPACING_S
    paced = paced_schedule(plan.sessions, plan.turns, plan.spacing_s)
    bursts = burst_schedule(plan.burst_sessions, BURST_SNAPSHOTS)
    return [
        _pipeline_row(POLICY_CASE, paced, scale, late_fixes=True),
        _pipeline_row(BURST_CASE, bursts, 1.0, late_fixes=False),
    ]


def _pipeline_row(case: str, posts: Sequence[Post], scale: float, *, late_fixes: bool) -> Row:
    seed = seed_design_spend(posts)
    run = run_pipeline(posts, scale)
    extra: Row = {
        "mode": PIPELINE,
        "first_row_max_s": run.first_row_max_s,
        "final_row_max_s": run.final_row_max_s,
    }
    if late_fixes:
        extra["late_fix_kept"] = run.late_fixes_kept
    return spend_row(case, posts, run.spend, seed, **extra)


@dataclass(frozen=True)
class PipelineRun:
    """What one real run cost and how fresh its rows were."""

    spend: Spend
    first_row_max_s: float
    final_row_max_s: float
    late_fixes_kept: str


def run_pipeline(posts: Sequence[Post], time_scale: float) -> PipelineRun:
    """Post the schedule in real time to `nexus serve`, one `nexus worker` extracting with the
    Anthropic extractor against the stand-in; the spend and the worst first and final rows."""
    with (
        fresh_database() as url,
        FakeLLMServer("anthropic", latency_s=PIPELINE_LATENCY_S) as fake,
        TemporaryDirectory(prefix="nexus-spend-") as folder,
        ExitStack() as stack,
    ):
        port = free_port()
        env = {**_claude_env(url, port, fake.base_url), **_policy_env(time_scale)}
        stack.enter_context(nexus(["serve"], env))
        log = Path(folder) / "worker.log"
        stack.enter_context(_logged_nexus(["worker"], env, log))
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{base}/api/nexus/producer")
        _wait_for_workers([log])
        posted = _post_on_schedule(base, posts)
        _wait_for_final_rows(url, posted, timeout=90.0 + 60.0 * time_scale)
        first, final = _row_latencies(url, posted)
        return PipelineRun(Spend.of(fake.ledger), first, final, _late_fixes_kept(url, posts))


def _policy_env(scale: float) -> dict[str, str]:
    """The policy's settings, scaled with the schedule for a quick run."""
    policy = ExtractionPolicy()
    return {
        "NEXUS_EXTRACT_FIRST_WITHIN_S": str(policy.first_within_s * scale),
        "NEXUS_EXTRACT_INTERVAL_S": str(policy.interval_s * scale),
        "NEXUS_EXTRACT_QUIET_S": str(policy.quiet_s * scale),
        "NEXUS_ANTHROPIC_MODEL": MODEL,
    }


@dataclass(frozen=True)
class Posted:
    """A snapshot as posted: its session, sequence, message id and wall-clock time."""

    session: str
    seq: int
    msg_id: int
    at: float


def _post_on_schedule(base: str, posts: Sequence[Post]) -> list[Posted]:
    """Post each snapshot at its time, from `POSTERS` threads: one client alone falls behind a
    burst, and a burst spread over more than the coalescing window is no burst any more."""
    with httpx.Client(base_url=base, timeout=30) as client, ThreadPoolExecutor(POSTERS) as pool:
        begin = time.monotonic()
        return list(pool.map(lambda post: _post_at(client, begin, post), posts))


def _post_at(client: httpx.Client, begin: float, post: Post) -> Posted:
    pause = begin + post.at - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    session = f"chat-{post.session}"
    body = {
        "messages": [m.model_dump() for m in post.messages],
        "fingerprint": f"fp-{session}",
        "sessionId": session,
    }
    answer = client.post("/api/nexus/producer", json=body)
    answer.raise_for_status()
    return Posted(session, post.seq, int(answer.json()["messageId"]), time.time())


def _last_posts(posted: Sequence[Posted]) -> dict[str, Posted]:
    return {post.session: post for post in sorted(posted, key=lambda p: p.seq)}


def _wait_for_final_rows(url: str, posted: Sequence[Posted], timeout: float) -> None:
    """Until every session's last snapshot has been extracted and merged."""
    last_ids = [post.msg_id for post in _last_posts(posted).values()]
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM prospect_extractions WHERE msg_id = ANY(%s)", (last_ids,)
            ).fetchone()
            if row and row[0] >= len(last_ids):
                return
            time.sleep(0.2)
    raise RuntimeError(f"the final snapshots were not all extracted within {timeout}s")


def _late_fixes_kept(url: str, posts: Sequence[Post]) -> str:
    """How many sessions' merged rows hold the email their visitor corrected late."""
    sessions = sorted({post.session for post in posts})
    with psycopg.connect(url) as conn:
        emails = dict(conn.execute("SELECT fingerprint_id, email FROM prospect_data").fetchall())
    kept = sum(emails.get(f"fp-chat-{s}") == corrected_email(s) for s in sessions)
    return f"{kept}/{len(sessions)}"


def _row_latencies(url: str, posted: Sequence[Posted]) -> tuple[float, float]:
    first_post: dict[str, float] = {}
    for post in posted:
        first_post.setdefault(post.session, post.at)
    last = _last_posts(posted)
    with psycopg.connect(url) as conn:
        created = dict(
            conn.execute(
                "SELECT fingerprint_id, extract(epoch FROM created_at)::float8 FROM prospect_data"
            ).fetchall()
        )
        finals = dict(
            conn.execute(
                "SELECT msg_id, extract(epoch FROM created_at)::float8 FROM prospect_extractions"
                " WHERE msg_id = ANY(%s)",
                ([post.msg_id for post in last.values()],),
            ).fetchall()
        )
    first = max(created[f"fp-{session}"] - at for session, at in first_post.items())
    final = max(finals[post.msg_id] - post.at for post in last.values())
    return round(first, 2), round(final, 2)


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row, ensure_ascii=False))
