"""Pure decisions on what an LLM provider returned: its payload made into a valid `Prospect`,
its HTTP failure made into `RetryLater` or `Permanent`.

Models do not enforce schema bounds, so every value is coerced into range instead of
rejecting the whole answer; only a payload that is not a JSON object at all is refused.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from nexus_ingest.errors import ExtractionError, Permanent, RetryLater
from nexus_ingest.extract.phones import ascii_digits, normalise_phone, phone_regions
from nexus_ingest.models import PROSPECT_FIELDS, Intent, Prospect

_PLACEHOLDERS = frozenset(
    {
        "-",
        "--",
        "?",
        "n/a",
        "na",
        "n.a.",
        "none",
        "null",
        "nil",
        "unknown",
        "not provided",
        "not specified",
        "desconocido",
        "desconocida",
        "no especificado",
        "no especificada",
        "no proporcionado",
        "no indicado",
        "ninguno",
        "ninguna",
        "sin especificar",
    }
)

_INTENT_SYNONYMS: dict[str, Intent] = {
    "compra": "compra",
    "comprar": "compra",
    "purchase": "compra",
    "buy": "compra",
    "buying": "compra",
    "sale": "compra",
    "informacion": "informacion",
    "info": "informacion",
    "information": "informacion",
    "inquiry": "informacion",
    "enquiry": "informacion",
    "consulta": "informacion",
    "soporte": "soporte",
    "support": "soporte",
    "help": "soporte",
    "ayuda": "soporte",
    "queja": "queja",
    "complaint": "queja",
    "reclamo": "queja",
    "reclamacion": "queja",
    "otro": "otro",
    "other": "otro",
}

_LANGUAGE_NAMES = {
    "espanol": "es",
    "spanish": "es",
    "castellano": "es",
    "english": "en",
    "ingles": "en",
    "portugues": "pt",
    "portuguese": "pt",
    "frances": "fr",
    "french": "fr",
    "francais": "fr",
    "aleman": "de",
    "german": "de",
    "italiano": "it",
    "italian": "it",
}

_EMAIL = re.compile(
    r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)*\.[a-z]{2,}$"
)
_SCORE = re.compile(r"^(-?\d+(?:[.,]\d+)?)(?:\s*/\s*10)?$")
_LANGUAGE_CODE = re.compile(r"^([a-z]{2})(?:[-_][a-z0-9]+)?$")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)
MIN_PHONE_DIGITS = 6
MAX_PHONE_DIGITS = 15  # E.164's longest number, country code included
# An extension ("ext. 23", "x45", "extensión 4") is no part of the number to dial.
# Each match begins at its word, not at the spaces before it, so a long run of spaces is
# scanned once, not once from each of its positions.
_EXTENSION = re.compile(
    r"(?:\b(?:ext|extn|extension|extensi[oó]n|anexo)\b\.?|(?<=[\d\s])x|#)\s*(?=\d)",
    re.IGNORECASE,
)
_TRUNK_ZERO = re.compile(r"(\+\s*\d{1,3})\s*\(0\)")
_LETTER_IN_DIGITS = re.compile(r"\d[^\W\d_]|[^\W\d_]\d")
# One number: digits and the separators people write between them, after an optional "+".
# "/", ",", ";" or a word end it, so a second number given after the first is left out.
# The "+" (perhaps inside a bracket) is optional but unambiguous: no run of spaces or brackets
# can be matched two ways, so a long answer of them costs linear time.
_PHONE_RUN = re.compile(r"(?P<prefix>\+\s*\(?|\(\s*\+\s*)?\d[\d \t().-]*")


def parse_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model's text answer (tolerating a code fence); else `Permanent`."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    try:
        value = json.loads(stripped)
    except ValueError as exc:
        raise Permanent(f"the answer is not valid JSON ({exc})") from exc
    return require_object(value)


def require_object(value: object) -> dict[str, Any]:
    """`value` if it is a JSON object, else `Permanent`."""
    if not isinstance(value, dict):
        raise Permanent(f"the answer is a JSON {type(value).__name__}, not an object")
    return value


def clamp_prospect(raw: object, phone_region: str | None = None) -> Prospect:
    """A valid `Prospect` from whatever object the model produced; its phone number in E.164,
    read in the region of its place, `phone_region`, or its language, when it has no country code."""
    payload = _unwrap(require_object(raw))
    cleaned = {name: _CLEANERS[name](payload.get(name)) for name in PROSPECT_FIELDS}
    phone, place, language = cleaned["telefono"], cleaned["ubicacion"], cleaned["idioma"]
    if isinstance(phone, str):
        regions = phone_regions(_as_text(place), _as_text(language), phone_region)
        cleaned["telefono"] = normalise_phone(phone, regions)
    return Prospect.model_validate(cleaned)


def _unwrap(payload: dict[str, Any]) -> dict[str, Any]:
    # Small local models sometimes nest the record one level down: {"prospect": {...}}.
    if any(name in payload for name in PROSPECT_FIELDS) or len(payload) != 1:
        return payload
    (inner,) = payload.values()
    return inner if isinstance(inner, dict) else payload


def clean_text(value: object, max_length: int) -> str | None:
    """Stripped, whitespace-collapsed text within `max_length`; placeholders become None."""
    text = _as_text(value)
    if text is None:
        return None
    text = " ".join(text.split())
    return _truncate(text, max_length)


def clean_summary(value: object, max_length: int) -> str | None:
    """Like `clean_text` but keeps line breaks, which a summary may use."""
    text = _as_text(value)
    return None if text is None else _truncate(text, max_length)


def _as_text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value) if math.isfinite(value) else None
    elif isinstance(value, list):
        value = ", ".join(str(item) for item in value if isinstance(item, str | int | float))
    if not isinstance(value, str):
        return None
    text = value.strip()
    return None if not text or text.casefold() in _PLACEHOLDERS else text


def _truncate(text: str, max_length: int) -> str | None:
    return text[:max_length].rstrip() or None


def clean_email(value: object) -> str | None:
    """A lower-case, plausible email address, or None."""
    text = _as_text(value)
    if text is None:
        return None
    # Models copy an address with the punctuation around it: "ana@x.com." is ana@x.com.
    text = text.lower().removeprefix("mailto:").strip("<>()[]\"'.,;:!? ")
    if len(text) > _limits().text or not _EMAIL.match(text):
        return None
    return text


def clean_phone(value: object) -> str | None:
    """The first number in the answer as digits with an optional leading '+', without its
    extension; None outside `MIN_PHONE_DIGITS`..`MAX_PHONE_DIGITS` digits, or with a letter
    among its digits."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 612345678.0 would read as 6123456780
    text = _as_text(value)
    if text is None or _LETTER_IN_DIGITS.search(_EXTENSION.sub(" ", text)):
        # "6I2 345 678" or "612 345 G78" read as digits is some other number, or part of
        # one: better none than a wrong one.
        return None
    # "+44 (0)20 ...": the trunk zero is dialled only from inside the country.
    text = _TRUNK_ZERO.sub(r"\1 ", _EXTENSION.split(text, maxsplit=1)[0])
    run = next(
        (r for r in _PHONE_RUN.finditer(text) if _digit_count(r[0]) >= MIN_PHONE_DIGITS), None
    )
    digits = "" if run is None else ascii_digits(run[0])
    if run is None or len(digits.removeprefix("00")) > MAX_PHONE_DIGITS:
        return None
    return ("+" if run["prefix"] else "") + digits


