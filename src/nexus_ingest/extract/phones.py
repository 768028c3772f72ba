"""Phone numbers in one form, E.164, so the same number written two ways is one value.

A number given with its country code (`+34 612 345 678`, `0034 612...`) needs nothing else. A
national one (`612 345 678`) is read in the first region, of those the conversation suggests,
where it is a valid number: the place the prospect names, then the operator's default region,
then the language as a weak hint. A number valid nowhere is kept as given: digits and a `+`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import phonenumbers

# Places a prospect may name (lower case, written with and without accents), by ISO 3166
# region. Ambiguous names (San José, Córdoba in Argentina) take their likeliest region or none.
_PLACES_BY_REGION = {
    "ES": "españa espana spain madrid barcelona valencia sevilla zaragoza málaga malaga murcia "
    "palma bilbao alicante córdoba cordoba valladolid vigo gijón gijon granada a_coruña "
    "a_coruna vitoria oviedo santander pamplona san_sebastián san_sebastian salamanca toledo "
    "cádiz cadiz tenerife las_palmas logroño logrono burgos león leon almería almeria huelva",
    "MX": "méxico mexico ciudad_de_méxico ciudad_de_mexico cdmx monterrey guadalajara puebla "
    "tijuana",
    "CO": "colombia bogotá bogota medellín medellin cali barranquilla",
    "PE": "perú peru lima",
    "CL": "chile santiago",
    "AR": "argentina buenos_aires rosario mendoza",
    "UY": "uruguay montevideo",
    "EC": "ecuador quito guayaquil",
    "VE": "venezuela caracas",
    "BO": "bolivia la_paz",
    "PY": "paraguay asunción asuncion",
    "DO": "república_dominicana republica_dominicana santo_domingo",
    "PR": "puerto_rico san_juan",
    "CU": "cuba la_habana",
    "PA": "panamá panama",
    "US": "usa united_states estados_unidos new_york nyc los_angeles chicago houston austin "
    "dallas san_francisco seattle boston miami portland denver atlanta phoenix san_diego "
    "philadelphia las_vegas texas california florida oregon ohio colorado arizona illinois",
    "GB": "uk united_kingdom reino_unido england inglaterra london londres manchester "
    "birmingham edinburgh glasgow",
    "IE": "ireland irlanda dublin dublín",
    "FR": "francia france paris parís",
    "DE": "alemania germany berlin berlín munich múnich",
    "IT": "italia italy rome roma milan milán milano",
    "PT": "portugal lisbon lisboa",
    "CA": "canada canadá toronto vancouver montreal",
    "AU": "australia sydney melbourne",
    "BR": "brasil brazil",
    "NL": "amsterdam netherlands holanda",
}
_REGION_OF_PLACE = {
    place.replace("_", " "): region
    for region, places in _PLACES_BY_REGION.items()
    for place in places.split()
}
_PLACE_RE = re.compile(
    r"\b(?:"
    + "|".join(re.escape(p) for p in sorted(_REGION_OF_PLACE, key=len, reverse=True))
    + r")\b"
)
# The language says little about the country; it only decides when nothing else does.
_REGION_OF_LANGUAGE = {"es": "ES", "en": "US", "pt": "BR", "fr": "FR", "de": "DE", "it": "IT"}
_REGION_CODE = re.compile(r"[A-Z]{2}")


def phone_regions(
    ubicacion: str | None, idioma: str | None, default: str | None = None
) -> tuple[str, ...]:
    """The regions a national number may be read in, the most telling first."""
    regions = [_region_of_place(ubicacion), default, _REGION_OF_LANGUAGE.get(idioma or "")]
    return tuple(dict.fromkeys(r for r in regions if r and _REGION_CODE.fullmatch(r)))


def ascii_digits(text: str) -> str:
    """The digits 0-9 of `text`, in order: other scripts' digits are no part of a number to dial."""
    return "".join(char for char in text if char.isascii() and char.isdigit())


def normalise_phone(raw: str, regions: Iterable[str]) -> str:
    """`raw` (digits, perhaps after a `+` or `00`) as E.164 when it is a valid number with its
    own country code or in one of `regions`; else its digits, with the `+` it had."""
    digits = ascii_digits(raw)
    international = raw.lstrip().startswith("+") or digits.startswith("00")
    if international:
        digits = digits[2:] if digits.startswith("00") else digits
        return _e164(f"+{digits}", None) or f"+{digits}"
    for region in regions:
        number = _e164(digits, region)
        if number is not None:
            return number
    return digits


def _e164(number: str, region: str | None) -> str | None:
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _region_of_place(ubicacion: str | None) -> str | None:
    """The region of the last known place named in `ubicacion` ("Valencia, Venezuela": VE)."""
    if not ubicacion:
        return None
    found = _PLACE_RE.findall(" ".join(ubicacion.lower().split()))
    return _REGION_OF_PLACE[found[-1]] if found else None
