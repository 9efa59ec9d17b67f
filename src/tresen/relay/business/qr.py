"""QR codes for a business's short link, as PNG and SVG (segno: pure Python).

The routes are public, so results are cached: a flood of requests for the same code costs one
rendering, not one per request.
"""

from __future__ import annotations

import io
from functools import lru_cache

import segno


@lru_cache(maxsize=256)
def qr_png(url: str, *, scale: int = 8, border: int = 4) -> bytes:
    out = io.BytesIO()
    segno.make_qr(url, error="m").save(out, kind="png", scale=scale, border=border)
    return out.getvalue()


@lru_cache(maxsize=256)
def qr_svg(url: str, *, scale: int = 8, border: int = 4) -> bytes:
    out = io.BytesIO()
    segno.make_qr(url, error="m").save(
        out, kind="svg", scale=scale, border=border, xmldecl=True, svgns=True, title=url
    )
    return out.getvalue()
