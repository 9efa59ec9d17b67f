"""Pure media rules: Range parsing, limits per kind, when a blob expires."""

from __future__ import annotations

import pytest

from tresen.config import load
from tresen.errors import (
    InvalidRequest,
    LimitExceeded,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
)
from tresen.protocol.codes import Code
from tresen.relay.media.models import MediaRow
from tresen.relay.media.service import (
    check_media_id,
    check_offset_header,
    check_quota,
    check_range,
    check_size,
    expiry_of,
    limits_of,
)

SETTINGS = load(
    environ={},
    overrides={
        "media_ttl_seconds": 1000,
        "media_upload_ttl_seconds": 100,
        "media_fetched_grace_seconds": 10,
    },
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-1", (999, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole blob, as RFC 9110 allows
        ("items=0-5", None),
        ("bytes=-", None),
        ("bytes=a-b", None),
    ],
)
def test_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert check_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0", "bytes=9-3"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        check_range(header, 1000)
    assert caught.value.fields == {"size": 1000} and caught.value.status == 416


def test_limits_per_kind() -> None:
    limits = limits_of(load(environ={"TRESEN_MEDIA_MAX_VIDEO_BYTES": "123"}))
    assert limits["video"] == 123 and limits["sticker"] == 500 * 1024
    check_size("video", 123, limits)
    with pytest.raises(PayloadTooLarge) as caught:
        check_size("video", 124, limits)
    assert caught.value.code == Code.MEDIA_TOO_LARGE
    assert caught.value.fields == {"kind": "video", "limit": 123}


def test_media_ids() -> None:
    assert check_media_id("A" * 22) == "A" * 22
    for bad in ("A" * 21, "A" * 23, "../" + "A" * 19, ""):
        with pytest.raises(NotFound) as caught:
            check_media_id(bad)
        assert caught.value.code == Code.MEDIA_NOT_FOUND


def row(completed_at: int | None) -> MediaRow:
    return MediaRow("A" * 22, 1, 2, "image", 10, 10, 1_000, completed_at, 0)


def test_expiry() -> None:
    assert expiry_of(row(None), 0, 0, None, SETTINGS) == 1_000 + 100_000
    done = row(5_000)
    assert expiry_of(done, 0, 0, None, SETTINGS) == 5_000 + 1_000_000  # nobody granted
    assert expiry_of(done, 3, 2, 9_000, SETTINGS) == 5_000 + 1_000_000  # one still to fetch
    assert expiry_of(done, 3, 3, 9_000, SETTINGS) == 9_000 + 10_000  # all fetched: grace
    assert expiry_of(done, 3, 3, 10**12, SETTINGS) == 5_000 + 1_000_000  # never past the TTL


def test_offset_header() -> None:
    assert check_offset_header("0") == 0 and check_offset_header(" 123 ") == 123
    for bad in (None, "", "-1", "1.5", "²", "٣", "1e3", "9" * 20):
        with pytest.raises(InvalidRequest):
            check_offset_header(bad)


def test_quota() -> None:
    settings = load(
        environ={},
        overrides={"media_quota_blobs_per_account": 3, "media_quota_bytes_per_account": 100},
    )
    check_quota(2, 50, 50, settings)
    for blobs, held, adding in ((3, 0, 1), (0, 60, 41)):
        with pytest.raises(LimitExceeded) as caught:
            check_quota(blobs, held, adding, settings)
        assert caught.value.code == Code.MEDIA_QUOTA_EXCEEDED and caught.value.status == 429


def test_kept_blobs_wait_for_the_ttl() -> None:
    kept = MediaRow("A" * 22, 1, 2, "image", 10, 10, 1_000, 5_000, 0, keep=True)
    assert expiry_of(kept, 3, 3, 9_000, SETTINGS) == 5_000 + 1_000_000
