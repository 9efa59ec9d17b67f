"""Pure parts of the gateway: the signed body (ASCII-escaped) and its signature, the Graph
error envelope, payload validation, template rendering, and content in both directions."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from tresen.errors import PolicyRefused, Unavailable
from tresen.gateway.cloudapi.errors import GraphError, from_relay
from tresen.gateway.cloudapi.models import PAYLOADS, TemplateMessage, convert
from tresen.gateway.content import inbound, outbound, render_template
from tresen.gateway.webhooks import signer
from tresen.gateway.webhooks.outbox import RetryPolicy
from tresen.protocol.codes import Code


def test_body_is_ascii_escaped_and_signed_as_sent() -> None:
    body = signer.encode({"text": "café \U0001f44d", "n": 1})
    assert body == '{"text":"caf\\u00e9 \\ud83d\\udc4d","n":1}'
    assert body.isascii()
    # whatsapp-api-js re-escapes what it received before the HMAC: the same bytes
    assert json.dumps(json.loads(body), ensure_ascii=True, separators=(",", ":")) == body
    header = signer.sign("s3cret", body.encode())
    want = hmac.new(b"s3cret", body.encode(), hashlib.sha256).hexdigest()
    assert header == f"sha256={want}"
    assert signer.verify("s3cret", body.encode(), header)
    assert not signer.verify("s3cret", body.encode() + b" ", header)
    assert not signer.verify("other", body.encode(), header)


def test_graph_envelope_and_relay_codes() -> None:
    body = GraphError(131047, "outside the window").body()["error"]
    assert body["code"] == 131047 and body["message"] == "(#131047) Re-engagement message"
    assert body["error_data"] == {"messaging_product": "whatsapp", "details": "outside the window"}
    assert "error_subcode" not in body
    assert GraphError(190, "x").status == 401
    assert GraphError(130429, "x").status == 429 and GraphError(131056, "x").status == 429
    refused = from_relay(PolicyRefused("too fast", code=Code.PAIR_RATE_LIMITED))
    assert (refused.code, refused.status) == (131056, 429)
    assert from_relay(PolicyRefused("no", code=Code.OPT_IN_REQUIRED)).code == 131026
    assert from_relay(Unavailable("down")).status == 503


def test_payloads_validated_with_the_field_named() -> None:
    with pytest.raises(GraphError) as caught:
        convert({"body": ""}, PAYLOADS["text"], "text")
    assert caught.value.code == 131009 and "text.body" in caught.value.details
    with pytest.raises(GraphError):
        convert({"latitude": 91, "longitude": 0}, PAYLOADS["location"], "location")
    with pytest.raises(GraphError):
        convert({"body": "x", "extra": 1}, PAYLOADS["text"], "text")
    text = convert({"body": "hi"}, PAYLOADS["text"], "text")
    assert text.body == "hi"


TEMPLATE = {
    "name": "flight",
    "language": "en_US",
    "category": "UTILITY",
    "parameter_format": "POSITIONAL",
    "components": [
        {"type": "HEADER", "format": "TEXT", "text": "Flight {{1}}"},
        {"type": "BODY", "text": "Costs {{1}}, leaves {{2}}."},
        {"type": "FOOTER", "text": "Acme"},
        {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Stop"}]},
    ],
}


def message(components: list[dict[str, object]]) -> TemplateMessage:
    result: TemplateMessage = convert(
        {"name": "flight", "language": {"code": "en_US"}, "components": components},
        TemplateMessage,
        "template",
    )
    return result


def test_template_rendering_and_parameter_checks() -> None:
    msg = message(
        [
            {"type": "HEADER", "parameters": [{"type": "text", "text": "LY001"}]},
            {
                "type": "body",
                "parameters": [
                    {
                        "type": "currency",
                        "currency": {"fallback_value": "$1", "code": "USD", "amount_1000": 1000},
                    },
                    {"type": "date_time", "date_time": {"fallback_value": "Feb 25"}},
                ],
            },
            {
                "type": "button",
                "sub_type": "quick_reply",
                "index": "0",
                "parameters": [{"type": "payload", "payload": "STOP"}],
            },
        ]
    )
    text, rendered, media = render_template(msg, TEMPLATE)
    assert text == "Flight LY001\nCosts $1, leaves Feb 25.\nAcme\n[Stop]"
    assert rendered["buttons"] == [{"type": "QUICK_REPLY", "text": "Stop", "payload": "STOP"}]
    assert media is None
    with pytest.raises(GraphError) as caught:
        render_template(message([{"type": "body", "parameters": []}]), TEMPLATE)
    assert caught.value.code == 132000
    named = {**TEMPLATE, "parameter_format": "NAMED", "components": [
        {"type": "BODY", "text": "Hi {{first_name}}"}
    ]}  # fmt: skip
    wrong = message([{"type": "body", "parameters": [{"type": "text", "text": "A"}]}])
    with pytest.raises(GraphError) as caught:
        render_template(wrong, named)
    assert caught.value.code == 132012
    right = message(
        [
            {
                "type": "body",
                "parameters": [{"type": "text", "text": "A", "parameter_name": "first_name"}],
            }
        ]
    )
    assert render_template(right, named)[0] == "Hi A"


def test_outbound_and_inbound_content() -> None:
    text = convert({"body": "hi"}, PAYLOADS["text"], "text")
    content = outbound("text", text, reply_to="wamid.abc")
    assert content["msgtype"] == "m.text" and content["body"] == "hi"
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": "abc"}}
    assert content["tresen.cloud"] == {"type": "text", "text": {"body": "hi"}}

    assert inbound({"msgtype": "m.text", "body": "yo"}, "TR.1", "4930") == {
        "from": "TR.1",
        "type": "text",
        "text": {"body": "yo"},
    }
    reply = inbound(
        {
            "msgtype": "tresen.interactive",
            "body": "Yes",
            "tresen.cloud": {
                "type": "interactive",
                "interactive": {"type": "list_reply", "list_reply": {"id": "12A", "title": "12A"}},
            },
            "m.relates_to": {"m.in_reply_to": {"event_id": "out1"}},
        },
        "TR.1",
        "4930",
    )
    assert reply["interactive"] == {
        "type": "list_reply",
        "list_reply": {"id": "12A", "title": "12A"},
    }
    assert reply["context"] == {"from": "4930", "id": "wamid.out1"}
    reaction = inbound(
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": "x", "key": "!"}}, "TR.1", "1"
    )
    assert reaction["reaction"] == {"message_id": "wamid.x", "emoji": "!"}
    location = inbound({"msgtype": "m.location", "geo_uri": "geo:1.5,-2", "body": ""}, "a", "b")
    assert location["location"] == {"latitude": 1.5, "longitude": -2.0}
    unknown = inbound({"msgtype": "m.poll"}, "a", "b")
    assert unknown["type"] == "unsupported" and unknown["errors"][0]["code"] == 131051


def test_backoff_grows_and_caps() -> None:
    policy = RetryPolicy(base_seconds=5, cap_seconds=3600)
    assert [policy.delay_ms(n) for n in (1, 2, 3)] == [5000, 10000, 20000]
    assert policy.delay_ms(30) == 3_600_000


def test_pricing_follows_the_relay_rules() -> None:
    from tresen.gateway.webhooks.payloads import pricing_object, pricing_type

    assert pricing_type("", True) == pricing_type("", False) == "free_customer_service"
    assert pricing_type("UTILITY", True) == "free_customer_service"
    assert pricing_type("UTILITY", False) == "regular"
    assert pricing_type("MARKETING", True) == "regular"
    assert pricing_object("MARKETING", "regular") == {
        "billable": True,
        "pricing_model": "PMP",
        "category": "marketing",
        "type": "regular",
    }
    assert pricing_object("", "free_customer_service")["category"] == "service"
