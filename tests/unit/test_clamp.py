"""The clamp: whatever an LLM returned becomes a valid Prospect; HTTP failures become decisions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus_ingest.errors import Permanent, RetryLater
from nexus_ingest.extract.clamp import (
    CONFIG_ERROR_DELAY_S,
    MAX_RETRY_AFTER_S,
    clamp_prospect,
    clean_email,
    clean_intent,
    clean_interest,
    clean_language,
    clean_phone,
    clean_products,
    error_for_status,
    parse_json_object,
    retry_after_seconds,
)
from nexus_ingest.models import PROSPECT_FIELDS, Prospect


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (7, 7),
        (42, 10),
        (0, 1),
        (-3, 1),
        (7.5, 8),
        (6.49, 6),
        ("8", 8),
        (" 9 ", 9),
        ("7,5", 8),
        ("8/10", 8),
        ("100", 10),
        ("alto", None),
        (True, None),
        (None, None),
        (float("nan"), None),
        (float("inf"), None),
        ([5], None),
    ],
)
def test_interest_is_coerced_into_one_to_ten(raw: object, expected: int | None) -> None:
    """nivel_interes: ints clamped, floats rounded half up, digit strings parsed, else None."""
    assert expected == clean_interest(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("compra", "compra"),
        ("Purchase", "compra"),
        ("information", "informacion"),
        ("Información", "informacion"),
        ("support", "soporte"),
        ("complaint", "queja"),
        ("QUEJA", "queja"),
        ("other", "otro"),
        ("partnership", "otro"),
        ("", None),
        ("  ", None),
        (None, None),
        ("N/A", None),
    ],
)
def test_intent_maps_synonyms_and_unknowns(raw: object, expected: str | None) -> None:
    """intencion: English synonyms and accents accepted, unknown values become "otro"."""
    assert expected == clean_intent(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Carlos@Example.COM", "carlos@example.com"),
        ("  ana.perez+leads@acme.co.uk ", "ana.perez+leads@acme.co.uk"),
        ("mailto:Bob@x.io", "bob@x.io"),
        ("<bob@x.io>", "bob@x.io"),
        ("Ana@Gmail.com.", "ana@gmail.com"),
        ("(ana@gmail.com),", "ana@gmail.com"),
        ("carlos at example dot com", None),
        ("carlos@", None),
        ("@example.com", None),
        ("carlos@example", None),
        ("two@@example.com", None),
        ("", None),
        (12345, None),
    ],
)
def test_email_is_lowercased_or_dropped(raw: object, expected: str | None) -> None:
    """email: lower-cased when plausible, otherwise None rather than a bad address."""
    assert expected == clean_email(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+34 612 345 678", "+34612345678"),
        ("(555) 123-4567", "5551234567"),
        ("0034-612.345.678", "0034612345678"),
        (5551234567, "5551234567"),
        ("12345", None),
        ("ext. 12", None),
        ("no tengo", None),
        (None, None),
    ],
)
def test_phone_keeps_digits_and_leading_plus(raw: object, expected: str | None) -> None:
    """telefono: only digits and a leading '+', None below six digits."""
    assert expected == clean_phone(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+1 415 555 2671 ext. 23", "+14155552671"),
        ("+1 415-555-2671x23", "+14155552671"),
        ("55 1234 5678 extensión 12", "5512345678"),
        ("+34 612 345 678 / +34 698 765 432", "+34612345678"),
        ("612345678 o 698765432", "612345678"),
        ("Tel: (+34) 612 345 678", "+34612345678"),
        ("+44 (0)20 7946 0958", "+442079460958"),
        (612345678.0, "612345678"),
    ],
)
def test_phone_is_the_first_number_without_its_extension(raw: object, expected: str) -> None:
    """telefono: an extension, a second number or a float's ".0" never adds digits to it."""
    assert expected == clean_phone(raw)


@pytest.mark.parametrize("raw", ["+34 6I2 345 678", "612 345 G78"])
def test_phone_with_a_letter_among_its_digits_is_dropped(raw: str) -> None:
    """telefono: digits around a letter would be some other number, so none is kept."""
    assert clean_phone(raw) is None


