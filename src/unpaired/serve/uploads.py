"""Untrusted uploads: reading a body, refusing it early, and decoding it in bounded memory.

The page posts the file's bytes as the raw request body (no multipart form, whose parser spools
large parts to temporary files), so nothing from an upload is ever written to disk. Before a
pixel is decoded:

* the body is refused past its byte limit (its announced length first, then as it streams in),
  and refused with 408 when it has not arrived in full within ``body_timeout_s``: uvicorn's own
  timeouts only cover idle connections, so a client that sends the headers and then trickles
  (or stops sending) the body would otherwise hold its connection for ever;
* only PNG, JPEG, WebP, GIF, BMP and TIFF are parsed, so Pillow never tries its other plugins
  (EPS, for one, hands the file to Ghostscript);
* the width and height from the header must give at most ``max_pixels`` (decompression bombs);
* the memory the decode will take, estimated from the header, is reserved from a budget shared
  by every request (``MemoryBudget``): 413 when the picture alone exceeds it, 503 when the
  pictures already being worked on leave no room for it within a few seconds.

A reference-guided request carries two pictures in one body: ``reference_bytes=N`` says its
first N bytes are the reference, the rest the picture; each is checked as above.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from ..data.images import DECODE_ERRORS, to_rgb

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG includes phones' multi-picture JPEGs
MB = 1_000_000
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 1 << 20


@dataclass(frozen=True)
class UploadLimits:
    """What uploads may cost: bytes on the wire per picture, pixels per picture, seconds for a
    body to arrive, the memory all pictures being decoded or translated may hold together, and
    how long a request waits for its share of that memory."""

    max_bytes: int = 10 * MB
    max_pixels: int = 40_000_000
    body_timeout_s: float = 60.0
    memory_budget: int = 1000 * MB
    budget_wait_s: float = 10.0


class Rejected(Exception):
    """A request the server refuses: the HTTP status, a message the page shows as it is, and
    response headers (``Connection: close`` when the body was not read to its end)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def megabytes(count: float) -> str:
    return f"{count / MB:g}"


# ----------------------------------------------------------------------------- the body


def too_large(limit: int, subject: str = "this file is") -> Rejected:
    return Rejected(413, f"{subject} larger than the upload limit of {megabytes(limit)} MB", {"Connection": "close"})


async def read_body(request, limits: UploadLimits, pictures: int = 1) -> bytes:
    """The request body in memory (at most ``pictures`` × the byte limit), refused as soon as it
    is known to be too large, or when it has not arrived in full within the body timeout."""
    limit = pictures * limits.max_bytes
    subject = "this file is" if pictures == 1 else f"the {pictures} files together are"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit, subject)

    async def receive() -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large(limit, subject)
        return bytes(body)

    try:
        return await asyncio.wait_for(receive(), limits.body_timeout_s)
    except TimeoutError:
        raise Rejected(408, f"the upload did not arrive within {limits.body_timeout_s:g} s; try again",
                       {"Connection": "close"}) from None


def split_body(body: bytes, reference_bytes: str | None) -> tuple[bytes, bytes | None]:
    """(picture, reference): the body's first ``reference_bytes`` bytes are the reference, if given."""
    if reference_bytes is None:
        return body, None
    if not (reference_bytes.isascii() and reference_bytes.isdigit() and 0 < int(reference_bytes) < len(body)):
        raise Rejected(400, f"reference_bytes must be a number of bytes between 1 and {len(body) - 1} "
                            f"(the reference comes first in the body), got {reference_bytes!r}")
    count = int(reference_bytes)
    return body[count:], body[:count]


# ----------------------------------------------------------------------------- decoding


@contextmanager
def _decoding(what: str) -> Iterator[None]:
    """Pillow's exceptions for a broken or hostile file as the page's refusals."""
    try:
        yield
    except UnidentifiedImageError:
        raise Rejected(415, f"{what} is not a picture this page reads: "
                            "upload a PNG, JPEG, WebP, GIF, BMP or TIFF image") from None
    except Image.DecompressionBombError as exc:
        raise Rejected(413, f"{what} has too many pixels ({exc})") from None
    except DECODE_ERRORS as exc:
        raise Rejected(422, f"{what} could not be decoded ({exc or type(exc).__name__})") from None


def open_upload(data: bytes, limits: UploadLimits, what: str = "this file") -> Image.Image:
    """The picture in ``data`` with only its header read: an accepted format and at most
    ``max_pixels``. ``decode`` reads its pixels."""
    if not data:
        raise Rejected(400, f"{what} is empty: choose a picture file")
    if len(data) > limits.max_bytes:
        raise too_large(limits.max_bytes, f"{what} is")
    with _decoding(what):
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    pixels = image.width * image.height
    if pixels > limits.max_pixels:
        raise Rejected(413, f"{what} is {image.width}×{image.height} = {pixels / 1e6:.1f} megapixels; "
                            f"the limit is {limits.max_pixels / 1e6:g} megapixels")
    return image


def decode(image: Image.Image, what: str = "this file") -> Image.Image:
    """An opened upload's pixels, as 8-bit RGB (see ``data.images.to_rgb``); the opened image is
    closed, which frees its decoded samples at once (leaving its ``with`` block does not)."""
    try:
        with _decoding(what):
            image.load()
            return to_rgb(image)
    finally:
        image.close()


def decode_upload(data: bytes, limits: UploadLimits, what: str = "this file") -> Image.Image:
    """Uploaded bytes → an RGB picture, checking type and pixel count before decoding any pixel."""
    return decode(open_upload(data, limits, what), what)


def data_url(image: Image.Image) -> str:
    """A PNG inline, so results reach the page without ever being files."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


# ----------------------------------------------------------------------------- the memory budget


class MemoryBudget:
    """Bytes that the pictures of all requests may hold at once, reserved before decoding.

    A request reserves its pictures' estimated peak and keeps it until its answer is made (its
    decoded pictures live that long). One that cannot get its share waits up to ``wait_s`` for
    the requests ahead of it, which each hold theirs for a second or two, then is refused.
    """

    def __init__(self, total: int, wait_s: float):
        self.total, self.wait_s = total, wait_s
        self.used = 0
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, amount: int) -> Iterator[None]:
        if amount > self.total:
            raise Rejected(413, f"decoding this upload would take about {megabytes(amount)} MB of memory; this "
                                f"server decodes at most {megabytes(self.total)} MB at a time: send a smaller picture")
        with self._changed:
            if not self._changed.wait_for(lambda: self.used + amount <= self.total, self.wait_s):
                raise Rejected(503, f"the server is busy with other pictures ({megabytes(self.used)} of its "
                                    f"{megabytes(self.total)} MB in use); try again in a moment",
                               {"Retry-After": "5"})
            self.used += amount
        try:
            yield
        finally:
            with self._changed:
                self.used -= amount
                self._changed.notify_all()


def return_freed_memory() -> None:
    """Make glibc give buffers of a megabyte or more back to the system as soon as they are freed.

    By default glibc raises its mmap threshold to the size of each large buffer freed (up to
    32 MB) and serves later ones from per-thread heaps that keep the memory: pictures decoded
    in two threads then leave two pictures' worth of memory held for good, on top of the
    budget (measured: 8 uploads of 36 megapixels under a 1000 MB budget peaked 1174 MB above
    the idle server, 876 MB with this). A fixed threshold turns that off. Elsewhere than
    glibc there is no ``mallopt`` and nothing changes.
    """
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass
