"""WebSocket frames: one tagged msgspec Struct per message, MessagePack on the wire.

Schema evolution (msgspec's rules): a new field always has a default, fields are never
reordered or retyped, and a new frame type gets a new tag. Tags are short because they travel
with every frame.

The handshake: the client opens ``/v1/ws`` asking for the subprotocol ``tresen.v1.msgpack``
(or ``tresen.v1.json`` for debugging), then sends :class:`Hello` with its device token. The relay
answers :class:`Welcome` and starts streaming the device's queue as :class:`Deliver` frames.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

PROTOCOL_VERSION = 1
SUBPROTOCOLS = {
    f"tresen.v{PROTOCOL_VERSION}.msgpack": "msgpack",
    f"tresen.v{PROTOCOL_VERSION}.json": "json",
}

#: Kinds of queue item. ``message`` carries ciphertext; the others are relay notices.
#: ``notice`` carries a JSON relay notice, e.g. a business's first contact (docs/protocol.md).
ItemKind = Literal["message", "delivered", "read", "expired", "group", "notice"]


class Frame(msgspec.Struct, tag_field="t", forbid_unknown_fields=False, omit_defaults=True):
    """Base of every frame; ``t`` is the tag."""


# ---------------------------------------------------------------- client -> relay


class Hello(Frame, tag="hello"):
    token: str
    #: the client's name and version, for logs (``tresen-py/0.1.0``)
    agent: str = ""


class BizMeta(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The cleartext a business's envelope carries for the relay's policy and billing.

    ``kind`` is ``service`` (a free-form reply, category ``SERVICE``) or ``template`` (an
    approved template named by ``template`` and ``language``, with its ``category``). Nothing of
    the message itself: the parameters travel inside the ciphertext.
    """

    kind: Literal["service", "template"] = "service"
    category: Literal["SERVICE", "MARKETING", "UTILITY", "AUTHENTICATION"] = "SERVICE"
    template: str = ""
    language: str = ""


class Send(Frame, tag="send"):
    """One envelope to an account: one ciphertext per recipient device and per own other device.

    ``id`` is chosen by the sender (at most 64 characters); a resend of the same id is accepted
    once. ``payloads`` maps device id to ciphertext and must name exactly the recipient's current
    devices plus the sender's other devices, else the relay answers ``device_list_mismatch``.
    """

    id: str
    to: int
    payloads: dict[int, bytes]
    #: set by business accounts only (a business's send without it is a ``service`` message)
    biz: BizMeta | None = None


class SendGroup(Frame, tag="gsend"):
    """One envelope to a group: ``body`` fanned out to every member device but the sender's.

    ``payloads`` may override the body for single devices (e.g. key shares). ``devices``, when
    given, is the sender's view of all member devices and must match the relay's.
    """

    id: str
    group: int
    body: bytes
    payloads: dict[int, bytes] = {}
    devices: list[int] | None = None


class Ack(Frame, tag="ack"):
    """Everything delivered on this connection with ``seq <= upto`` is safely stored."""

    upto: int


class Read(Frame, tag="read"):
    """Read receipts for envelopes ``ids`` received from account ``to``."""

    to: int
    ids: list[str]


class Typing(Frame, tag="typing"):
    """Typing on/off towards an account (``to``) or a group (``group``); never stored."""

    to: int = 0
    group: int = 0
    on: bool = True


class Watch(Frame, tag="watch"):
    """Subscribe to the presence of these accounts (replaces the previous watch list)."""

    accounts: list[int]


class Ping(Frame, tag="ping"):
    n: int = 0


ClientFrame = Hello | Send | SendGroup | Ack | Read | Typing | Watch | Ping


# ---------------------------------------------------------------- relay -> client


class Welcome(Frame, tag="welcome"):
    version: int
    account: int
    device: int
    heartbeat: float
    server_time: int
    otk_count: int = 0


class Sent(Frame, tag="sent"):
    """The single tick: these envelope ids are stored durably (a resent id is reported again).

    ``pricing``: for a business's messages, the pricing type the relay's billing applies
    (``regular``, ``free_customer_service``, ``free_entry_point``; docs/business-rules.md)."""

    ids: list[str]
    ts: int
    pricing: dict[str, str] = {}


class Item(msgspec.Struct, omit_defaults=True):
    """One queue item: a ciphertext (``kind='message'``) or a notice about one of your envelopes.

    For ``delivered`` and ``read``, ``id`` is your envelope's id and ``sender``/``sender_device``
    who received or read it; for ``expired``, ``id`` is an envelope of yours whose time to live
    ran out before ``sender_device`` fetched it; for ``group``, ``body`` is a JSON notice of a
    change to group ``group`` made by ``sender``/``sender_device`` (see ``relay.groups``).
    """

    seq: int
    kind: ItemKind
    id: str
    sender: int
    sender_device: int
    ts: int
    body: bytes = b""
    group: int = 0


class Deliver(Frame, tag="deliver"):
    """Queue items in ascending ``seq``; acknowledge them with :class:`Ack`."""

    items: list[Item]


class TypingNotice(Frame, tag="typing_notice"):
    account: int
    device: int
    on: bool
    group: int = 0


class Presence(Frame, tag="presence"):
    account: int
    online: bool
    last_seen: int = 0


class KeysLow(Frame, tag="keys_low"):
    """This device's one-time-key count is below the watermark: upload more."""

    count: int


class Pong(Frame, tag="pong"):
    n: int = 0


class Error(Frame, tag="error"):
    """A frame could not be processed. ``ref`` names the envelope or frame it answers."""

    code: str
    message: str
    ref: str = ""
    fields: dict[str, Any] = {}


ServerFrame = Welcome | Sent | Deliver | TypingNotice | Presence | KeysLow | Pong | Error

__all__ = [
    "PROTOCOL_VERSION",
    "SUBPROTOCOLS",
    "Ack",
    "BizMeta",
    "ClientFrame",
    "Deliver",
    "Error",
    "Frame",
    "Hello",
    "Item",
    "ItemKind",
    "KeysLow",
    "Ping",
    "Pong",
    "Presence",
    "Read",
    "Send",
    "SendGroup",
    "Sent",
    "ServerFrame",
    "Typing",
    "TypingNotice",
    "Watch",
    "Welcome",
]
