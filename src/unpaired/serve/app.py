"""The web page behind ``unpaired serve``: drop a picture, see its translation and attention map.

Stack. Starlette + uvicorn (the optional extra ``web``) serve one self-contained HTML page with
a little vanilla JavaScript: no CDN, no web fonts, no analytics, nothing fetched from anywhere
but this server, which the page's Content-Security-Policy makes the browser enforce. Gradio,
the field's usual choice, was tried (6.x, analytics off, and it made no outside requests
either) but pulls some thirty packages (pandas, huggingface-hub, fastapi, pydantic, ...),
takes seconds to import and copies every upload into its cache folder on disk, which untrusted
uploads should never reach.

Untrusted uploads. The page posts the file's bytes as the raw request body (no multipart form,
whose parser spools large parts to temporary files), so nothing from an upload is ever written
to disk; results go back as PNG data URLs inside JSON. Before a pixel is decoded:

* the body is refused past ``max_bytes`` (its announced length first, then as it streams in);
* only PNG, JPEG, WebP, GIF, BMP and TIFF are parsed, so Pillow never tries its other plugins
  (EPS, for one, hands the file to Ghostscript);
* the width and height from the header must give at most ``max_pixels`` (decompression bombs).

Every refusal is an HTTP error whose JSON body ``{"error": message}`` the page shows.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .. import checkpoint as ckpt
from ..data.images import DECODE_ERRORS, to_rgb
from ..errors import UserError, import_optional
from ..inference.loading import load_translator
from ..inference.translator import Translation, Translator
from ..run import RunDir

DIRECTIONS = ("A2B", "B2A")

log = logging.getLogger("unpaired")

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG includes phones' multi-picture JPEGs
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".onnx")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
PREVIEW_SIZE = 512  # longer side of the input shown back on the page
MB = 1_000_000


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may weigh: bytes on the wire and pixels once decoded."""

    max_bytes: int = 10 * MB
    max_pixels: int = 40_000_000


class Rejected(Exception):
    """A request the server refuses: the HTTP status and a message the page shows as it is."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ----------------------------------------------------------------------------- uploads


def _megabytes(count: int) -> str:
    return f"{count / MB:g}"


def too_large(limits: UploadLimits) -> Rejected:
    return Rejected(413, f"the file is larger than the upload limit of {_megabytes(limits.max_bytes)} MB")


def decode_upload(data: bytes, limits: UploadLimits) -> Image.Image:
    """Uploaded bytes → an RGB picture, checking type and pixel count before decoding any pixel."""
    if not data:
        raise Rejected(400, "the upload is empty: choose a picture file")
    if len(data) > limits.max_bytes:
        raise too_large(limits)
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            pixels = image.width * image.height
            if pixels > limits.max_pixels:
                raise Rejected(413, f"the picture is {image.width}×{image.height} = {pixels / 1e6:.1f} megapixels; "
                                    f"the limit is {limits.max_pixels / 1e6:g} megapixels")
            image.load()
            return to_rgb(image)
    except UnidentifiedImageError:
        raise Rejected(415, "this file is not a picture this page reads: "
                            "upload a PNG, JPEG, WebP, GIF, BMP or TIFF image") from None
    except Image.DecompressionBombError as exc:
        raise Rejected(413, f"the picture has too many pixels ({exc})") from None
    except DECODE_ERRORS as exc:
        raise Rejected(422, f"the picture could not be decoded ({exc or type(exc).__name__})") from None


def data_url(image: Image.Image) -> str:
    """A PNG inline, so results reach the page without ever being files."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


# ----------------------------------------------------------------------------- models


def _is_checkpoint(path: Path) -> bool:
    if path.is_file():
        return path.suffix in CHECKPOINT_SUFFIXES
    return (path / ckpt.WEIGHTS).is_file() or RunDir(path).latest_checkpoint() is not None


