"""Offline, deterministic prospect extraction with regular expressions (Spanish and English).

Only the user's turns are read for values; an assistant turn only tells which field the next
user turn is probably answering. Later values win, so corrections ("perdón, mi email es ...")
replace earlier ones. Sentences that try to instruct the extractor are cut from the point
where the instruction starts, so injected text can never supply a value.

The work is bounded whatever the size of a snapshot: a long turn is read at its start and its
end, a long chat at its opening and its latest turns, and every pattern runs in time linear in
what it reads. Most patterns read lower-cased text without IGNORECASE, word alternations are
grouped by first letter, and costlier patterns run only where a cheap cue says they can match.
"""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from nexus_ingest.extract.base import Extraction
from nexus_ingest.extract.phones import normalise_phone, phone_regions
from nexus_ingest.models import ChatMessage, Intent, Prospect


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _trie(phrases: Iterable[str]) -> str:
    """An alternation of `phrases` (`_` for a space) that branches letter by letter, longer
    phrases first: the regex engine tries a few branches at each position instead of them all."""
    root: dict[str, Any] = {}
    for phrase in phrases:
        node = root
        for char in phrase:
            node = node.setdefault(char, {})
        node[""] = {}
    return _trie_node(root)


def _trie_node(node: dict[str, Any]) -> str:
    branches = [
        (r"\s+" if char == "_" else re.escape(char)) + _trie_node(child)
        for char, child in sorted(node.items())
        if char
    ]
    if "" in node:
        branches.append("")  # ending here is tried last, so the longest phrase wins
    return branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"


def _by_first_letter(pattern: str) -> re.Pattern[str]:
    r"""`pattern`, a word alternation `\b(?:a|b|...)` and what follows it, compiled with the
    alternatives that begin with the same letter grouped behind it: at each word start the regex
    engine then tests one branch per letter instead of every alternative. Alternatives that do
    not begin with a plain letter stay where they are, and no two that could match at the same
    place change order, so every match is the same."""
    head = r"\b(?:"
    if not pattern.startswith(head):
        raise ValueError("not a word alternation")
    end = _group_end(pattern, len(head))
    alternatives = _top_level_split(pattern[len(head) : end])
    return re.compile(head + "|".join(_grouped(alternatives)) + pattern[end:])


def _union(*patterns: re.Pattern[str]) -> re.Pattern[str]:
    r"""One pattern that matches somewhere exactly when one of `patterns`, each a word
    alternation `\b(?:...)\b`, does."""
    head, tail = r"\b(?:", r")\b"
    alternations = []
    for pattern in patterns:
        source = pattern.pattern
        whole = source.startswith(head) and source.endswith(tail)
        if not whole or _group_end(source, len(head)) != len(source) - len(tail):
            raise ValueError("not a word alternation")
        alternations.append(source[len(head) : -len(tail)])
    return _by_first_letter(head + "|".join(alternations) + tail)


def _grouped(alternatives: list[str]) -> list[str]:
    branches: list[str] = []
    letters: dict[str, list[str]] = {}  # the run since the last alternative left in place
    for alternative in (part for each in alternatives for part in _distributed(each)):
        if not alternative[:1].isalpha() or alternative[1:2] in ("?", "*", "+", "{"):
            branches += _letter_branches(letters)
            letters = {}
            branches.append(alternative)
        else:
            letters.setdefault(alternative[0], []).append(alternative[1:])
    return branches + _letter_branches(letters)


def _distributed(alternative: str) -> list[str]:
    """`(?:a|b)c` as `ac`, `bc`: tried in the same order, so it matches the same, but each
    alternative now begins with its letter."""
    if not alternative.startswith("(?:"):
        return [alternative]
    end = _group_end(alternative, 3)
    rest = alternative[end + 1 :]
    if rest[:1] in ("?", "*", "+", "{"):
        return [alternative]
    return [
        part + rest
        for inner in _top_level_split(alternative[3:end])
        for part in _distributed(inner)
    ]


def _letter_branches(letters: dict[str, list[str]]) -> list[str]:
    return [
        letter + (tails[0] if len(tails) == 1 else f"(?:{'|'.join(tails)})")
        for letter, tails in letters.items()
    ]


def _group_end(pattern: str, start: int) -> int:
    """The index of the `)` closing the group whose content begins at `start`."""
    depth = 0
    for index, char in _unescaped(pattern, start):
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                return index
            depth -= 1
    raise ValueError("unbalanced group")