def _digit_count(text: str) -> int:
    return len(ascii_digits(text))


def clean_interest(value: object) -> int | None:
    """An integer in 1..10: floats rounded half up, digit strings ("8", "7.5", "8/10") parsed."""
    number = _as_number(value)
    if number is None or not math.isfinite(number):
        return None
    return min(10, max(1, math.floor(number + 0.5)))


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _SCORE.match(value.strip())
        return float(match.group(1).replace(",", ".")) if match else None
    return None


def clean_intent(value: object) -> Intent | None:
    """One of the known intents; English synonyms mapped, anything else unknown is "otro"."""
    text = _as_text(value)
    if text is None:
        return None
    return _INTENT_SYNONYMS.get(fold(text), "otro")


def clean_language(value: object) -> str | None:
    """A lower-case two-letter language code ("es-MX" -> "es", "Spanish" -> "es"), or None."""
    text = _as_text(value)
    if text is None:
        return None
    folded = fold(text)
    if folded in _LANGUAGE_NAMES:
        return _LANGUAGE_NAMES[folded]
    match = _LANGUAGE_CODE.match(folded)
    return match.group(1) if match else None


def clean_products(value: object) -> list[str]:
    """Unique product names (first spelling kept), each within the item limit, at most the cap."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        return []
    limits = _limits()
    products: list[str] = []
    seen: set[str] = set()
    for item in items:
        text = clean_text(item, limits.product)
        if text is None or fold(text) in seen:
            continue
        seen.add(fold(text))
        products.append(text)
    return products[: limits.products]


def fold(text: str) -> str:
    """Case-, accent- and whitespace-insensitive form of `text`, for comparisons."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(bare.split())


