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
import hashlib
import io
import logging
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from . import checkpoint as ckpt
from .data import DECODE_ERRORS, to_rgb
from .errors import UserError, import_optional
from .translate import DIRECTIONS, Translation, Translator

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
    return (path / ckpt.WEIGHTS).is_file() or ckpt.latest_checkpoint(path) is not None


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
            self._loaded[key] = Translator.from_checkpoint(self.checkpoints[name], direction, self.device)
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
            return self._translator(name, direction)(picture, fit=self.fit)


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
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    async def page(request):
        return HTMLResponse(PAGE, headers=PAGE_HEADERS)

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

    routes = [Route("/", page), Route("/api/info", info), Route("/api/translate", translate, methods=["POST"])]
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

STYLE = """
:root { font-family: system-ui, sans-serif; color: #1d1d1f; background: #f4f4f1; }
body { max-width: 62rem; margin: 1.5rem auto; padding: 0 1rem; }
h1 { margin: 0; font-size: 1.5rem; }
header p { margin: .2rem 0 1rem; color: #555; }
#controls { display: flex; gap: 2rem; align-items: center; flex-wrap: wrap; }
select { font: inherit; padding: .2rem .4rem; }
fieldset { border: 0; padding: 0; margin: 0; display: flex; gap: .8rem; align-items: center; }
legend { float: left; margin-right: .4rem; }
#drop { display: block; margin: 1rem 0; padding: 1.6rem; border: 2px dashed #999; border-radius: 12px;
        text-align: center; cursor: pointer; background: #fff; }
#drop.hover, #drop:focus-visible { border-color: #2a6df4; background: #eef3ff; outline: none; }
#drop small { color: #666; }
#file { position: absolute; width: 1px; height: 1px; opacity: 0; }
#status { color: #444; min-height: 1.2em; }
#error { color: #b00020; font-weight: 600; }
#result { display: grid; grid-template-columns: repeat(3, 1fr); gap: 1rem; }
figure { margin: 0; padding: .6rem; background: #fff; border-radius: 10px; box-shadow: 0 1px 3px #0003; }
figcaption { display: flex; justify-content: space-between; font-weight: 600; margin-bottom: .4rem; }
figcaption label { font-weight: normal; font-size: .9rem; }
figure img { display: block; width: 100%; aspect-ratio: 1; object-fit: contain; background: #eee; }
img.small { image-rendering: pixelated; }
#download { display: inline-block; margin-top: .6rem; padding: .4rem 1rem; border-radius: 6px;
            background: #2a6df4; color: #fff; text-decoration: none; }
body.busy #drop { opacity: .5; }
[hidden] { display: none !important; }
"""

SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
let settings = null, picture = null, shown = null, latest = 0;

const megabytes = (bytes) => String(Math.round(bytes / 1e4) / 100);

function say(message, isError) {
  $("status").textContent = isError ? "" : message;
  $("error").textContent = isError ? message : "";
  $("error").hidden = !isError;
  if (isError) $("result").hidden = true;
}

async function start() {
  settings = await (await fetch("api/info")).json();
  for (const name of settings.models) $("model").add(new Option(name, name));
  $("model").disabled = settings.models.length < 2;
  $("limits").textContent = `PNG, JPEG, WebP, GIF, BMP or TIFF, up to ${megabytes(settings.max_upload_bytes)} MB `
    + `and ${settings.max_pixels / 1e6} megapixels. The picture stays in memory on this computer.`;
  document.body.dataset.ready = "yes";
}

function choose(file) {
  if (!file) return;
  picture = file;
  $("file").value = "";
  translate();
}

async function post(query) {
  try {
    const response = await fetch(`api/translate?${query}`, {method: "POST", body: picture});
    const reply = await response.json().catch(() => ({}));
    if (!response.ok) return {error: reply.error || `the server answered ${response.status} ${response.statusText}`};
    return reply;
  } catch (err) {
    return {error: `the server could not be reached (${err.message})`};
  }
}

async function translate() {
  if (!picture || !settings) return;
  if (picture.size > settings.max_upload_bytes) {
    return say(`${picture.name} is ${megabytes(picture.size)} MB: the file is larger than the upload limit `
      + `of ${megabytes(settings.max_upload_bytes)} MB`, true);
  }
  const mine = ++latest;
  const direction = document.querySelector("input[name=direction]:checked").value;
  say(`Translating ${picture.name}…`, false);
  document.body.classList.add("busy");
  const reply = await post(new URLSearchParams({model: $("model").value, direction}));
  if (mine !== latest) return;
  document.body.classList.remove("busy");
  if (reply.error) return say(reply.error, true);
  show(reply);
}

function show(reply) {
  shown = reply;
  $("input").src = reply.input;
  $("translation").src = reply.translation;
  showAttention();
  $("download").href = reply.translation;
  $("download").download = `${picture.name.replace(/\\.[^.]*$/, "")}_${reply.direction}.png`;
  $("result").hidden = false;
  say(`${reply.model}, ${reply.direction}: ${reply.width}×${reply.height} px in ${reply.seconds.toFixed(2)} s`, false);
}

function showAttention() {
  if (shown) $("heatmap").src = $("over").checked ? shown.overlay : shown.heatmap;
}

const drop = $("drop");
// Pictures smaller than their box are enlarged with visible pixels instead of blurred.
for (const img of document.querySelectorAll("figure img")) {
  img.addEventListener("load", () => img.classList.toggle("small", img.naturalWidth < img.clientWidth));
}
$("file").addEventListener("change", () => choose($("file").files[0]));
$("model").addEventListener("change", translate);
for (const radio of document.querySelectorAll("input[name=direction]")) radio.addEventListener("change", translate);
$("over").addEventListener("change", showAttention);
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("hover"); });
drop.addEventListener("dragleave", () => drop.classList.remove("hover"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("hover");
  choose(event.dataTransfer.files[0]);
});
drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
});
start().catch((err) => say(`could not read the server's settings (${err.message})`, true));
"""

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>unpaired</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style>
</head>
<body>
<header><h1>unpaired</h1><p>Translate a picture with a trained model and see where its attention went.</p></header>
<section id="controls">
  <label>Model <select id="model"></select></label>
  <fieldset>
    <legend>Direction</legend>
    <label><input type="radio" name="direction" value="A2B" checked> A → B</label>
    <label><input type="radio" name="direction" value="B2A"> B → A</label>
  </fieldset>
</section>
<label id="drop" for="file" tabindex="0">
  <input id="file" type="file" accept="image/png,image/jpeg,image/webp,image/gif,image/bmp,image/tiff">
  <strong>Drop a picture here</strong> or click to choose one<br><small id="limits"></small>
</label>
<p id="status" role="status"></p>
<p id="error" role="alert" hidden></p>
<section id="result" hidden>
  <figure><figcaption>Input</figcaption><img id="input" alt="the input picture"></figure>
  <figure>
    <figcaption>Attention <label><input type="checkbox" id="over"> over the input</label></figcaption>
    <img id="heatmap" alt="the generator's attention heatmap">
  </figure>
  <figure>
    <figcaption>Translation</figcaption><img id="translation" alt="the translated picture">
    <a id="download" download>Download</a>
  </figure>
</section>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode("ascii") + "'"


# The browser runs only this page's own script and style and talks only to this server.
PAGE_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; script-src {_sha256(SCRIPT)}; style-src {_sha256(STYLE)}; "
                               "img-src data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
