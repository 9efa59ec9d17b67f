"""Template parameters and the rate card parser, from text."""

from __future__ import annotations

import pytest

from tresen.errors import InvalidRequest
from tresen.protocol.codes import Code
from tresen.relay.billing.ratecard import RateCard, packaged_rate_card, parse_rate_card
from tresen.relay.templates.validate import parameters


def test_positional_parameters() -> None:
    assert parameters("Order {{1}} ships {{2}}, {{1}} again", "POSITIONAL", "BODY") == ["1", "2"]
    assert parameters("no parameters", "POSITIONAL", "BODY") == []
    assert parameters("spaces {{ 1 }} ok", "POSITIONAL", "BODY") == ["1"]
    for text in ("gap {{1}} {{3}}", "zero {{0}}", "named {{name}}", "open {{1} x", "x }} y"):
        with pytest.raises(InvalidRequest) as caught:
            parameters(text, "POSITIONAL", "BODY")
        assert caught.value.code == Code.INVALID_TEMPLATE


def test_named_parameters() -> None:
    assert parameters("Hi {{first_name}}, {{order_id}}", "NAMED", "BODY") == [
        "first_name",
        "order_id",
    ]
    for text in ("Hi {{1}}", "Hi {{First}}", "Hi {{with space}}"):
        with pytest.raises(InvalidRequest):
            parameters(text, "NAMED", "BODY")


CARD = (
    "category,country,price_minor,currency\n"
    "MARKETING,*,8,EUR\nUTILITY,*,2,EUR\n"
    "AUTHENTICATION,*,2,EUR\nMARKETING,DE,11,EUR\n"
)


def test_rate_card_prices_with_defaults() -> None:
    card = RateCard(parse_rate_card(CARD))
    assert card.price("MARKETING", "DE") == 11
    assert card.price("MARKETING", "FR") == 8
    assert card.price("UTILITY", "ZZ") == 2
    assert card.price("SERVICE", "DE") == 0
    assert card.currency == "EUR"
    assert RateCard(parse_rate_card(card.to_csv())).prices == card.prices


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "header"),
        ("cat,country,price_minor,currency\n", "header"),
        ("category,country,price_minor,currency\n", "no rows"),
        ("category,country,price_minor,currency\nPROMO,*,1,EUR\n", "line 2"),
        ("category,country,price_minor,currency\nMARKETING,de,1,EUR\n", "line 2"),
        ("category,country,price_minor,currency\nMARKETING,*,1.5,EUR\n", "line 2"),
        ("category,country,price_minor,currency\nMARKETING,*,1,euro\n", "line 2"),
        ("category,country,price_minor,currency\nMARKETING,*,1\n", "4 fields"),
        (CARD + "MARKETING,DE,12,EUR\n", "twice"),
        (CARD + "UTILITY,DE,1,USD\n", "one currency"),
        ("category,country,price_minor,currency\nMARKETING,*,1,EUR\n", "default row"),
    ],
)
def test_rate_card_errors_name_the_fix(text: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_rate_card(text)
    assert caught.value.code == Code.INVALID_RATE_CARD
    assert fragment in caught.value.message


def test_packaged_card_is_valid() -> None:
    rows = packaged_rate_card()
    assert {c for c, *_ in rows} == {"MARKETING", "UTILITY", "AUTHENTICATION"}
    assert all(currency == "EUR" for *_, currency in rows)