class _Limits:
    def __init__(self, schema: Mapping[str, Any]) -> None:
        props = schema["properties"]
        self.text: int = props["nombre"]["anyOf"][0]["maxLength"]
        self.product: int = props["productos_interes"]["items"]["maxLength"]
        self.products: int = props["productos_interes"]["maxItems"]
        self.by_field: dict[str, int] = {
            name: prop["anyOf"][0]["maxLength"]
            for name, prop in props.items()
            if "anyOf" in prop and "maxLength" in prop["anyOf"][0]
        }


@cache
def _limits() -> _Limits:
    # Read from the model so a changed max_length in models.py needs no change here.
    return _Limits(Prospect.model_json_schema())


def _text_field(name: str) -> Callable[[object], str | None]:
    return lambda value: clean_text(value, _limits().by_field[name])


_CLEANERS: dict[str, Callable[[object], object]] = {
    "nombre": _text_field("nombre"),
    "email": clean_email,
    "telefono": clean_phone,
    "empresa": _text_field("empresa"),
    "cargo": _text_field("cargo"),
    "ubicacion": _text_field("ubicacion"),
    "productos_interes": clean_products,
    "presupuesto": _text_field("presupuesto"),
    "plazo": _text_field("plazo"),
    "nivel_interes": clean_interest,
    "intencion": clean_intent,
    "idioma": clean_language,
    "resumen": lambda value: clean_summary(value, _limits().by_field["resumen"]),
}

# Far beyond any sane provider back-off; a bigger value is a bug we should not sleep through.
MAX_RETRY_AFTER_S = 3600.0
# Credentials, billing or model name are wrong: every message fails the same way until an
# operator fixes the configuration, so wait long instead of dead-lettering healthy messages.
# The worker's attempt limit still bounds this, and the dead-letter queue can be replayed.
CONFIG_ERROR_DELAY_S = 300.0
_CONFIG_STATUSES = frozenset({401, 402, 403, 404})
# 408 and 409 are the provider's own timeouts and lock conflicts: transient by definition.
_TRANSIENT_STATUSES = frozenset({408, 409, 429})


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or HTTP date), if any."""
    delay = _retry_after_ms(headers.get("retry-after-ms"))
    if delay is None:
        delay = _retry_after(headers.get("retry-after"), time.time() if now is None else now)
    if delay is None or not math.isfinite(delay):
        return None
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S)


def _retry_after_ms(value: str | None) -> float | None:
    try:
        return None if value is None else float(value) / 1000
    except ValueError:
        return None


def _retry_after(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    return None if parsed is None else email.utils.mktime_tz(parsed) - now


def error_for_status(status: int, retry_after: float | None, detail: str) -> ExtractionError:
    """The error an HTTP failure status from a provider means for the message."""
    message = f"provider answered {status}: {detail}"
    if status in _TRANSIENT_STATUSES or status >= 500:
        return RetryLater(message, delay=retry_after)
    if status in _CONFIG_STATUSES:
        return RetryLater(message, delay=max(retry_after or 0.0, CONFIG_ERROR_DELAY_S))
    return Permanent(message)