# A hang guard, not a speed goal: read once per position, these took over ten seconds at a
# tenth of this length, and would take hours at this one; read once, milliseconds.
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "raw", ["1" + " " * 200_000 + "#", "( " * 200_000, "+34" + " " * 200_000 + "(0"]
)
def test_phone_cleaning_of_a_long_answer_does_not_hang(raw: str) -> None:
    """telefono: a model's long run of spaces or brackets is read once, not once per position."""
    assert clean_phone(raw) is None


def test_phone_longer_than_any_number_is_dropped() -> None:
    """telefono: more digits than E.164 allows (15, past a "00") is no phone number."""
    assert clean_phone("6" * 100) is None
    assert clean_phone("+34 612345678 698765432") is None
    assert clean_phone("00 52 1 55 1234 5678") == "005215512345678"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ES", "es"),
        ("es-MX", "es"),
        ("en_US", "en"),
        ("Spanish", "es"),
        ("español", "es"),
        ("Inglés", "en"),
        ("klingon", None),
        ("e", None),
        ("", None),
    ],
)
def test_language_is_a_two_letter_lowercase_code(raw: object, expected: str | None) -> None:
    """idioma: lower-case ISO 639-1 code, language names and regional tags folded."""
    assert expected == clean_language(raw)


def test_products_are_stripped_deduplicated_and_capped() -> None:
    """productos_interes: stripped, case/accent-insensitive duplicates and empties dropped."""
    raw = [" CRM ", "crm", "Facturación", "facturacion", "", None, 7, "n/a", "ERP"]
    assert clean_products(raw) == ["CRM", "Facturación", "7", "ERP"]


def test_products_accept_a_single_string_and_cap_the_list() -> None:
    """A lone string becomes a one-item list; more than the model allows are cut."""
    assert clean_products("CRM") == ["CRM"]
    assert len(clean_products([f"p{index}" for index in range(80)])) == 50
    assert clean_products({"a": 1}) == []


def test_strings_are_stripped_and_empty_or_placeholder_becomes_none() -> None:
    """Text fields are stripped and whitespace-collapsed; "", "N/A", "desconocido" are None."""
    prospect = clamp_prospect(
        {"nombre": "  Ana   María ", "empresa": "", "cargo": "N/A", "ubicacion": "desconocido"}
    )
    assert prospect.nombre == "Ana María"
    assert (prospect.empresa, prospect.cargo, prospect.ubicacion) == (None, None, None)


def test_overlong_strings_are_truncated_to_the_model_limits() -> None:
    """Strings longer than the model's max_length are cut to it instead of failing."""
    prospect = clamp_prospect(
        {
            "nombre": "x" * 900,
            "resumen": "y" * 5000,
            "idioma": "es",
            "productos_interes": ["z" * 300],
        }
    )
    assert len(prospect.nombre or "") == 500
    assert len(prospect.resumen or "") == 2000
    assert len(prospect.productos_interes[0]) == 200


def test_numbers_in_text_fields_become_text() -> None:
    """A budget given as a number is kept as text rather than dropped."""
    assert clamp_prospect({"presupuesto": 5000}).presupuesto == "5000"


def test_a_full_payload_is_cleaned_field_by_field() -> None:
    """Every field goes through its own rule and the result validates as a Prospect."""
    raw = {
        "nombre": " Carlos ",
        "email": "CARLOS@ACME.COM",
        "telefono": "+34 600 111 222",
        "empresa": "Acme",
        "cargo": "CTO",
        "ubicacion": "Madrid",
        "productos_interes": ["CRM", "CRM"],
        "presupuesto": "5.000 EUR",
        "plazo": "next quarter",
        "nivel_interes": 42,
        "intencion": "purchase",
        "idioma": "ES",
        "resumen": "Quiere un CRM.",
        "extra": "ignored",
    }
    expected = Prospect(
        nombre="Carlos",
        email="carlos@acme.com",
        telefono="+34600111222",
        empresa="Acme",
        cargo="CTO",
        ubicacion="Madrid",
        productos_interes=["CRM"],
        presupuesto="5.000 EUR",
        plazo="next quarter",
        nivel_interes=10,
        intencion="compra",
        idioma="es",
        resumen="Quiere un CRM.",
    )
    assert expected == clamp_prospect(raw)


def test_a_record_nested_one_level_down_is_unwrapped() -> None:
    """{"prospect": {...}}, a common small-model habit, is read as the record itself."""
    assert clamp_prospect({"prospect": {"nombre": "Ana"}}).nombre == "Ana"


