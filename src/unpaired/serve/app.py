"""The web page behind ``unpaired serve``: drop a picture, see what a model makes of it.

Stack. Starlette + uvicorn (the optional extra ``web``) serve one self-contained HTML page with
a little vanilla JavaScript: no CDN, no web fonts, no analytics, nothing fetched from anywhere
but this server, which the page's Content-Security-Policy makes the browser enforce. Gradio,
the field's usual choice, was tried (6.x, analytics off, and it made no outside requests
either) but pulls some thirty packages (pandas, huggingface-hub, fastapi, pydantic, ...),
takes seconds to import and copies every upload into its cache folder on disk, which untrusted
uploads should never reach.

Every family is served: the page asks ``api/model`` for the chosen model's controls (see
``shelf``) and shows only those. Uploads are checked and decoded as ``uploads`` describes; the
work of a request (decoding, translating, encoding the results) runs in a pool of
``DECODERS`` threads, at most ``MAX_PENDING`` requests wait for one, and their pictures share
one memory budget. Results go back as PNG data URLs inside JSON, so nothing is written to disk.
Every refusal is an HTTP error whose JSON body ``{"error": message}`` the page shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from ..data.images import to_rgb_peak_bytes
from ..errors import UserError, import_optional
from .shelf import FACE_BYTES_PER_PIXEL, Ask, Controls, ModelShelf, Result, find_checkpoints
from .uploads import (MemoryBudget, Rejected, UploadLimits, data_url, decode, open_upload, read_body,
                      return_freed_memory, split_body)

log = logging.getLogger("unpaired")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
PREVIEW_SIZE = 512  # longer side of the input shown back on the page
DECODERS = 2  # requests worked on at once: one can decode while another holds the model
MAX_PENDING = 16  # requests in flight (bodies in memory) before new ones are refused with 503
TRANSLATE_BYTES_PER_PIXEL = 12  # a decoded picture (4) and the two copies the translator's to_rgb makes (8)


# ----------------------------------------------------------------------------- one request


def preview(picture: Image.Image) -> Image.Image:
    """The picture at most ``PREVIEW_SIZE`` on its longer side, without a full-size copy."""
    scale = PREVIEW_SIZE / max(picture.size)
    if scale >= 1:
        return picture
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def answer_upload(shelf: ModelShelf, limits: UploadLimits, budget: MemoryBudget, body: bytes,
                  query: Mapping[str, str]) -> dict[str, Any]:
    """Everything one page request needs, as JSON: the input as the model got it and every output.

    The choices are checked first, then the pictures' headers; their decoding reserves its
    memory from ``budget`` until the answer is made.
    """
    name = query.get("model", shelf.names[0])
    controls = shelf.controls(name)
    ask = Ask.parse(query, controls)
    picture, reference = split_body(body, query.get("reference_bytes"))
    parts = [(picture, "this file")] + ([(reference, "the reference file")] if reference is not None else [])
    opened = [(open_upload(data, limits, what), what) for data, what in parts]
    with budget.reserve(_cost([image for image, _ in opened], controls)):
        pictures = [decode(image, what) for image, what in opened]
        started = time.perf_counter()
        result = shelf.translate(name, ask, *pictures)
        seconds = time.perf_counter() - started
        return _answer(name, ask, controls, result, seconds)


def _cost(opened: list[Image.Image], controls: Controls) -> int:
    """The request's memory estimate: decoding each picture, or holding it while the translator
    makes its own RGB copies, whichever is more; and finding the face in the first."""
    cost = sum(max(to_rgb_peak_bytes(image), image.width * image.height * TRANSLATE_BYTES_PER_PIXEL)
               for image in opened)
    if controls.faces:
        cost += opened[0].width * opened[0].height * FACE_BYTES_PER_PIXEL
    return cost


def _answer(name: str, ask: Ask, controls: Controls, result: Result, seconds: float) -> dict[str, Any]:
    outputs = []
    for translation, image in zip(result.translations, result.images):
        style = translation.style
        output = {"image": data_url(image), "tag": ask.tag(style), "caption": ask.caption(style)}
        if controls.attention:
            output |= {"heatmap": data_url(translation.heatmap_image()), "overlay": data_url(translation.overlay())}
        outputs.append(output)
    first = result.images[0]
    return {"model": name, "label": ask.label, "seconds": round(seconds, 3), "width": first.width,
            "height": first.height, "input": data_url(preview(result.given)), "outputs": outputs}


# ----------------------------------------------------------------------------- web application


def allowed_hosts(host: str) -> list[str]:
    """Host headers accepted: on a loopback address only its own names, which stops DNS rebinding."""
    return list(LOOPBACK_HOSTS) if host in LOOPBACK_HOSTS else ["*"]


def build_app(shelf: ModelShelf, limits: UploadLimits = UploadLimits(), hosts: list[str] | None = None) -> Any:
    """The ASGI application: the page, ``GET api/info``, ``GET api/model?model=`` (its controls)
    and ``POST api/translate?model=&...`` (the choices ``shelf.Ask`` reads)."""
    import_optional("starlette", "web", "unpaired serve")
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    return_freed_memory()
    pool = ThreadPoolExecutor(DECODERS, thread_name_prefix="unpaired-serve")
    budget = MemoryBudget(limits.memory_budget, limits.budget_wait_s)
    pending = 0  # translate requests in flight; read and changed on the event loop only

    async def in_pool(function, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(function, *args))

    async def page(request):
        name = request.url.path.rsplit("/", 1)[-1] or "page.html"
        return Response(page_file(name), media_type=PAGE_FILES[name], headers=PAGE_HEADERS)

    async def info(request):
        return JSONResponse({"models": shelf.names, "max_upload_bytes": limits.max_bytes,
                             "max_pixels": limits.max_pixels})

    async def model(request):
        controls = await in_pool(shelf.controls, request.query_params.get("model", shelf.names[0]))
        return JSONResponse(controls.json())

    async def translate(request):
        nonlocal pending
        if pending >= MAX_PENDING:
            raise Rejected(503, f"the server is busy with other uploads ({pending} in progress); try again in a moment",
                           {"Retry-After": "5", "Connection": "close"})
        pending += 1
        try:
            query = dict(request.query_params)
            body = await read_body(request, limits, pictures=2 if "reference_bytes" in query else 1)
            return JSONResponse(await in_pool(answer_upload, shelf, limits, budget, body, query))
        finally:
            pending -= 1

    def error(status: int, message: str, headers: dict[str, str] | None = None):
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def rejected(request, exc: Rejected):
        return error(exc.status, exc.message, exc.headers)

    async def user_error(request, exc: UserError):
        return error(400, str(exc))

    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, exc.detail)

    async def server_error(request, exc: Exception):
        return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    routes = [Route("/", page), *(Route(f"/{name}", page) for name in PAGE_FILES if name != "page.html"),
              Route("/api/info", info), Route("/api/model", model),
              Route("/api/translate", translate, methods=["POST"])]
    handlers = {Rejected: rejected, UserError: user_error, HTTPException: http_error, Exception: server_error}
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts or ["*"])]
    return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware, lifespan=lifespan)


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
        shelf.controls(shelf.names[0])  # a broken checkpoint is reported before the page opens
    if host not in LOOPBACK_HOSTS:
        log.warning(f"listening on {host}: anyone who can reach this machine can use the page")
    shown = f"[{host}]" if ":" in host else host
    log.info(f"unpaired serve: {len(shelf.names)} model(s) from {checkpoint} on "
             f"http://{shown}:{sock.getsockname()[1]}/ (Ctrl+C stops)")
    config = uvicorn.Config(app, log_level="warning", server_header=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        shelf.close()


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
