"""Judge the fetched logo: an image type (not GIF, as the plugin docs require), real image bytes, a sane size."""

from __future__ import annotations

import struct

from relay_client.check.limits import MAX_LOGO_SIZE
from relay_client.check.report import Check, failed, passed, warned

#: Leading bytes of the image formats a browser shows, by media type.
_SIGNATURES: tuple[tuple[str, bytes], ...] = (
    ("image/png", b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", b"\xff\xd8\xff"),
    ("image/gif", b"GIF8"),
    ("image/x-icon", b"\x00\x00\x01\x00"),
    ("image/bmp", b"BM"),
)

#: The size the plugin docs suggest ("Suggested size: 512 x 512").
SUGGESTED_SIDE = 512


def sniff(body: bytes) -> str | None:
    """The image type the bytes really are, or None."""
    for kind, signature in _SIGNATURES:
        if body.startswith(signature):
            return kind
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    head = body[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in body[:2048].lower()):
        return "image/svg+xml"
    return None


def png_size(body: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk."""
    if len(body) < 24 or not body.startswith(b"\x89PNG\r\n\x1a\n") or body[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", body[16:24])
    return width, height


def judge(url: str, status: int, content_type: str, body: bytes, status_fix: str = "") -> list[Check]:
    """The logo checks for one fetched answer."""
    if status != 200:
        return [
            failed(
                "logo",
                f"GET {url} answered {status}",
                status_fix or "serve the image at logo_url (or point logo_url at where it is)",
            )
        ]
    real = sniff(body)
    if not content_type.startswith("image/"):
        return [
            failed(
                "logo",
                f"{url} is served as {content_type or 'no Content-Type'}, not an image",
                f"serve it with Content-Type: {real or 'image/png'}",
            )
        ]
    if content_type == "image/gif" or real == "image/gif":
        return [failed("logo", f"{url} is a GIF; the host does not accept GIFs", "use a PNG (512x512, transparency allowed)")]
    if not body:
        return [failed("logo", f"{url} is empty", "serve the image bytes")]
    if real is None:
        return [failed("logo", f"{url} says {content_type} but the bytes are not an image", "serve the real image file")]
    if len(body) > MAX_LOGO_SIZE:
        return [
            failed("logo", f"{url} is {len(body)} bytes (more than {MAX_LOGO_SIZE})", "shrink it: a 512x512 PNG is tens of kilobytes")
        ]
    checks = [passed("logo", f"{content_type}, {len(body)} bytes")]
    size = png_size(body)
    if size is not None and (size[0] != size[1] or size[0] < 64):
        checks.append(
            warned(
                "logo size",
                f"{size[0]}x{size[1]} pixels; the host shows a square ({SUGGESTED_SIDE}x{SUGGESTED_SIDE} suggested)",
                f"export a square {SUGGESTED_SIDE}x{SUGGESTED_SIDE} PNG",
            )
        )
    return checks