@pytest.mark.parametrize("raw", [[{"nombre": "Ana"}], "Ana", 7, None, True])
def test_only_a_non_object_payload_is_permanent(raw: object) -> None:
    """A payload that is not a JSON object raises Permanent; nothing else does."""
    with pytest.raises(Permanent):
        clamp_prospect(raw)


def test_parse_json_object_tolerates_a_code_fence() -> None:
    """Local models often fence their JSON; the fence is not an error."""
    assert parse_json_object('```json\n{"nombre": "Ana"}\n```') == {"nombre": "Ana"}


@pytest.mark.parametrize("text", ["{nombre: Ana", "", "[1, 2]", "Sure! Here it is"])
def test_parse_json_object_refuses_anything_but_an_object(text: str) -> None:
    """Malformed JSON or a non-object is Permanent, which the extractor turns into a re-ask."""
    with pytest.raises(Permanent):
        parse_json_object(text)


# Long strings come from a few repeated characters so generation stays fast.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.builds(lambda char, count: char * count, st.characters(), st.integers(0, 2500)),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(PROSPECT_FIELDS), json_values))
def test_any_json_object_clamps_to_a_valid_prospect(raw: dict[str, Any]) -> None:
    """Property: every JSON object with any values for any fields yields a valid Prospect."""
    prospect = clamp_prospect(raw)
    assert prospect == Prospect.model_validate(prospect.model_dump())


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "Thu, 01 Jan 2026 00:00:30 GMT"}, 30.0),
        ({"retry-after": "Thu, 01 Jan 2026 00:00:00 GMT"}, 0.0),
        ({"retry-after": "999999"}, MAX_RETRY_AFTER_S),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_in_seconds(headers: dict[str, str], expected: float | None) -> None:
    """retry-after-ms wins, then retry-after as seconds or an HTTP date; capped, never negative."""
    now = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert expected == retry_after_seconds(headers, now=now)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_transient_statuses_retry_with_the_given_delay(status: int) -> None:
    """Rate limits, overload, 5xx and provider timeouts are RetryLater with retry-after."""
    error = error_for_status(status, 3.0, "x")
    assert isinstance(error, RetryLater)
    assert error.delay == 3.0


@pytest.mark.parametrize("status", [401, 402, 403, 404])
def test_configuration_statuses_retry_after_a_long_delay(status: int) -> None:
    """A bad key, billing or model name waits for an operator instead of dead-lettering."""
    error = error_for_status(status, None, "x")
    assert isinstance(error, RetryLater)
    assert error.delay == CONFIG_ERROR_DELAY_S


@pytest.mark.parametrize("status", [400, 413, 422])
def test_request_statuses_are_permanent(status: int) -> None:
    """A request the provider refuses as such will be refused again: Permanent."""
    assert isinstance(error_for_status(status, None, "x"), Permanent)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"telefono": "612 34 56 78", "idioma": "es"}, "+34612345678"),
        ({"telefono": "+34 612 345 678", "idioma": "en"}, "+34612345678"),
        ({"telefono": "0034-612.345.678"}, "+34612345678"),
        ({"telefono": "020 7946 0000", "ubicacion": "London, UK", "idioma": "en"}, "+442079460000"),
        ({"telefono": "020 7946 0000", "idioma": "en"}, "02079460000"),
        ({"telefono": "81 1234 5678", "ubicacion": "Monterrey", "idioma": "es"}, "+528112345678"),
        ({"telefono": "555-0188 ext", "idioma": "en"}, "5550188"),
    ],
)
def test_phone_becomes_e164_where_the_conversation_tells_its_region(
    raw: dict[str, Any], expected: str
) -> None:
    """telefono: E.164 with its own country code or the region of its place or language; kept as
    its digits when no region fits."""
    assert expected == clamp_prospect(raw).telefono


def test_phone_region_setting_applies_when_the_answer_names_no_place() -> None:
    """A national number in an answer without a place is read in the configured region."""
    raw = {"telefono": "81 1234 5678", "idioma": "es"}
    assert clamp_prospect(raw, phone_region="MX").telefono == "+528112345678"
    assert clamp_prospect(raw).telefono == "8112345678"