def _top_level_split(alternation: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for index, char in _unescaped(alternation, 0):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(alternation[start:index])
            start = index + 1
    return [*parts, alternation[start:]]


def _unescaped(pattern: str, start: int) -> Iterator[tuple[int, str]]:
    """(index, character) of `pattern` from `start`, past escapes and character classes."""
    index, in_class = start, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        else:
            yield index, char
        index += 1


_LETTERS = r"[^\W\d_]"
_LOWER = r"[a-záéíóúñü]"
_NAME_WORD = rf"{_LETTERS}+(?:['’-]{_LETTERS}+)*"
_CAP_WORD = rf"[A-ZÁÉÍÓÚÑÜ]{_LETTERS}*(?:['’-]{_LETTERS}+)*"
_ORG_WORD = r"[A-Z0-9ÁÉÍÓÚÑÜ][\w&'’.-]*"
_ORG = rf"{_ORG_WORD}(?:\s+(?:&\s+)?{_ORG_WORD}){{0,3}}"
_PLACE = rf"{_CAP_WORD}(?:\s+(?:de\s+|del\s+)?{_CAP_WORD}){{0,3}}"

_SENTENCE_END_RE = re.compile(r"(?<=[.!?;])\s+|\n+")
_SEGMENT_RE = re.compile(r"[,;:.!?¡¿()\n]+")
_WORD_RE = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_EDGE_PUNCTUATION = ".,;:!?¡¿()'\""

# Text addressed to the machine rather than to the business: instructions, role play,
# field names and assignments. Everything from such a marker to the end of its sentence is
# dropped, because a prospect describing themselves never needs that vocabulary.
# Like every pattern below without a case-sensitive part, it reads lower-cased text: without
# IGNORECASE the regex engine skips at once the alternatives whose first letter differs.
_INJECTION_RE = _by_first_letter(
    r"\b(?:(?:system|sistema|assistant|asistente|developer|admin|user)\s*:"
    r"|ignor\w*\b.{0,40}\b(?:instruc\w*|reglas|rules|prompt)"
    r"|(?:olvida\w*|forget|disregard|override)\b"
    r"|(?:new|nuevas)\s+instruc\w*"
    r"|(?:you\s+are\s+now|from\s+now\s+on|eres\s+un|act[uú]a\s+como|act\s+as|pretend)\b"
    r"|extract\w*|extra[eií]\w*"
    r"|(?:the|la|el|to\s+the)\s+(?:ai|ia|llm|bot|model)\b"
    r"|(?:nivel_interes|productos_interes|intencion|json|prompt|jailbreak|debug\s+mode)\b"
    r"|(?:set|pon|pone|poner|establece|cambia|change|output|devuelve|return)\b"
    r"[^.]{0,30}\b(?:email|correo|nombre|name|tel[eé]fono|phone|intent\w*|nivel\w*|interest)\b"
    r"|(?:the\s+lead|el\s+lead|del\s+cliente|the\s+(?:customer|client)'s)\b)"
)
_ASSIGNMENT_RE = re.compile(r"\w\s*=\s*\S")
_THIRD_PARTY_RE = _by_first_letter(
    r"\b(?:mi|my|our|nuestr[oa])\s+(?:jef[ea]|compañer[oa]|colega|soci[oa]|herman[oa]|"
    r"espos[oa]|mujer|marido|amig[oa]|boss|manager|colleague|co-?worker|partner|friend|wife|"
    r"husband|brother|sister|assistant|asistente|secretari[oa])\b"
    r"|\bde\s+parte\s+de\b|\bon\s+behalf\s+of\b"
    r"|\b(?:his|her|their)\s+(?:email|phone|number|name)\b"
    r"|\b(?:su|sus)\s+(?:email|correo|tel[eé]fono|n[uú]mero|nombre)\b",
)

_STRONG_NAME_RE = _by_first_letter(
    rf"\b(?:me\s+llamo|mi\s+nombre\s+es|my\s+name\s+is|my\s+name's|my\s+name’s|name\s*:"
    rf"|nombre\s*:)\s*"
    rf"(?P<name>{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,4}})",
)
_WEAK_NAME_RE = _by_first_letter(
    rf"\b(?:soy|i'm|i’m|i\s+am|this\s+is|aqu[ií]|(?:te|le|les)\s+(?:habla|escribe))\s+"
    rf"(?P<name>{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,4}})",
)
_HERE_NAME_RE = re.compile(
    rf"(?P<name>{_CAP_WORD}(?:\s+{_CAP_WORD}){{0,3}})(?:\s+from\s+(?P<org>{_ORG}))?\s+here\b"
)
_HERE_FROM_RE = re.compile(rf"{_CAP_WORD}\s+here\s+from\s+(?P<org>{_ORG})")
_NAME_ORG_RE = re.compile(
    rf"(?i:\b(?:soy|i'm|i’m|i\s+am|this\s+is|me\s+llamo|mi\s+nombre\s+es|my\s+name\s+is))\s+"
    rf"{_CAP_WORD}(?:\s+{_CAP_WORD}){{0,3}},?\s+(?i:from|de|of)\s+(?P<org>{_ORG})"
)
# "Con Rocío Vega, de Inmobiliaria Costa" / "Dan Ito, from Acme": a name answered with its firm.
_LEADING_NAME_ORG_RE = re.compile(
    rf"^\W*(?:(?i:con|with|soy|i'm|i’m|it's|it’s|this\s+is)\s+)?{_CAP_WORD}(?:\s+{_CAP_WORD}){{0,3}}"
    rf",\s+(?i:de|from)\s+(?P<org>{_ORG})"
)
_NAME_PARTICLES = frozenset({"de", "del", "la", "las", "los", "van", "von", "da", "di", "le"})

_COMPANY_RES = (
    re.compile(
        rf"(?i:\b(?:trabajo|trabajamos|work|working|works)\s+(?:en|para|at|for))\s+(?P<org>{_ORG})"
    ),
    re.compile(
        rf"(?i:\b(?:empresa|compañía|company|organi[sz]ation|startup)"
        rf"(?:\s+(?:se\s+llama|es|is|called|named))?)\s+(?P<org>{_ORG})"
    ),
    re.compile(rf"(?i:\b(?:somos|we\s+are|we're|we’re))\s+(?P<org>{_ORG})"),
    _NAME_ORG_RE,
    _HERE_NAME_RE,
    _HERE_FROM_RE,
    _LEADING_NAME_ORG_RE,
)
_LOCATION_RE = re.compile(
    rf"(?i:\b(?:based|located|situad[oa]s?|ubicad[oa]s?)\s+(?:in|en|at)|\b(?:estamos|vivo|vivimos)"
    rf"\s+en|\b(?:live|living)\s+in|\b(?:we're|we’re|we\s+are|i'm|i’m|i\s+am)\s+(?:in|from)"
    rf"|\bdesde|\b(?:soy|somos)\s+de)\s+(?P<place>{_PLACE}(?:,\s*{_CAP_WORD}(?:\s+{_CAP_WORD})?"
    rf"(?=\s*$|\s*[.!?,;]|\s+(?:and|y)\b))?)"
)
_PREPOSITION_RE = re.compile(r"\b(?:in|en|de|from|at|desde|near|cerca\s+de)\s+$")
_PLACES = _word_set(
    "madrid barcelona valencia sevilla zaragoza málaga murcia palma bilbao alicante córdoba "
    "valladolid vigo gijón granada a_coruña vitoria oviedo santander pamplona san_sebastián "
    "salamanca toledo cádiz tenerife las_palmas logroño burgos león almería huelva "
    "ciudad_de_méxico cdmx monterrey guadalajara puebla tijuana bogotá medellín cali "
    "barranquilla lima santiago buenos_aires rosario mendoza montevideo quito guayaquil caracas "
    "la_paz asunción san_josé santo_domingo san_juan la_habana panamá españa méxico mexico "
    "colombia argentina chile perú peru ecuador venezuela uruguay paraguay bolivia cuba spain "
    "usa united_states estados_unidos uk united_kingdom reino_unido england inglaterra francia "
    "france alemania germany italia italy portugal canada canadá ireland irlanda australia "
    "brasil brazil new_york nyc los_angeles chicago houston austin dallas san_francisco seattle "
    "boston miami portland denver atlanta phoenix san_diego philadelphia las_vegas toronto "
    "vancouver montreal london manchester birmingham edinburgh glasgow dublin paris parís "
    "berlin berlín munich múnich amsterdam lisbon lisboa rome roma milan milán sydney melbourne "
    "texas california florida oregon ohio colorado arizona illinois"
)
_PLACE_RE = re.compile(rf"\b{_trie(_PLACES)}\b")

_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Bounded repetitions and a start only at a word boundary keep long inputs linear.
_OBFUSCATED_EMAIL_RE = re.compile(
    r"(?<![\w.+-])(?P<user>[\w+-]+(?:(?:\.|\s+(?:dot|punto)\s+)[\w+-]+){0,4})\s*"
    r"(?P<at>\[at\]|\(at\)|\{at\}|\s(?:at|arroba)\s)\s*"
    r"(?P<domain>[\w-]+(?:(?:\.|\s*\[dot\]\s*|\s*\(dot\)\s*|\s+(?:dot|punto)\s+)[\w-]+){1,4})",
)
_OBFUSCATED_DOT_RE = re.compile(r"\s*\[dot\]\s*|\s*\(dot\)\s*|\s+(?:dot|punto)\s+")
_TLD_RE = re.compile(r"\.[a-z]{2,24}$")
# "it's b.ortiz@x.org, not b.ortis@x.org": the value after a negation is the wrong one.
_NEGATED_RE = re.compile(
    r"\b(?:not|no|no\s+es|isn't|instead\s+of|rather\s+than|en\s+vez\s+de|en\s+lugar\s+de)"
    r"\s+(?:el\s+|the\s+)?$",
)

_PHONE_RE = re.compile(r"(?<![\w@+.,])(?:\+\s?)?\(?\d[\d \t().-]{5,20}\d(?![\w@])")
# The digits every phone number holds: a quick test before the costlier pattern above.
_PHONE_CUE_RE = re.compile(r"\d[\d \t().-]{5,20}\d")
_PHONE_CONTEXT_RE = re.compile(
    r"tel[eé]fono|m[oó]vil|celular|n[uú]mero|whatsapp|ll[aá]m|phone|number|call|cell|mobile|text",
)
_NOT_PHONE_AFTER_RE = re.compile(r"\s*(?:€|\$|£|%|euros?|eur|usd|d[oó]lares|dollars?)")
# Numbers that identify an order, an invoice, a ticket or a document: as long as a phone
# number, and said with "número" or "number", yet never the prospect's phone.
_REFERENCE_WORDS = (
    r"pedidos?|orders?|factura|invoice|ticket|tique|referencia|ref|reference|tracking"
    r"|seguimiento|env[ií]o|shipment|expediente|caso|case|incidencia|albar[aá]n|cuenta|account"
    r"|contrato|contract|p[oó]liza|policy|dni|nif|cif|nie|pasaporte|passport|postal|zip"
    r"|iban|serie|serial|transacci[oó]n|transaction|localizador|reserva|booking|confirmaci[oó]n"
    r"|confirmation"
)
# "número"/"number" asks for a phone, unless it is an order's or an invoice's ("your order
# number", "el número de pedido"); one fixed-width look-behind per English reference word,
# tried only after an "n", so most positions cost one character test.
_ENGLISH_REFERENCE_WORDS = _word_set(
    "order invoice ticket reference tracking case account contract policy passport serial "
    "transaction booking confirmation"
)
_NOT_REFERENCE_NUMBER = "".join(rf"(?<!{word}\sn)" for word in sorted(_ENGLISH_REFERENCE_WORDS))
# The reference word right before a number, with only "number", "#", "de", "is" and the like
# between them: "pedido número 4567891", "order #123456789", "número de factura: 2023-001234".
_REFERENCE_BEFORE_RE = re.compile(
    rf"(?:#|\bn[º°]|\b(?:{_REFERENCE_WORDS}))"
    r"(?:\s*(?:\bn[uú]mero\b|\bnumber\b|\bnum\b|\bno\b|\bid\b|n[º°]|[#:.]|\bde\b|\bdel\b"
    r"|\bis\b|\bes\b|\bwas\b|\bera\b|\bmi\b|\bmy\b|\bthe\b|\bel\b))*\s*$"
)
_MIN_PHONE_DIGITS, _SURE_PHONE_DIGITS, _MAX_PHONE_DIGITS = 7, 9, 15

_AMOUNT = r"\d{1,3}(?:[.,\s]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_MULTIPLIER = r"millones|millón|million|mil|k|m"
_CURRENCY_WORD = (
    r"€|\$|£|euros?|eur|usd|us\$|d[oó]lares|dollars?|bucks|libras|pounds?|gbp|pesos|mxn"
)
_BUDGET_RE = re.compile(
    rf"(?P<symbol>[€$£])\s?(?P<amount1>{_AMOUNT})\s?(?:(?P<mult1>{_MULTIPLIER})\b)?"
    rf"|(?P<amount2>{_AMOUNT})\s?(?:(?P<mult2>{_MULTIPLIER})\b)?\s?(?:de\s+)?"
    rf"(?P<currency>{_CURRENCY_WORD})(?!\w)",
)
_BARE_BUDGET_RE = re.compile(
    rf"\b(?:presupuesto|budget|spend|gastar|invertir|invest)"
    rf"(?:\s*(?:[:=]|\b(?:es|is|of|de|around|about|unos|aproximado|máximo)\b)){{0,3}}"
    rf"\s*(?P<amount2>{_AMOUNT})\s?(?:(?P<mult2>{_MULTIPLIER})\b)?(?!\s*[\w€$£])",
)
# Every alternative begins with a letter (the boundary before "max" is checked behind it), so
# the regex engine skips at once the positions where none can begin.
_BUDGET_CONTEXT_RE = re.compile(
    r"presupuesto|budget|spend|gastar|invertir|invest|tenemos|contamos|disponemos|hasta|up\s+to"
    r"|m[aá]ximo|max(?<=\bmax)|around|about|unos|aprox|alrededor|we\s+have|we\s+can",
)
_CURRENCIES = {
    "€": "EUR", "euro": "EUR", "euros": "EUR", "eur": "EUR",
    "$": "USD", "us$": "USD", "usd": "USD", "dolares": "USD", "dollar": "USD", "dollars": "USD",
    "bucks": "USD", "£": "GBP", "libras": "GBP", "pound": "GBP", "pounds": "GBP", "gbp": "GBP",
    "pesos": "MXN", "mxn": "MXN",
}  # fmt: skip
_MULTIPLIERS = {"k": 1e3, "mil": 1e3, "m": 1e6, "million": 1e6, "millón": 1e6, "millones": 1e6}

_NUMBER_WORDS = (
    r"\d+|un|una|unos|unas|dos|tres|cuatro|cinco|seis|siete|ocho|nueve|diez|quince|pocos|pocas"
    r"|a|an|one|two|three|four|five|six|seven|eight|nine|ten|fifteen|a\s+few|a\s+couple\s+of"
)
_MONTHS = (
    r"enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|setiembre|octubre|noviembre"
    r"|diciembre|january|february|march|april|june|july|august|september|october|november"
    r"|december"
)
_TIMEFRAME_RE = re.compile(
    rf"\b(?:(?P<t>(?:en|dentro\s+de)\s+(?:(?:los|las)\s+pr[oó]xim[oa]s\s+)?(?:{_NUMBER_WORDS})\s+"
    r"(?:d[ií]as?|semanas?|mes(?:es)?|años?|trimestres?|horas?)"
    rf"|(?:in|within)\s+(?:the\s+next\s+)?(?:{_NUMBER_WORDS})\s+(?:days?|weeks?|months?|years?"
    r"|quarters?|hours?)"
    r"|(?:este|esta|el\s+pr[oó]ximo|la\s+pr[oó]xima|el\s+siguiente|la\s+siguiente)\s+(?:mes|semana"
    r"|trimestre|año|semestre|verano|otoño|invierno|primavera)"
    r"|(?:el|la)\s+(?:mes|semana|año)\s+que\s+viene"
    r"|(?:this|next|the\s+next)\s+(?:week|month|quarter|year|semester|summer|fall|autumn|winter"
    r"|spring)"
    r"|fin(?:al)?\s+de\s+(?:mes|año|trimestre)|end\s+of\s+(?:the\s+)?(?:month|year|quarter|week)"
    r"|hoy\s+mismo|lo\s+antes\s+posible|cuanto\s+antes|lo\s+m[aá]s\s+pronto\s+posible"
    r"|de\s+inmediato|inmediatamente|hoy|(?<!la\s)(?<!las\s)mañana|pasado\s+mañana"
    r"|asap|as\s+soon\s+as\s+possible|right\s+away|immediately|today|tomorrow)"
    rf"|(?:en|para|antes\s+de|by|in|before)\s+(?P<month>{_MONTHS}))\b",
)
_URGENT_RE = _by_first_letter(
    r"\b(?:urgente\w*|ya\s+mismo|hoy\s+mismo|cuanto\s+antes|lo\s+antes\s+posible|asap|urgent\w*"
    r"|as\s+soon\s+as\s+possible|right\s+away|immediately)\b",
)

_CONTAINER = (
    r"(?:plan(?:es)?|plans?|paquetes?|packages?|m[oó]dulos?|modules?|servicios?|services?"
    r"|add-?ons?|tools?|herramientas?)"
)
_TIER = (
    r"premium|b[aá]sico|pro|profesional|empresa|enterprise|business|starter|avanzado|est[aá]ndar"
    r"|standard|anual|mensual|gratuito|free|basic|annual|monthly"
)
# Longer phrases first: alternation takes the first branch that matches, not the longest.
_VOCABULARY = (
    r"software\s+de\s+\w+|certificados?\s+ssl|ssl\s+certificates?|dise[ñn]o\s+web|web\s+design"
    r"|desarrollo\s+web|web\s+development|p[aá]gina\s+web|sitio\s+web"
    r"|tienda\s+(?:online|en\s+l[ií]nea|virtual)|online\s+stores?|e-?commerce"
    r"|app\s+m[oó]vil|aplicaci[oó]n\s+m[oó]vil|mobile\s+apps?|e-?mail\s+marketing"
    r"|marketing\s+digital|digital\s+marketing|redes\s+sociales|social\s+media"
    r"|soporte\s+premium|premium\s+support|copias\s+de\s+seguridad|websites?|web|crm|erp|seo|sem"
    r"|api|hosting|dominios?|domains?|ssl|apps?|chatbots?|anal[ií]tica|analytics"
    r"|consultor[ií]a|consulting|formaci[oó]n|training|capacitaci[oó]n|cursos?|courses?"
    r"|licencias?|licen[cs]es?|facturaci[oó]n|invoicing|billing|mantenimiento|maintenance"
    r"|ciberseguridad|cybersecurity|backups?|cloud|vps|newsletter"
)
_PRODUCT_RE = re.compile(
    rf"\b(?:(?P<tier>plan(?:es)?\s+(?:{_TIER})|(?:{_TIER})\s+plans?)"
    rf"|(?:{_CONTAINER}\s+(?:de|del|of|for)\s+(?:(?:el|la|los|las|the)\s+)?)?"
    rf"(?P<product>{_VOCABULARY})(?:\s+{_CONTAINER})?"
    r"|(?<!no\s)(?P<container>paquetes?|packages?|planes))\b",
)
# A product the prospect turns down ("no me interesa el SEO", "I don't need a website", "el CRM
# y no el ERP") is not one they are interested in: its clause is left out, up to a comma or a
# "but".
_DECLINED_CLAUSE_RE = re.compile(
    r"\b(?:no\s+(?:me|nos)\s+interesan?|no\s+(?:estoy|estamos)\s+interesad[oa]s?"
    r"|not\s+interested|no\s+(?:quiero|queremos|necesito|necesitamos|busco|buscamos)"
    r"|(?:don't|don’t|do\s+not)\s+(?:want|need)|y\s+no|and\s+not)\b"
    r"[^,;¿?.!]*?(?=[,;¿?.!]|\s+(?:pero|but|sino|just|s[oó]lo|only)\b|$)"
)
_INTEREST_RE = re.compile(
    r"\b(?:interesad[oa]s?\s+en|interested\s+in|me\s+interesan?|nos\s+interesan?)\s+"
    r"(?:(?:el|la|los|las|un|una|the|a|an|your|vuestr[oa]s?|sus?)\s+)?"
    rf"(?P<thing>{_LETTERS}+(?:\s+{_LETTERS}+)?)",
)

_ROLE_ES = (
    r"director|directora|gerente|jefe|jefa|responsable|coordinador|coordinadora|encargad[oa]"
    r"|administrador|administradora|fundador|fundadora|cofundador|cofundadora|dueñ[oa]"
    r"|propietari[oa]|soci[oa]|analista|ingenier[oa]|consultor|consultora|desarrollador"
    r"|desarrolladora|contable|técnic[oa]|presidente|presidenta|gestor|gestora"
)
_ROLE_EN = (
    r"manager|director|head|lead|engineer|developer|founder|co-?founder|owner|consultant|analyst"
    r"|president|officer|coordinator|specialist|administrator|partner|executive"
)
_ROLE_ACRONYM = r"CEO|CTO|CFO|COO|CMO|CIO|CISO|CPO|VP"
_ROLE_ES_ADJECTIVE = (
    r"comercial|general|t[eé]cnic[oa]|financier[oa]|ejecutiv[oa]|adjunt[oa]|regional"
    r"|creativ[oa]|operativ[oa]|digital|senior|junior"
)
_ROLE_STOP = r"(?:de|del|en|y|e|para|con|at|and|of|in|for)\b"
_ROLE_RE = re.compile(
    r"(?i:\b(?:soy|como|mi\s+cargo\s+es|mi\s+puesto\s+es|trabajo\s+de|i'm|i’m|i\s+am|as"
    r"|my\s+role\s+is|my\s+title\s+is|i\s+work\s+as)\s+|,\s+)(?:(?i:el|la|un|una|the|a|an)\s+)?"
    rf"(?P<role>(?:{_ROLE_ACRONYM})\b"
    rf"|(?i:(?:{_ROLE_ES}))(?:\s+(?:{_ROLE_ES_ADJECTIVE}))?"
    rf"(?:\s+(?:de|del)\s+{_LOWER}+(?:\s+(?!{_ROLE_STOP}){_LOWER}+)?)?\b"
    rf"|(?i:(?:head|director|vp|vice\s+president)\s+of\s+{_LETTERS}+)\b"
    rf"|(?i:(?:[a-z]+\s+){{0,2}}(?:{_ROLE_EN}))\b)"
    rf"(?:\s+(?i:at|de|del|en|of|for|in)\s+(?P<org>{_ORG}))?"
)

_COMPLAINT_RE = _by_first_letter(
    r"\b(?:queja\w*|quejarme|reclam\w*|molest[oa]s?|enfadad[oa]s?|indignad[oa]s?|hart[oa]s?"
    r"|inaceptable|vergüenza|p[eé]sim[oa]s?|estafa|reembolso|devoluci[oó]n|me\s+cobraron"
    r"|cobro\s+indebido|pido\s+la\s+baja|darme\s+de\s+baja|complain\w*|unacceptable|awful"
    r"|worst|refund|charged\s+(?:me\s+)?twice|overcharged|ridiculous|scam|furious|angry"
    r"|frustrated|disappointed|nobody\s+(?:answers|responds|replies)|nadie\s+(?:responde|contesta)"
    r"|cancel\s+my|desastre|devolv\w+\s+el\s+dinero|money\s+back)\b",
)
_SUPPORT_RE = _by_first_letter(
    r"\b(?:no\s+puedo\s+(?:acceder|entrar|iniciar|conectar|descargar|pagar)|error\w*"
    r"|no\s+funciona\w*|no\s+carga|no\s+me\s+(?:llega|deja|funciona|carga)|contrase[ñn]a"
    r"|restablecer|iniciar\s+sesi[oó]n|incidencia|fallo|aver[ií]a|soporte\s+t[eé]cnico"
    r"|(?:can't|can’t|cannot|unable\s+to)\s+(?:log|access|sign|reset|login|connect|download)"
    r"|password|reset|won't\s+(?:load|work|open|start)|doesn't\s+work|not\s+working"
    r"|keeps?\s+(?:failing|crashing)|crash\w*|bug|broken|help\s+(?:with|setting)|my\s+account"
    r"|fix\s+(?:it|this|my)|deleted|lost\s+(?:all\s+)?my|arregl\w*|se\s+ha\s+borrado|borr[oó]"
    r"|mi\s+cuenta)\b",
)
_OTHER_RE = _by_first_letter(
    r"\b(?:vacantes?|empleo|trabajar\s+con\s+(?:vosotros|ustedes)|mi\s+cv|curr[ií]culum"
    r"|hiring|job\s+(?:opening|offer|position)|resume|internship|pr[aá]cticas|partnership"
    r"|proveedores|vendor|survey|encuesta)\b",
)
_BROWSING_RE = _by_first_letter(
    r"\b(?:s[oó]lo\s+(?:estoy\s+)?mirando|s[oó]lo\s+miraba|just\s+(?:browsing|looking)"
    r"|looking\s+around|no\s+(?:plans?|intention)\s+to\s+buy|not\s+(?:ready|looking)\s+to\s+buy"
    r"|por\s+curiosidad|just\s+curious|de\s+momento\s+no|por\s+ahora\s+no"
    # Interest withdrawn: it outweighs a wish to buy said before it, as browsing does.
    r"|ya\s+no\s+(?:me|nos)\s+interesan?|ya\s+no\s+(?:quiero|queremos)\s+(?:comprar|contratar)"
    r"|no\s+longer\s+interested|not\s+interested\s+any\s?more|changed\s+my\s+mind"
    r"|he\s+cambiado\s+de\s+opini[oó]n|cambi[eé]\s+de\s+opini[oó]n)\b",
)
# A prospect turning the whole offer down ("no me interesa", "I don't want to buy anything"),
# not one product of it ("no me interesa el SEO"): the buying words inside are what they do
# not want. Not "no, gracias" nor "nothing else", which end many a purchase.
_NO_OBJECT = r"(?!\s+(?:el|la|los|las|en|ese|esa|este|esta|in|the|this|that|your|a|an|un|una)\b)"
_DECLINE_RE = _by_first_letter(
    rf"\b(?:no\s+(?:me|nos)\s+interesan?{_NO_OBJECT}"
    rf"|no\s+(?:estoy|estamos)\s+interesad[oa]s?(?:\s+en\s+(?:comprar|contratar|nada)|{_NO_OBJECT})"
    r"|no\s+(?:quiero|queremos|necesito|necesitamos)\s+(?:(?:comprar|contratar)\s+)?nada"
    r"(?!\s+m[aá]s)|no\s+(?:quiero|queremos|voy\s+a|vamos\s+a)\s+(?:comprar|contratar)\b"
    rf"|not\s+interested(?:\s+in\s+(?:buying|purchasing|anything)|{_NO_OBJECT})"
    r"|(?:don't|don’t|do\s+not)\s+(?:want|need)\s+(?:to\s+(?:buy|purchase)\b|anything(?!\s+else))"
    r"|(?:won't|won’t|will\s+not)\s+(?:buy|purchase))\b",
)
_BUY_RE = _by_first_letter(
    r"\b(?:compr(?:ar|o|amos|ar[ií]a)|contrat(?:ar|o|amos|ar[ií]a)|adquirir|suscrib\w*|precios?"
    r"|tarifas?|cu[aá]nto\s+(?:cuesta|cuestan|vale|valen|costar[ií]a|sale)|cuesta|cuestan"
    r"|costar[ií]a|cotizaci[oó]n|presupuesto|propuesta|proposal|demo|pagar|pago"
    r"|necesit(?:o|amos|an)\b(?!\s+(?:ayuda|informaci|saber|info))"
    r"|(?:quiero|queremos|quisiera|quisi[eé]ramos)\s+(?:un|una|unos|unas|el|la"
    r"|los|las|contratar|comprar|implantar|ver|empezar|presupuesto)"
    r"|busc(?:o|amos)\b(?!\s+(?:info|informaci|saber|m[aá]s))"
    r"|buy|purchase|pricing|prices?|costs?|how\s+much|quote|sign\s+up|subscribe|budget|spend"
    r"|pay|(?:we|i)\s+need\b(?!\s+help)|need\s+(?:someone|somebody|to\s+(?:buy|hire|get))"
    r"|(?:we|i)\s+(?:want|would\s+like|'d\s+like)\s+(?:a|an|the|to\s+(?:buy|purchase|get|sign))\b"
    r"|looking\s+for\b(?!\s+(?:info|information|more|details))|get\s+started|launch)\b",
)
_STRONG_BUY_RE = _by_first_letter(
    r"\b(?:compr(?:ar|o|amos)|contrat(?:ar|o|amos)|adquirir|demo|buy|purchase|sign\s+up)\b",
)
_INFO_RE = _by_first_letter(
    r"\b(?:informaci[oó]n|info|saber|conocer|c[oó]mo\s+funciona|incluye|ten[eé]is|tienen"
    r"|ofrecen|ofrec[eé]is|hac[eé]is|hacen|interesa\w*|interesad[oa]s?|pregunt\w*|dudas?"
    r"|detalles|information|details|know|learn|tell\s+me\s+more|more\s+about|how\s+does"
    r"|what\s+does|includes?|do\s+you\s+(?:offer|have|do|sell)|interested|brochure|wondering"
    r"|you\s+(?:guys\s+)?(?:do|offer|sell|have)|difference|diferencia|compar\w*"
    r"|trabaj[aá]is\s+con|trabajan\s+con|do\s+you\s+work\s+with)\b",
)
_CONTACT_RE = _by_first_letter(
    r"\b(?:ll[aá]m(?:ame|adme|arme|arais|ennos|enme)|cont[aá]ct(?:ame|adme|enme)|escr[ií]beme"
    r"|call\s+me|reach\s+me|contact\s+me|email\s+me|text\s+me)\b",
)

# Most chats hold none of these: one scan for them all says so, and spares the scan of each.
_RARE_SIGNAL_RE = _union(
    _COMPLAINT_RE,
    _SUPPORT_RE,
    _OTHER_RE,
    _BROWSING_RE,
    _DECLINE_RE,
    _STRONG_BUY_RE,
    _CONTACT_RE,
    _URGENT_RE,
)

_ASK_RES = {
    "nombre": re.compile(
        r"c[oó]mo\s+te\s+llamas|c[oó]mo\s+se\s+llama|tu\s+nombre|su\s+nombre"
        r"|con\s+qui[eé]n\s+(?:tengo|hablo)|your\s+name|who\s+am\s+i\s+(?:speaking|talking|chatting)"
        r"|what\s+should\s+i\s+call\s+you",
    ),
    "telefono": re.compile(
        rf"tel[eé]fono|m[oó]vil|whatsapp|phone|n{_NOT_REFERENCE_NUMBER}(?:[uú]mero|umber)"
        rf"(?!\s+(?:de\s+(?:la\s+|el\s+|su\s+|tu\s+)?)?(?:{_REFERENCE_WORDS}))"
    ),
    # A reference's number asked for ("el número de pedido", "your order number"), not a
    # reference word alone ("en ese caso").
    "referencia": re.compile(
        rf"(?:n[uú]mero|n[º°])\s+(?:de\s+(?:la\s+|el\s+|su\s+|tu\s+)?)?(?:{_REFERENCE_WORDS})\b"
        rf"|\b(?:{_REFERENCE_WORDS})\s*(?:number|no\b|#|id\b)"
    ),
    "presupuesto": re.compile(r"presupuesto|budget"),
    "empresa": re.compile(r"empresa|compañ[ií]a|company|organi[sz]ation"),
    "ubicacion": re.compile(r"d[oó]nde|ciudad|where|city|located"),
}

_ES_WORDS = _word_set(
    "de la que el en y los las del se por un una para con es su al lo como más pero sus le ya "
    "este esta entre cuando muy sin sobre también hola gracias quiero quería tengo tenemos estoy "
    "soy mi mis nada buenas buenos días tardes vale bueno necesito cuánto qué cómo dónde nos os "
    "vosotros usted ustedes eso esto hay tu tú yo somos está son sí claro perdón"
)
_EN_WORDS = _word_set(
    "the and to of in is it you that for on with as are this be at have from or an by not but "
    "what all can your my we our i i'm i'd we're it's hi hello hey thanks thank please just want "
    "need would like how much do does yes yeah sure okay nvm there here about sorry"
)
_STOPWORDS = (
    _ES_WORDS
    | _EN_WORDS
    | _word_set("me a o no si ok vale gracias thanks hola hello hi hey buenas buenos")
)
_FILLERS = _word_set(
    "claro sí si sure yes ok okay vale bueno pues perfecto yeah con with it's it’s es soy"
)
_GREETINGS = _word_set("hola hello hi hey buenas buenos good gracias thanks thank")
# Words that follow "soy" or "I'm" when no name does, capitalised or not ("I'm Ready to buy",
# "Soy Autónomo"): a state or an occupation, not a name.
_NOT_NAMES = _word_set(
    "interesado interesada interested looking buscando nuevo nueva new here aquí cliente customer "
    "from de ready happy glad calling writing reaching trying wondering planning thinking "
    "currently autónomo autónoma freelance freelancer particular estudiante student emprendedor "
    "emprendedora"
)
_MAX_NAME_WORDS = 4
_LOOKBEHIND_CHARS = 24
_NOT_FIRST_NAME_WORDS = _NOT_NAMES | _NAME_PARTICLES
_NOT_ORGS = _STOPWORDS | _NOT_NAMES
_NOT_ROLE_ENDINGS = _STOPWORDS | _NAME_PARTICLES
_T = TypeVar("_T")
_BASE_LEVEL, _BUY_LEVEL, _BROWSING_LEVEL = 5, 7, 2

# What is read of a snapshot: a long turn at its start and its end (where people introduce
# themselves, ask, and sign off), a long chat at its opening and its latest turns. This bounds
# the work for the largest snapshot the producer accepts (31 turns of 8,000 characters).
_TURN_HEAD_CHARS = 1000
_TURN_TAIL_CHARS = 1000
_OPENING_MESSAGES = 2
_READ_CHARS = 12_000
# Longer snapshots are extracted in a thread, so the event loop (the API's too, under `nexus
# up`) keeps turning; shorter ones inline, where a thread would cost more than the work.
_INLINE_CHARS = 8000


def _cue(words: str) -> re.Pattern[str]:
    """A pattern finding any of `words` (`_` for a space) anywhere: a cheap test of whether a
    lower-cased sentence can hold what a costlier pattern looks for."""
    return re.compile(_trie(words.split()))


# Each cue accepts at least everything its pattern needs; most read the lower-cased sentence.
_SENTENCE_END_CUE_RE = re.compile(r"[.!?;\n]")
_STRONG_NAME_CUE_RE = _cue("llamo nombre name")
_WEAK_NAME_CUE_RE = _cue("soy i'm i’m i_am this_is aquí aqui habla escribe")
_HERE_CUE_RE = _cue("here")
_INTRO_CUE_RE = _cue("soy i'm i’m i_am this_is me_llamo mi_nombre my_name")
_FIRM_AFTER_CUE_RE = re.compile(r"\b(?:from|de|of)\s")
# A word every phrase of `_THIRD_PARTY_RE` holds: the relation or the detail it ends with ("mi
# jefa", "su correo"; "tel" and "mero" for "teléfono" and "número" with or without accents), or
# "parte" and "behalf". Few sentences hold one, and a trie is quicker to scan than the phrases,
# whose leading word boundary leaves the regex engine no first character to skip to.
_THIRD_PARTY_CUE_RE = _cue(
    "jef compañer colega soci herman espos mujer marido amig boss manager colleague worker "
    "partner friend wife husband brother sister assistant asistente secretari parte behalf email "
    "phone number name correo tel mero nombre"
)
_ROLE_BEFORE_CUE_RE = re.compile(
    r",|\b(?:soy|como|mi\s+cargo|mi\s+puesto|trabajo\s+de|i['’]m|i\s+am|as|my\s+role"
    r"|my\s+title|i\s+work)\s"
)
_ROLE_WORD_CUE_RE = _cue(
    "director gerente jefe jefa responsable coordina encargad administra fundador dueñ "
    "propietari soci anal ingenier consult desarrollador contable técnic president gestor "
    "manager head lead engineer developer founder owner officer specialist partner executive "
    "vice vp"
)
_ROLE_ACRONYM_CUE_RE = re.compile(_ROLE_ACRONYM)  # case-sensitive: read on the sentence as written
_LOCATION_CUE_RE = _cue(
    "based located situad ubicad estamos vivo vivimos live living we're we’re we_are i'm i’m "
    "i_am desde soy somos"
)
# Read on the sentence as written: a known place counts only capitalised, after a preposition.
_PLACE_CUE_RE = re.compile(r"\b(?i:in|en|de|from|at|desde|near)\s+[A-Z]")
# What that cue needs, read on the lower-cased sentence: the end of one of its words, then a space
# (only the ends, since "ı" and "ſ" match "i" and "s" there and stay as they are lower-cased).
# Most sentences lack it, and it is quicker to scan for than the cue, whose leading word
# boundary leaves the regex engine no first character to skip to.
_PLACE_HINT_RE = re.compile(r"(?:n|de|at|from|ar)\s")
_AT_CUE_RE = re.compile(r"\s(?:at|arroba)\s|[\[({]at[\])}]")
_PRODUCT_CUE_RE = _cue(
    "softw certific ssl dise desarroll develop gina sitio tienda online store commerce app "
    "aplicaci mobile mail marketing redes social media soporte premium support copias web crm "
    "erp seo sem api hosting domin domain chatbot anal consult formaci training capacitaci "
    "curso course licen factur invoic billing manten maintenance seguridad security backup "
    "cloud vps newsletter plan paquete package interes"
)
_TIMEFRAME_CUE_RE = _cue(
    "día dia semana mes año trimestre hora day week month year quarter hour verano otoño "
    "invierno primavera summer fall autumn winter spring hoy posible antes inmediat immediat "
    "mañana asap soon away today tomorrow enero febrero marzo abril mayo junio julio agosto "
    "septiembre setiembre octubre noviembre diciembre january february march april june july "
    "august september october november december"
)
_DIGIT_RE = re.compile(r"\d")


def _roles(text: str, low: str) -> tuple[re.Match[str], ...]:
    """Every job title (and the firm after it) in a sentence; read once, for `cargo` and `empresa`."""
    if not _ROLE_BEFORE_CUE_RE.search(low):
        return ()
    if not (_ROLE_WORD_CUE_RE.search(low) or _ROLE_ACRONYM_CUE_RE.search(text)):
        return ()
    return tuple(_ROLE_RE.finditer(text))


# After "me llamo" a lower-case name is still a name; after "soy" or "I'm" it must be
# capitalised, or "soy nuevo" and "I'm interested" would name the prospect. The third pattern
# is case-sensitive, so it reads the sentence as written.
_NAME_PATTERNS = (
    (_STRONG_NAME_RE, False, _STRONG_NAME_CUE_RE, True),
    (_WEAK_NAME_RE, True, _WEAK_NAME_CUE_RE, True),
    (_HERE_NAME_RE, True, _HERE_CUE_RE, False),
)
_COMPANY_CUES = (
    (_COMPANY_RES[0], "trabaj work"),
    (_COMPANY_RES[1], "empresa compañía company organi startup"),
    (_COMPANY_RES[2], "somos we"),
    (_HERE_NAME_RE, "here"),
    (_HERE_FROM_RE, "here"),
    (_LEADING_NAME_ORG_RE, ",_de_ ,_from_"),
)
_COMPANY_PATTERNS = tuple((pattern, _cue(words)) for pattern, words in _COMPANY_CUES)
# Most sentences name no firm: one search for any of the cues above says so for all six. One
# trie of all their words, not an alternation of the six, so that the regex engine knows which
# characters a match can begin with and skips the others at once.
_COMPANY_CUE_RE = _cue(" ".join(words for _, words in _COMPANY_CUES))


class _Sentence(NamedTuple):
    """A sentence of a user turn, without injected instructions."""

    text: str
    low: str  # `text` lower-cased character for character: positions in one fit the other
    own: bool  # not about someone else (a boss, a colleague), whose details are not the prospect's
    digits: bool
    roles: tuple[re.Match[str], ...]


class _Turn(NamedTuple):
    """One user turn: its sentences, and what the assistant had just asked."""

    sentences: tuple[_Sentence, ...]
    asked: frozenset[str]


class RulesExtractor:
    """Regular-expression extractor: no network, no model, same answer for the same chat."""

    name = "rules"
    in_process = True

    def __init__(self, phone_region: str | None = None) -> None:
        self.phone_region = phone_region

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        """Extract the prospect from the user's turns of `messages`."""
        started = time.perf_counter()
        if sum(len(message.content) for message in messages) > _INLINE_CHARS:
            prospect = await asyncio.to_thread(extract_prospect, messages, self.phone_region)
        else:
            prospect = extract_prospect(messages, self.phone_region)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return Extraction(prospect=prospect, extractor=self.name, model=None, latency_ms=elapsed_ms)

    async def aclose(self) -> None:
        """Nothing to release."""


def extract_prospect(messages: Sequence[ChatMessage], phone_region: str | None = None) -> Prospect:
    """The pure decision behind `RulesExtractor.extract`; `phone_region` is where a phone number
    without a country code is read when the chat names no place."""
    read = _readable(messages)
    turns = _user_turns(read)
    sentences = [sentence for turn in turns for sentence in turn.sentences]
    text = " \n".join(sentence.low for sentence in sentences)
    rare = _RARE_SIGNAL_RE.search(text) is not None
    browsing = rare and _is_browsing(text)
    intent = _intent(text, browsing, rare)
    commercial = intent not in ("soporte", "queja", "otro")
    products = _products(sentences) if commercial else []
    plazo = _last(map(_timeframe, sentences)) if commercial else None
    presupuesto = _budget(turns) if commercial else None
    level = _interest_level(text, intent, browsing, bool(products), plazo, presupuesto, rare)
    own = [sentence for sentence in sentences if sentence.own]
    ubicacion = _location(turns)
    # Raw text on purpose: how someone writes is not a value an instruction can set.
    idioma = _language(content for role, content in read if role == "user")
    phone = _phone(turns)
    regions = phone_regions(ubicacion, idioma, phone_region) if phone else ()
    return Prospect(
        nombre=_name(turns, _assistant_names(read)),
        email=_last(map(_email, own)),
        telefono=normalise_phone(phone, regions) if phone else None,
        empresa=_company(turns),
        cargo=_last(map(_role, own)),
        ubicacion=ubicacion,
        productos_interes=products,
        presupuesto=presupuesto,
        plazo=plazo,
        nivel_interes=level,
        intencion=intent,
        idioma=idioma,
        resumen=_summary(intent, products, plazo, presupuesto),
    )


def _readable(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    """(role, text) of what is read: long turns cut to their start and end, and a long chat to
    its opening and as many of its latest turns as `_READ_CHARS` allows."""
    read: list[tuple[str, str]] = [(message.role, _cut(message.content)) for message in messages]
    if sum(len(content) for _, content in read) <= _READ_CHARS:
        return read
    opening = read[:_OPENING_MESSAGES]
    room = _READ_CHARS - sum(len(content) for _, content in opening)
    latest: list[tuple[str, str]] = []
    for role, content in reversed(read[_OPENING_MESSAGES:]):
        room -= len(content)
        if room < 0:
            break
        latest.append((role, content))
    # An empty user turn stands for those left out: no question is taken as answered across them.
    return [*opening, ("user", ""), *reversed(latest)]


def _cut(text: str) -> str:
    """A long turn's start and end, cut between words; the line break between them ends a
    sentence, so no value spans the cut."""
    if len(text) <= _TURN_HEAD_CHARS + _TURN_TAIL_CHARS:
        return text
    head = text[:_TURN_HEAD_CHARS].rsplit(None, 1)[0]
    tail = text[-_TURN_TAIL_CHARS:].split(None, 1)[-1]
    return f"{head}\n{tail}"


def _lower(text: str) -> str:
    """`text` in lower case, one character for one, so a match's positions fit `text` too."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(char.lower()[0] for char in text)  # "İ" lowers to two characters


def _user_turns(read: Sequence[tuple[str, str]]) -> list[_Turn]:
    turns: list[_Turn] = []
    asked: frozenset[str] = frozenset()
    for role, content in read:
        if role == "assistant":
            low = _lower(content)
            asked = frozenset(field for field, ask in _ASK_RES.items() if ask.search(low))
        elif role == "user":
            turns.append(_Turn(_clean_sentences(content), asked))
            asked = frozenset()
    return turns


def _clean_sentences(text: str) -> tuple[_Sentence, ...]:
    if not _SENTENCE_END_CUE_RE.search(text):
        # Most turns are one sentence: no split, and no generator to build the tuple of one.
        sentence = _clean_sentence(text)
        return () if sentence is None else (sentence,)
    parts = _SENTENCE_END_RE.split(text)
    return tuple(sentence for part in parts if (sentence := _clean_sentence(part)) is not None)


def _clean_sentence(part: str) -> _Sentence | None:
    """The sentence up to where an injected instruction starts; None when nothing is left."""
    low = _lower(part)
    cut = _injection_start(low)
    if cut is not None:
        part, low = part[:cut], low[:cut]
    if not part.strip():
        return None
    own = not _about_someone_else(low)
    digits = _DIGIT_RE.search(part) is not None
    return _Sentence(part, low, own, digits, _roles(part, low))


def _about_someone_else(low: str) -> bool:
    return _THIRD_PARTY_CUE_RE.search(low) is not None and _THIRD_PARTY_RE.search(low) is not None


def _injection_start(low: str) -> int | None:
    injection = _INJECTION_RE.search(low)
    cut = None if injection is None else injection.start()
    assignment = _ASSIGNMENT_RE.search(low) if "=" in low else None
    if assignment is not None and (cut is None or assignment.start() < cut):
        return assignment.start()
    return cut


def _last(values: Iterable[_T | None]) -> _T | None:
    found: _T | None = None
    for value in values:
        if value is not None:
            found = value
    return found


def _original(text: str, match: re.Match[str], *groups: str) -> str:
    """The first of `groups` that took part in `match` (found in lower-cased text), as written."""
    for group in groups:
        start, end = match.span(group)
        if start >= 0:
            return text[start:end]
    return ""


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).lower().split())


def _words(text: str) -> list[str]:
    """The words of `text`, lower-cased: what `_WORD_RE` finds, most of them without it."""
    words: list[str] = []
    for chunk in text.lower().split():
        # Punctuation at a chunk's edges is no part of a word, and what is left of most chunks
        # is one word; only the others (digits, apostrophes, inner punctuation) need the pattern.
        word = chunk.strip(_EDGE_PUNCTUATION)
        if word.isalpha():
            words.append(word)
        elif word:
            words += _WORD_RE.findall(word)
    return words


def _name(turns: Sequence[_Turn], assistant_names: frozenset[str]) -> str | None:
    found = None
    for turn in turns:
        if "nombre" in turn.asked:
            found = _own_name(_bare_name(turn.sentences), assistant_names) or found
        for sentence in turn.sentences:
            found = _own_name(_sentence_name(sentence.text, sentence.low), assistant_names) or found
    return found


def _own_name(name: str | None, assistant_names: frozenset[str]) -> str | None:
    """`name`, unless it is the assistant's own (a visitor greeting "Sofía" is not Sofía)."""
    if name is None or (assistant_names and _fold(name) in assistant_names):
        return None
    return name


def _sentence_name(text: str, low: str) -> str | None:
    found = [
        (match.start(), _trim_name(_original(text, match, "name"), capitalised=capitalised))
        for pattern, capitalised, cue, lowered in _NAME_PATTERNS
        if cue.search(low)
        for match in pattern.finditer(low if lowered else text)
    ]
    found.sort(key=lambda item: item[0])
    return _last(name for _, name in found)


def _trim_name(raw: str, *, capitalised: bool) -> str | None:
    tokens = _name_tokens(raw.split(), capitalised=capitalised)
    while tokens and tokens[-1].lower() in _NAME_PARTICLES:
        tokens.pop()
    if not tokens or tokens[0].lower() in _NOT_FIRST_NAME_WORDS:
        return None
    name = " ".join(tokens)
    return name.title() if name.islower() else name


def _name_tokens(tokens: Sequence[str], *, capitalised: bool) -> list[str]:
    kept: list[str] = []
    words = 0  # kept tokens that are not particles
    for token in tokens:
        lower = token.lower()
        particle = lower in _NAME_PARTICLES
        if particle and kept:
            kept.append(token)
            continue
        if lower in _STOPWORDS or (capitalised and not token[0].isupper()):
            break
        if lower in _GREETINGS and not kept:
            continue
        kept.append(token)
        words += not particle
        if words >= _MAX_NAME_WORDS:
            break
    return kept


def _bare_name(sentences: Sequence[_Sentence]) -> str | None:
    """A reply that is just a name, right after the assistant asked for it."""
    if _about_someone_else(" ".join(sentence.low for sentence in sentences)):
        return None
    text = " ".join(sentence.text for sentence in sentences)
    segments = [segment for segment in _SEGMENT_RE.split(text) if segment.strip()]
    for segment in segments:
        name = _name_segment(segment, alone=len(segments) == 1)
        if name is not None:
            return name
    return None


def _name_segment(segment: str, *, alone: bool) -> str | None:
    tokens = segment.split()
    if tokens and tokens[0].lower() in _GREETINGS:
        return None  # "Hola Sofía" greets the assistant by *its* name
    while tokens and tokens[0].lower() in _FILLERS:
        tokens = tokens[1:]
    if not 1 <= len(tokens) <= _MAX_NAME_WORDS:
        return None
    if not all(re.fullmatch(_NAME_WORD, token) for token in tokens):
        return None
    # A lower-case reply is a name only when it is the whole reply ("carlos"); inside a longer
    # reply it is more likely the start of a sentence ("prefiero no decirlo").
    if not (alone or tokens[0][0].isupper()):
        return None
    name = _trim_name(" ".join(tokens), capitalised=False)
    return name if name is not None and len(name.split()) == len(tokens) else None


def _assistant_names(read: Sequence[tuple[str, str]]) -> frozenset[str]:
    names = (
        _sentence_name(sentence, _lower(sentence))
        for role, content in read
        if role == "assistant"
        for sentence in _SENTENCE_END_RE.split(content)
    )
    return frozenset(_fold(name) for name in names if name is not None)


def _email(sentence: _Sentence) -> str | None:
    low = sentence.low
    found = [(m.start(), m.group()) for m in _EMAIL_RE.finditer(low)] if "@" in low else []
    # Every spelling of the "at" holds "at" or "arroba": two substring tests spare the scan.
    if ("at" in low or "arroba" in low) and _AT_CUE_RE.search(low):
        found += [
            (m.start(), email)
            for m in _OBFUSCATED_EMAIL_RE.finditer(low)
            if (email := _deobfuscate(m))
        ]
    if not found:
        return None
    return _last(email for start, email in sorted(found) if not _negated(low, start))


def _negated(low: str, start: int) -> bool:
    return bool(_NEGATED_RE.search(_before(low, start)))


def _before(text: str, start: int) -> str:
    # The few words before a match decide; looking further back only costs time.
    return text[max(0, start - _LOOKBEHIND_CHARS) : start]


def _deobfuscate(match: re.Match[str]) -> str | None:
    user = _OBFUSCATED_DOT_RE.sub(".", match["user"])
    domain = _OBFUSCATED_DOT_RE.sub(".", match["domain"])
    spelled_dot = domain != match["domain"] or "." not in match["domain"]
    # A plain " at " is everyday English ("I work at acme.com"); only trust it with a spelled dot.
    if match["at"].strip() == "at" and not spelled_dot:
        return None
    email = f"{user}@{domain}"
    return email if _TLD_RE.search(email) else None


def _phone(turns: Sequence[_Turn]) -> str | None:
    return _last(
        _sentence_phone(sentence, turn.asked)
        for turn in turns
        for sentence in turn.sentences
        if sentence.own and sentence.digits
    )


def _sentence_phone(sentence: _Sentence, asked: frozenset[str]) -> str | None:
    if not _PHONE_CUE_RE.search(sentence.text):
        return None
    matches = list(_PHONE_RE.finditer(sentence.text))
    if not matches:
        return None
    context = bool(_PHONE_CONTEXT_RE.search(sentence.low))
    # A bare number answering "¿tu número de pedido?" is the order's, not a phone.
    if "referencia" in asked and "telefono" not in asked and not context:
        return None
    likely = "telefono" in asked or context
    return _last(_phone_value(sentence.low, match, likely) for match in matches)


def _phone_value(low: str, match: re.Match[str], likely: bool) -> str | None:
    raw = match.group()
    digits = re.sub(r"\D", "", raw)
    international = raw.startswith("+") or digits.startswith("00")
    digits = digits[2:] if digits.startswith("00") else digits
    if not _MIN_PHONE_DIGITS <= len(digits) <= _MAX_PHONE_DIGITS:
        return None
    if len(digits) < _SURE_PHONE_DIGITS and not likely:
        return None
    if _NOT_PHONE_AFTER_RE.match(low, match.end()) or _negated(low, match.start()):
        return None
    if _REFERENCE_BEFORE_RE.search(_before(low, match.start())):
        return None
    return f"+{digits}" if international else digits


def _company(turns: Sequence[_Turn]) -> str | None:
    found = None
    for turn in turns:
        found = (
            _bare_value(turn, "empresa") or _last(map(_sentence_company, turn.sentences)) or found
        )
    return found


def _sentence_company(sentence: _Sentence) -> str | None:
    text, low = sentence.text, sentence.low
    matches = (
        [m for pattern, cue in _COMPANY_PATTERNS if cue.search(low) for m in pattern.finditer(text)]
        if _COMPANY_CUE_RE.search(low)
        else []
    )
    if _INTRO_CUE_RE.search(low) and _firm_after(low):
        matches += _NAME_ORG_RE.finditer(text)
    if sentence.roles:
        matches += sentence.roles
    if not matches:
        return None
    found = [
        (m.start("org"), _clean_org(m["org"]))
        for m in matches
        if m["org"] and not _place_at(low, m.start("org"))
    ]
    found.sort(key=lambda item: (item[0], item[1] or ""))
    return _last(org for _, org in found)


def _firm_after(low: str) -> bool:
    # Substring tests first: the pattern's leading word boundary makes it a scan of every position.
    return ("de" in low or "of" in low or "from" in low) and bool(_FIRM_AFTER_CUE_RE.search(low))


def _clean_org(raw: str) -> str | None:
    org = raw[:-1] if raw.endswith(".") and raw.count(".") == 1 else raw
    return None if org.lower() in _NOT_ORGS else org


def _role(sentence: _Sentence) -> str | None:
    if not sentence.roles:
        return None
    return _last(_clean_role(m["role"]) for m in sentence.roles)


def _clean_role(raw: str) -> str | None:
    tokens = raw.split()
    while tokens and tokens[-1].lower() in _NOT_ROLE_ENDINGS:
        tokens.pop()
    # Modifiers before an English head noun must be words like "sales", not "the" or "and".
    if tokens and tokens[0].lower() in _STOPWORDS:
        return None
    return " ".join(tokens) or None


def _location(turns: Sequence[_Turn]) -> str | None:
    found = None
    for turn in turns:
        found = (
            _bare_value(turn, "ubicacion")
            or _last(map(_sentence_location, turn.sentences))
            or found
        )
    return found


def _sentence_location(sentence: _Sentence) -> str | None:
    text, low = sentence.text, sentence.low
    found: list[tuple[int, str]] = []
    if _LOCATION_CUE_RE.search(low):
        found += [(m.start("place"), m["place"]) for m in _LOCATION_RE.finditer(text)]
    if _PLACE_HINT_RE.search(low) and _PLACE_CUE_RE.search(text):
        found += [
            (m.start(), text[m.start() : m.end()])
            for m in _PLACE_RE.finditer(low)
            if text[m.start()].isupper() and _PREPOSITION_RE.search(_before(low, m.start()))
        ]
    if not found:
        return None
    # At one position the longer reading ("Austin, Texas" over "Austin") is the better one.
    found.sort(key=lambda item: (item[0], len(item[1])))
    return _last(" ".join(place.split()) for _, place in found)


def _place_at(low: str, start: int) -> bool:
    return _PLACE_RE.match(low, start) is not None


def _bare_value(turn: _Turn, field: str) -> str | None:
    """A short capitalised reply right after the assistant asked for `field`."""
    if field not in turn.asked or len(turn.sentences) != 1:
        return None
    tokens = [t for t in turn.sentences[0].text.strip(" .!").split() if t.lower() not in _FILLERS]
    answer = " ".join(tokens)
    if not answer or len(tokens) > _MAX_NAME_WORDS or not re.fullmatch(_ORG, answer):
        return None
    return answer


def _budget(turns: Sequence[_Turn]) -> str | None:
    return _last(
        _sentence_budget(sentence, "presupuesto" in turn.asked)
        for turn in turns
        for sentence in turn.sentences
        if sentence.digits  # every budget has an amount in figures
    )


def _sentence_budget(sentence: _Sentence, asked: bool) -> str | None:
    # A bare amount may be a price being complained about; it is a budget only in context.
    low = sentence.low
    if not (asked or _BUDGET_CONTEXT_RE.search(low)):
        return None
    matches = [*_BUDGET_RE.finditer(low), *_BARE_BUDGET_RE.finditer(low)]
    return _last(_format_budget(m) for m in sorted(matches, key=lambda m: m.start()))


def _format_budget(match: re.Match[str]) -> str:
    groups = match.groupdict()
    amount = _parse_amount(groups.get("amount1") or groups["amount2"])
    multiplier = groups.get("mult1") or groups.get("mult2") or ""
    value = amount * _MULTIPLIERS.get(multiplier, 1.0)
    currency_word = _fold(groups.get("symbol") or groups.get("currency") or "")
    currency = _CURRENCIES.get(currency_word)
    number = f"{value:.0f}" if value.is_integer() else f"{value:.2f}"
    return number if currency is None else f"{number} {currency}"


def _parse_amount(raw: str) -> float:
    compact = re.sub(r"\s", "", raw)
    if re.fullmatch(r"\d{1,3}(?:[.,]\d{3})+", compact):
        return float(re.sub(r"[.,]", "", compact))
    if re.fullmatch(r"\d{1,3}(?:[.,]\d{3})+[.,]\d{1,2}", compact):
        return float(re.sub(r"[.,]", "", compact[:-3]) + "." + compact[-2:].lstrip(".,"))
    return float(compact.replace(",", "."))


def _timeframe(sentence: _Sentence) -> str | None:
    if not _TIMEFRAME_CUE_RE.search(sentence.low):
        return None
    return _last(
        " ".join(_original(sentence.text, m, "t", "month").split())
        for m in _TIMEFRAME_RE.finditer(sentence.low)
    )


def _products(sentences: Sequence[_Sentence]) -> list[str]:
    found: dict[str, str] = {}
    for sentence in sentences:
        for product in _sentence_products(sentence):
            found.setdefault(_fold(product), product)
    return list(found.values())


def _sentence_products(sentence: _Sentence) -> list[str]:
    text, low = sentence.text, sentence.low
    if not _PRODUCT_CUE_RE.search(low):
        return []
    declined = _declined_spans(low)
    matches = [m for m in _PRODUCT_RE.finditer(low) if not _within(m.start(), declined)]
    if matches:
        return [
            " ".join(_original(text, m, "tier", "product", "container").split()) for m in matches
        ]
    return [
        thing
        for m in _INTEREST_RE.finditer(low)
        if not _within(m.start(), declined)
        and (thing := _interest_thing(_original(text, m, "thing")))
    ]


def _declined_spans(low: str) -> list[tuple[int, int]]:
    # Every decline holds "no" ("not" included) or "n't": most sentences need no scan.
    if "no" not in low and "n't" not in low and "n’t" not in low:
        return []
    return [match.span() for match in _DECLINED_CLAUSE_RE.finditer(low)]


def _within(position: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(start <= position < end for start, end in spans)


def _interest_thing(raw: str) -> str | None:
    tokens = raw.split()
    while tokens and tokens[-1].lower() in _STOPWORDS:
        tokens.pop()
    if not tokens or tokens[0].lower() in _STOPWORDS or tokens[0].lower().endswith("ing"):
        return None
    if _INFO_RE.fullmatch(tokens[0].lower()):
        return None
    return " ".join(tokens)


def _intent(text: str, browsing: bool, rare: bool) -> Intent | None:
    """`rare`: whether `_RARE_SIGNAL_RE` found anything in `text`."""
    if rare:
        if _COMPLAINT_RE.search(text):
            return "queja"
        if _SUPPORT_RE.search(text):
            return "soporte"
        if _OTHER_RE.search(text):
            return "otro"
    if browsing:
        return "informacion"
    if _BUY_RE.search(text):
        return "compra"
    if _INFO_RE.search(text):
        return "informacion"
    return None


def _is_browsing(text: str) -> bool:
    browsing = list(_BROWSING_RE.finditer(text))
    declines = [match.span() for match in _DECLINE_RE.finditer(text)]
    if not (browsing or declines):
        return False
    buying = [match for match in _BUY_RE.finditer(text) if not _within(match.start(), declines)]
    if declines and not buying:
        # Only then: beside a wish to buy, a decline more likely turns down an upsell.
        return True
    if not browsing:
        return False
    # "Solo miraba... bueno, quiero contratar" ends up buying; "no plans to buy" does not.
    return not buying or buying[-1].start() < browsing[-1].end()


def _interest_level(
    text: str,
    intent: Intent | None,
    browsing: bool,
    has_products: bool,
    plazo: str | None,
    budget: str | None,
    rare: bool,
) -> int | None:
    if intent in ("soporte", "queja", "otro"):
        return None
    if browsing:
        return _BROWSING_LEVEL
    contact = rare and bool(_CONTACT_RE.search(text))
    if intent is None and not (has_products or contact or budget):
        return None
    buying = intent == "compra"
    level = _BUY_LEVEL if buying else _BASE_LEVEL
    level += (rare and bool(_STRONG_BUY_RE.search(text))) + (has_products and not buying) + contact
    level += (plazo is not None) + (budget is not None)
    level += plazo is None and rare and bool(_URGENT_RE.search(text))
    return max(1, min(10, level))


def _language(texts: Iterable[str]) -> str | None:
    text = "\n".join(texts)  # a line break ends a word: none spans two texts
    if "@" in text:
        # An address is in no language: "de", "la" and "es" of juan.de.la.cruz@correo.es are not
        # Spanish words.
        text = _EMAIL_RE.sub(" ", text)
    words = _words(text)
    spanish = sum(map(_ES_WORDS.__contains__, words))
    english = sum(map(_EN_WORDS.__contains__, words))
    if spanish == english:
        return None
    return "es" if spanish > english else "en"


def _summary(
    intent: Intent | None, products: Sequence[str], plazo: str | None, budget: str | None
) -> str | None:
    # Built from commercial facts only, so the summary never repeats personal data.
    parts = []
    if products:
        parts.append(f"Interesado en {', '.join(products)}")
    if intent:
        parts.append(f"intención {intent}")
    if plazo:
        parts.append(f"plazo {plazo}")
    if budget:
        parts.append(f"presupuesto {budget}")
    return "; ".join(parts) or None
