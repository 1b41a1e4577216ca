"""Logo judgement without sockets: an image type, real image bytes, not a GIF, a sane size."""

from __future__ import annotations

import struct
import zlib

from relay_client.check import logo
from relay_client.check.limits import MAX_LOGO_SIZE
from relay_client.check.report import Status

URL = "https://todo.example.com/logo.png"


def png(width: int, height: int) -> bytes:
    """A valid, blank RGBA PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + b"\0\0\0\0" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_a_square_png_passes() -> None:
    body = png(512, 512)
    [check] = logo.judge(URL, 200, "image/png", body)
    assert (check.status, check.message) == (Status.PASS, f"image/png, {len(body)} bytes")
    assert logo.png_size(body) == (512, 512)


def test_formats_are_told_by_their_bytes() -> None:
    assert logo.sniff(png(1, 1)) == "image/png"
    assert logo.sniff(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert logo.sniff(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert logo.sniff(b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>') == "image/svg+xml"
    assert logo.sniff(b"<!doctype html><html>") is None


def test_a_missing_logo_fails_with_the_status_and_the_given_fix() -> None:
    [check] = logo.judge(URL, 404, "text/plain", b"nope", "start the server")
    assert (check.status, check.message, check.fix) == (Status.FAIL, f"GET {URL} answered 404", "start the server")


def test_not_an_image_type_fails_and_suggests_the_real_type() -> None:
    [check] = logo.judge(URL, 200, "application/octet-stream", png(8, 8))
    assert check.status is Status.FAIL
    assert check.message == f"{URL} is served as application/octet-stream, not an image"
    assert check.fix == "serve it with Content-Type: image/png"


def test_gifs_and_html_dressed_as_images_fail() -> None:
    assert logo.judge(URL, 200, "image/gif", b"GIF89a....")[0].message.endswith("is a GIF; the host does not accept GIFs")
    assert logo.judge(URL, 200, "image/png", b"<html>oops</html>")[0].message.endswith("but the bytes are not an image")


def test_an_oversized_logo_fails_and_a_non_square_one_warns() -> None:
    big = png(8, 8) + b"\0" * MAX_LOGO_SIZE
    assert logo.judge(URL, 200, "image/png", big)[0].status is Status.FAIL
    checks = logo.judge(URL, 200, "image/png", png(300, 100))
    assert [c.status for c in checks] == [Status.PASS, Status.WARN]
    assert checks[1].message.startswith("300x100 pixels")
