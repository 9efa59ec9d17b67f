"""Settings: defaults < TOML file < ``TRESEN_*`` environment < explicit overrides (CLI flags).

Loaded once by the CLI and passed in; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from tresen.errors import InvalidRequest

ENV_PREFIX = "TRESEN_"


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    # where the relay listens and keeps its state
    host: str = "127.0.0.1"
    port: int = 8600
    db: str = "sqlite:///tresen-data/relay.db"
    bus: str = "memory://"
    #: many nodes: a dead node's accounts leave the presence book (and their watchers hear
    #: "offline") within this time; every node of a relay uses the same value
    presence_ttl_seconds: float = 60.0
    sqlite_synchronous: Literal["full", "normal"] = "full"
    postgres_pool_size: int = 10
    # accounts and devices
    max_devices: int = 5
    code_ttl_seconds: int = 600
    code_sender: Literal["console", "webhook"] = "console"
    code_webhook_url: str = ""
    code_attempts_per_number_per_hour: int = 5
    code_attempts_per_address_per_hour: int = 20
    link_code_ttl_seconds: int = 120
    # envelopes
    max_envelope_bytes: int = 256 * 1024
    max_queue_per_device: int = 10_000
    envelope_ttl_seconds: int = 30 * 86_400
    #: sends awaiting their commit on one connection before ``too_many_in_flight``
    max_in_flight_per_connection: int = 256
    #: queue items pushed to one connection and not yet acknowledged
    delivery_window: int = 256
    push_batch: int = 64
    # keys
    otk_low_watermark: int = 10
    max_otks_per_upload: int = 200
    # groups
    max_group_members: int = 1024
    # business accounts and the operator (see docs/business.md)
    #: the relay's public base URL for short links and QR codes (``https://chat.example``);
    #: empty: taken from each request's own base URL
    public_url: str = ""
    #: how long the operator's domain-proof check waits for the HTTP fetch or DNS answer
    domain_proof_timeout_seconds: float = 5.0
    #: DNS servers for the TXT proof, comma-separated ``host`` or ``host:port``; empty: system
    domain_proof_nameservers: str = ""
    #: TESTS ONLY: accept ``127.0.0.1:PORT`` as a domain and fetch its proof over plain http
    domain_proof_allow_loopback_http: bool = False
    #: approving a verification needs a passed domain proof check first
    verification_requires_domain_proof: bool = False
    # the WebSocket
    #: "native": the relay's own RFC 6455 protocol under uvicorn (fast); "asgi": uvicorn's
    #: websockets-based protocol through ASGI (the same path any ASGI server would take)
    websocket: Literal["native", "asgi"] = "native"
    heartbeat_seconds: float = 30.0
    #: frames (of any kind) one device may send: a sustained rate and a burst, kept across its
    #: reconnects; past them each data frame is answered ``rate_limited`` (docs/protocol.md)
    frames_per_second: float = 500.0
    frame_burst: int = 2_000
    #: the same for all the connections from one client address together
    frames_per_second_per_address: float = 5_000.0
    frame_burst_per_address: int = 20_000
    max_frame_bytes: int = 1024 * 1024
    #: a message over ``max_frame_bytes`` is skipped unread (``envelope_too_large``) up to this
    #: size; a frame header announcing more closes the connection at once with 1009
    max_frame_skip_bytes: int = 8 * 1024 * 1024
    # connection limits and slow clients (docs/operations.md, "Limits")
    #: WebSocket connections this node holds at once: past it the upgrade gets 503
    max_connections: int = 50_000
    #: from one client address (X-Forwarded-For from a trusted proxy): past it 429
    max_connections_per_address: int = 256
    #: across one account's devices on this node: past it close 4429 ``too_many_connections``
    max_connections_per_account: int = 16
    #: per device: a newer connection closes the oldest with 4409 ``connected_elsewhere``
    max_connections_per_device: int = 1
    #: an HTTP request head (a WebSocket upgrade too) must arrive whole within this: else 408
    request_head_timeout_seconds: float = 10.0
    #: after the upgrade, the hello frame must arrive within this: else close 4408
    hello_timeout_seconds: float = 10.0
    #: a request body or WebSocket message that has begun must keep coming: it may take this
    #: long plus one second for every ``receive_min_bytes_per_second`` bytes (408 / close 4408)
    receive_timeout_seconds: float = 10.0
    receive_min_bytes_per_second: int = 500
    # media blobs (ciphertext only; see docs/media.md)
    #: where blob files live; empty: a ``media`` folder next to the SQLite file (or
    #: ``tresen-data/media`` on PostgreSQL)
    media_dir: str = ""
    media_max_image_bytes: int = 16 * 1024 * 1024
    media_max_video_bytes: int = 64 * 1024 * 1024
    media_max_audio_bytes: int = 16 * 1024 * 1024
    media_max_document_bytes: int = 100 * 1024 * 1024
    media_max_sticker_bytes: int = 500 * 1024
    #: a blob is deleted this long after its upload, fetched or not
    media_ttl_seconds: int = 30 * 86_400
    #: kept this long after the last granted recipient fetched it completely
    media_fetched_grace_seconds: int = 600
    #: an upload not finished within this time is dropped with its bytes
    media_upload_ttl_seconds: int = 86_400
    media_purge_interval_seconds: float = 60.0
    #: what one account may hold at once (uploads not yet expired): bytes and blobs
    media_quota_bytes_per_account: int = 2 * 1024 * 1024 * 1024
    media_quota_blobs_per_account: int = 5_000
    # business policy: limits, quality, metering (docs/business-rules.md)
    #: messages a second one business may send (Cloud API default 80; at most the maximum)
    business_throughput_per_second: int = 80
    business_max_throughput_per_second: int = 1_000
    #: messages to one person from one business: a sustained rate and a burst (131056)
    business_pair_per_second: float = 1 / 6
    business_pair_burst: int = 45
    #: messaging-limit tiers (unique people reached outside the window per 24 h); unlimited after
    business_tier_limits: tuple[int, ...] = (250, 2_000, 10_000, 100_000)
    #: what a business may owe beyond its prepaid balance unless the operator sets its own
    business_credit_limit_minor: int = 0
    #: how often the policy writes windows, sends and deliveries (batched, off the hot path)
    policy_flush_seconds: float = 0.5
    #: how often quality ratings, tiers and template pauses are re-evaluated
    quality_interval_seconds: float = 300.0
    quality_window_days: int = 7
    quality_min_sends: int = 50


_FIELDS = {f.name: f.type for f in msgspec.structs.fields(Settings)}


def load(
    *,
    file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from every layer; raise InvalidRequest naming the bad key."""
    env = os.environ if environ is None else environ
    layers: dict[str, Any] = {}
    path = file or env.get(f"{ENV_PREFIX}CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidRequest(f"cannot read config file {path}: {exc}") from exc
        layers.update(data.get("tresen", data))
    for name in _FIELDS:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None:
            layers[name] = value
    layers.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = set(layers) - set(_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown setting(s): {', '.join(sorted(unknown))}")
    try:
        return msgspec.convert(layers, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid setting: {exc}") from exc


__all__ = ["ENV_PREFIX", "Settings", "load"]
