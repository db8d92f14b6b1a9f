"""Image files read with bounded work: the size is read from the header first.

A 140 KB PNG can declare 12000x12000 pixels; decoding it whole takes seconds and gigabytes.
``image_size`` reads width and height from the header of the formats fer-kiosk accepts
(PNG, JPEG, BMP, WebP, TIFF, PNM; a GIF is refused by name), so ``read_image`` refuses an
image above the pixel limit before decoding it, naming the setting that raises the limit, and
names a damaged file (a truncated JPEG, a PNG that does not decode) as damaged instead of
returning a grey half-image or nothing.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

FORMATS = "PNG, JPEG, BMP, WebP, TIFF, PNM"


class ImageError(Exception):
    """The file cannot be used as an image; ``reason`` says why, in one line."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return None
        i += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[offset : offset + 2])
        size = {}
        for k in range(min(count, 1000)):
            entry = data[offset + 2 + 12 * k : offset + 14 + 12 * k]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag in (256, 257):
                value = struct.unpack(
                    order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12]
                )[0]
                size[tag] = value
        return (size[256], size[257]) if len(size) == 2 else None
    except (struct.error, KeyError):
        return None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    fields: list[bytes] = []
    for line in data[2:4096].splitlines():
        fields += line.split(b"#", 1)[0].split()
        if len(fields) >= 2:
            try:
                return int(fields[0]), int(fields[1])
            except ValueError:
                return None
    return None


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from the first bytes of an image file; None when the format
    is not one fer-kiosk reads or the header is cut short."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return "PNG", width, height
        if data.startswith(b"\xff\xd8"):
            size = _jpeg_size(data)
            return ("JPEG", *size) if size else None
        if data.startswith(b"BM") and len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
            return "BMP", abs(width), abs(height)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            chunk = data[12:16]
            if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
                width, height = struct.unpack("<HH", data[26:30])
                return "WebP", width & 0x3FFF, height & 0x3FFF
            if chunk == b"VP8L" and data[20] == 0x2F:
                bits = int.from_bytes(data[21:25], "little")
                return "WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X":
                return (
                    "WebP",
                    int.from_bytes(data[24:27], "little") + 1,
                    int.from_bytes(data[27:30], "little") + 1,
                )
            return None
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            size = _tiff_size(data)
            return ("TIFF", *size) if size else None
        if len(data) > 2 and data[0:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
            size = _pnm_size(data)
            return ("PNM", *size) if size else None
    except (struct.error, IndexError):
        return None
    return None


def check_size(
    path: str | Path, data: bytes, max_pixels: int, limit_name: str = "--max-pixels"
) -> tuple[str, int, int]:
    """The header's (format, width, height); ImageError when the file is not an image of
    a known format, declares no size, or more than ``max_pixels`` pixels (the message names
    ``limit_name``, the option or key that sets the limit, and the value that would read it)."""
    size = image_size(data)
    if size is None:
        if data[:6] in (b"GIF87a", b"GIF89a"):
            # OpenCV 4.11 and later decode a GIF's first frame, older ones (the 32-bit Pi's)
            # nothing: refused everywhere alike rather than read on some boxes only.
            raise ImageError(path, f"GIF is not read by fer-kiosk: save the photo as PNG or JPEG ({FORMATS})")
        raise ImageError(path, f"not an image fer-kiosk reads ({FORMATS}), or its header is damaged")
    kind, width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(path, f"damaged {kind} (its header declares {width}x{height} pixels)")
    if width * height > max_pixels:
        raise ImageError(
            path,
            f"{kind} of {width}x{height} = {width * height} pixels, above the limit of "
            f"{max_pixels}; not decoded (raise {limit_name} to {width * height} to read it)",
        )
    return kind, width, height


def _jpeg_is_complete(data: bytes) -> bool:
    """A JPEG ends with its end-of-image marker after the last scan (a truncated file not)."""
    last_scan = data.rfind(b"\xff\xda")
    return last_scan > 0 and data.find(b"\xff\xd9", last_scan) > 0


def _decode_capturing_stderr(data: bytes, flags: int) -> tuple[np.ndarray | None, str]:
    """cv2.imdecode, with what the codec libraries print on stderr (libjpeg's "Corrupt JPEG
    data", libpng's errors) captured instead of leaking onto the terminal."""
    import cv2

    buffer = np.frombuffer(data, np.uint8)
    try:
        saved = os.dup(2)
    except OSError:
        return cv2.imdecode(buffer, flags), ""
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            image = cv2.imdecode(buffer, flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        said = capture.read(4096).decode("utf-8", "replace")
    return image, " ".join(said.split())


def read_image(
    path: str | Path, max_pixels: int, flags: int | None = None, limit_name: str = "--max-pixels"
) -> np.ndarray:
    """The decoded image (BGR by default), or ImageError naming the file and what is wrong:
    unreadable, not an image, above ``max_pixels`` (refused before decoding, naming
    ``limit_name``), damaged."""
    import cv2

    flags = cv2.IMREAD_COLOR if flags is None else flags
    try:
        with open(path, "rb") as handle:
            # no image of max_pixels needs more than 8 bytes a pixel (16-bit RGBA, uncompressed)
            data = handle.read(8 * max_pixels + (1 << 20) + 1)
    except OSError as err:
        raise ImageError(path, f"cannot read ({err.strerror})") from None
    if len(data) > 8 * max_pixels + (1 << 20):
        raise ImageError(
            path, f"larger than any image of at most {max_pixels} pixels ({limit_name}); not decoded"
        )
    kind, width, height = check_size(path, data, max_pixels, limit_name)
    if kind == "JPEG" and not _jpeg_is_complete(data):
        raise ImageError(path, "damaged JPEG (truncated: no end-of-image marker)")
    image, said = _decode_capturing_stderr(data, flags)
    if image is None:
        raise ImageError(path, f"damaged {kind} (it does not decode{': ' + said[:120] if said else ''})")
    if kind == "JPEG" and ("Corrupt JPEG" in said or "Premature end" in said):
        raise ImageError(path, f"damaged JPEG ({said[:120]})")
    if sorted(image.shape[:2]) != sorted((height, width)):  # EXIF orientation may turn it
        raise ImageError(
            path, f"damaged {kind} (header says {width}x{height}, decoded {image.shape[1]}x{image.shape[0]})"
        )
    return image