def find_checkpoints(path: Path) -> dict[str, Path]:
    """Menu name → checkpoint: ``path`` itself when it is one, else the checkpoints directly in it.

    A checkpoint is a run folder, a checkpoint folder or a weights file (.safetensors, an
    official .pt or an exported .onnx); anything else in the folder is ignored.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_file() or _is_checkpoint(path):
        return {path.name: path}
    found = {p.name: p for p in sorted(path.iterdir()) if not p.name.startswith(".") and _is_checkpoint(p)}
    if not found:
        raise UserError(f"{path} holds no checkpoints: expected run folders, checkpoint folders or weight "
                        f"files ({', '.join(CHECKPOINT_SUFFIXES)})")
    return found


class ModelShelf:
    """The checkpoints on offer and the generators loaded from them on first use.

    At most ``capacity`` generators stay loaded (the least recently used is dropped first), and
    one translation runs at a time: a local page gains nothing from running models side by
    side on one device, and this bounds its memory.
    """

    def __init__(self, checkpoints: dict[str, Path], device: str = "auto", fit: str = "stretch",
                 capacity: int = 2):
        if not checkpoints:
            raise ValueError("a model shelf needs at least one checkpoint")
        self.checkpoints = dict(checkpoints)
        self.device, self.fit, self.capacity = device, fit, capacity
        self._loaded: OrderedDict[tuple[str, str], Translator] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.checkpoints)

    @property
    def loaded(self) -> list[tuple[str, str]]:
        """(model, direction) of the generators in memory, least recently used first."""
        return list(self._loaded)

    def _translator(self, name: str, direction: str) -> Translator:
        if name not in self.checkpoints:
            raise Rejected(404, f"no model named {name!r}; this server offers {', '.join(self.names)}")
        if direction not in DIRECTIONS:
            raise Rejected(400, f"unknown direction {direction!r}: use {' or '.join(DIRECTIONS)}")
        key = (name, direction)
        if key not in self._loaded:
            self._loaded[key] = load_translator(self.checkpoints[name], direction=direction, device=self.device)
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        return self._loaded[key]

    def warm(self, name: str, direction: str = "A2B") -> None:
        """Load a generator now, so a broken checkpoint is reported before the page opens."""
        with self._lock:
            self._translator(name, direction)

    def translate(self, name: str, direction: str, picture: Image.Image) -> Translation:
        with self._lock:
            return self._translator(name, direction)(picture, fit=self.fit)[0]


def answer_upload(shelf: ModelShelf, limits: UploadLimits, body: bytes, model: str, direction: str
                  ) -> dict[str, Any]:
    """Everything one page request needs, as JSON: the input as decoded, translation, heatmaps."""
    picture = decode_upload(body, limits)
    started = time.perf_counter()
    translation = shelf.translate(model, direction, picture)
    seconds = time.perf_counter() - started
    preview = picture.copy()
    preview.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    return {"model": model, "direction": direction, "seconds": round(seconds, 3),
            "width": translation.image.width, "height": translation.image.height,
            "input": data_url(preview), "translation": data_url(translation.image),
            "heatmap": data_url(translation.heatmap_image()), "overlay": data_url(translation.overlay())}


# ----------------------------------------------------------------------------- web application


async def _read_body(request: Any, limits: UploadLimits) -> bytes:
    """The request body in memory, refused as soon as it is known to exceed the byte limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise too_large(limits)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_bytes:
            raise too_large(limits)
    return bytes(body)


def allowed_hosts(host: str) -> list[str]:
    """Host headers accepted: on a loopback address only its own names, which stops DNS rebinding."""
    return list(LOOPBACK_HOSTS) if host in LOOPBACK_HOSTS else ["*"]


def build_app(shelf: ModelShelf, limits: UploadLimits = UploadLimits(), hosts: list[str] | None = None) -> Any:
    """The ASGI application: the page, ``GET api/info`` and ``POST api/translate?model=&direction=``."""
    import_optional("starlette", "web", "unpaired serve")
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def page(request):
        name = request.url.path.rsplit("/", 1)[-1] or "page.html"
        return Response(page_file(name), media_type=PAGE_FILES[name], headers=PAGE_HEADERS)

    async def info(request):
        return JSONResponse({"models": shelf.names, "directions": list(DIRECTIONS),
                             "max_upload_bytes": limits.max_bytes, "max_pixels": limits.max_pixels})

    async def translate(request):
        body = await _read_body(request, limits)
        query = request.query_params
        answer = await run_in_threadpool(answer_upload, shelf, limits, body,
                                         query.get("model", shelf.names[0]), query.get("direction", "A2B"))
        return JSONResponse(answer)

    def error(status: int, message: str):
        return JSONResponse({"error": message}, status_code=status)

    async def rejected(request, exc: Rejected):
        return error(exc.status, exc.message)

    async def user_error(request, exc: UserError):
        return error(400, str(exc))

    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, exc.detail)

    async def server_error(request, exc: Exception):
        return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")

    routes = [Route("/", page), *(Route(f"/{name}", page) for name in PAGE_FILES if name != "page.html"),
              Route("/api/info", info), Route("/api/translate", translate, methods=["POST"])]
    handlers = {Rejected: rejected, UserError: user_error, HTTPException: http_error, Exception: server_error}
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts or ["*"])]
    return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)


def open_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, so a busy port is one clear error instead of a server log."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                        "choose another --port or --host") from None
    return sock


def serve(checkpoint: Path, host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          limits: UploadLimits = UploadLimits(), fit: str = "stretch") -> None:
    """Serve the page until Ctrl+C. A single checkpoint is loaded now; a folder's models on first use."""
    uvicorn = import_optional("uvicorn", "web", "unpaired serve")
    shelf = ModelShelf(find_checkpoints(checkpoint), device, fit)
    app = build_app(shelf, limits, allowed_hosts(host))
    sock = open_socket(host, port)
    if len(shelf.names) == 1:
        shelf.warm(shelf.names[0])
    if host not in LOOPBACK_HOSTS:
        log.warning(f"listening on {host}: anyone who can reach this machine can use the page")
    shown = f"[{host}]" if ":" in host else host
    log.info(f"unpaired serve: {len(shelf.names)} model(s) from {checkpoint} on "
             f"http://{shown}:{sock.getsockname()[1]}/ (Ctrl+C stops)")
    config = uvicorn.Config(app, log_level="warning", server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


# ----------------------------------------------------------------------------- the page

PAGE_FILES = {"page.html": "text/html; charset=utf-8", "page.css": "text/css; charset=utf-8",
              "page.js": "text/javascript; charset=utf-8"}
# The browser runs only this page's own script and style and talks only to this server.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src data: blob:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@functools.cache
def page_file(name: str) -> bytes:
    """One of the page's files, shipped as package data beside this module."""
    return resources.files(__package__).joinpath(name).read_bytes()
