"""unpaired serve: upload checks, the model menu, the HTTP API's limits, and the page in a real browser.

Three layers, each skipped only when what it needs is missing: plain functions (always), the
HTTP API on a live uvicorn server (the ``web`` extra), and the page in headless Chromium
driven by Playwright (``playwright`` from pip, ``chromium`` from apt; never ``playwright install``).
"""

from __future__ import annotations

import base64
import fnmatch
import html.parser
import io
import json
import shutil
import socket
import struct
import sys
import threading
import tomllib
import urllib.error
import urllib.request
import zlib
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from PIL import Image

from unpaired import checkpoint as ckpt
from unpaired.cli import main
from unpaired.errors import UserError
from unpaired.models.ugatit.networks import build_ugatit
from unpaired.models.ugatit.options import UGATITArch
from unpaired.serve.app import (PAGE_FILES, PAGE_HEADERS, ModelShelf, Rejected, UploadLimits, allowed_hosts,
                                answer_upload, build_app, decode_upload, find_checkpoints, open_socket, page_file)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HAS_WEB = all(find_spec(name) for name in ("starlette", "uvicorn"))
needs_web = pytest.mark.skipif(not HAS_WEB, reason="the web extra is not installed: pip install 'unpaired[web]'")
needs_browser = pytest.mark.skipif(
    not (HAS_WEB and find_spec("playwright") and CHROMIUM),
    reason="browser tests need the web extra, playwright (pip) and Chromium (apt-get install chromium)")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]

LIMITS = UploadLimits(max_bytes=100_000, max_pixels=1_000_000)
SIZES = {"large.safetensors": 48, "run": 32, "small.safetensors": 32}
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def picture_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    """A smooth colour gradient (compresses well, so big pictures stay small files)."""
    x = torch.linspace(0, 255, width).expand(height, width)
    y = torch.linspace(0, 255, height)[:, None].expand(height, width)
    rgb = torch.stack([x, y, 255 - x], dim=-1).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that announces width×height but whose pixel data is garbage: only a check made before
    decoding can answer anything but 'could not be decoded'."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"garbage")


def decoded(url: str) -> Image.Image:
    prefix, _, payload = url.partition(",")
    assert prefix.startswith("data:image/") and prefix.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(payload)))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A folder as a user keeps one: two weight files of different sizes, a run folder, a stray note."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    for name, size in SIZES.items():
        arch = UGATITArch(light=True, img_size=size, ch=4, n_res=1)
        nets = build_ugatit(arch)
        if name == "run":
            ckpt.save_checkpoint(root / name / "checkpoints", 2, nets, "ugatit", arch, state={}, keep=1)
        else:
            ckpt.save_weights(root / name, ckpt.states_of(nets), "ugatit", arch)
    (root / "notes.txt").write_text("not a checkpoint")
    return root


# ----------------------------------------------------------------------------- plain functions


def test_find_checkpoints_offers_runs_and_weight_files_and_ignores_the_rest(models, tmp_path):
    found = find_checkpoints(models)
    assert list(found) == ["large.safetensors", "run", "small.safetensors"]
    assert find_checkpoints(models / "run") == {"run": models / "run"}
    assert find_checkpoints(models / "small.safetensors") == {"small.safetensors": models / "small.safetensors"}
    with pytest.raises(UserError, match="holds no checkpoints"):
        find_checkpoints(tmp_path)
    with pytest.raises(UserError, match="not found"):
        find_checkpoints(tmp_path / "missing")


def test_decode_upload_accepts_pictures_and_refuses_everything_else():
    rgba = io.BytesIO()
    Image.new("RGBA", (7, 5), (10, 20, 30, 0)).save(rgba, "PNG")
    picture = decode_upload(rgba.getvalue(), LIMITS)
    assert (picture.mode, picture.size, picture.getpixel((0, 0))) == ("RGB", (7, 5), (255, 255, 255))
    assert decode_upload(picture_bytes(9, 4, "JPEG"), LIMITS).size == (9, 4)

    def refusal(data: bytes) -> tuple[int, str]:
        with pytest.raises(Rejected) as info:
            decode_upload(data, LIMITS)
        return info.value.status, info.value.message

    assert refusal(b"hello, I am text\n")[0] == 415
    assert refusal(picture_bytes(8, 8, "PPM"))[0] == 415  # Pillow reads it, the page does not try
    assert refusal(b"")[0] == 400
    assert refusal(picture_bytes(40, 30)[:60])[0] == 422
    assert refusal(b"\0" * (LIMITS.max_bytes + 1)) == (413, "the file is larger than the upload limit of 0.1 MB")
    status, message = refusal(png_header_only(1001, 1000))
    assert status == 413 and "1001×1000 = 1.0 megapixels; the limit is 1 megapixels" in message


def test_model_shelf_loads_generators_on_first_use_and_keeps_at_most_its_capacity(models):
    shelf = ModelShelf(find_checkpoints(models), device="cpu", capacity=2)
    assert shelf.loaded == []
    photo = Image.open(io.BytesIO(picture_bytes(40, 30))).convert("RGB")
    assert shelf.translate("large.safetensors", "B2A", photo).image.size == (48, 48)
    assert shelf.translate("small.safetensors", "A2B", photo).image.size == (32, 32)
    assert shelf.loaded == [("large.safetensors", "B2A"), ("small.safetensors", "A2B")]
    shelf.translate("large.safetensors", "B2A", photo)
    shelf.translate("run", "A2B", photo)
    assert shelf.loaded == [("large.safetensors", "B2A"), ("run", "A2B")]
    with pytest.raises(Rejected, match="no model named 'other'") as info:
        shelf.translate("other", "A2B", photo)
    assert info.value.status == 404
    with pytest.raises(Rejected, match="unknown direction") as info:
        shelf.translate("run", "A2A", photo)
    assert info.value.status == 400


def test_answer_upload_returns_input_translation_and_heatmaps_inline(models):
    shelf = ModelShelf(find_checkpoints(models / "small.safetensors"), device="cpu")
    answer = answer_upload(shelf, LIMITS, picture_bytes(40, 30), "small.safetensors", "A2B")
    assert (answer["width"], answer["height"]) == (32, 32)
    assert decoded(answer["input"]).size == (40, 30)
    for key in ("translation", "heatmap", "overlay"):
        assert decoded(answer[key]).size == (32, 32), key
    reference = shelf.translate("small.safetensors", "A2B", decode_upload(picture_bytes(40, 30), LIMITS))
    assert decoded(answer["translation"]).tobytes() == reference.image.tobytes()


class PageParts(html.parser.HTMLParser):
    """What an HTML page pulls in: script and stylesheet addresses, inline code, every URL-valued attribute."""

    def __init__(self):
        super().__init__()
        self.scripts, self.stylesheets, self.urls, self.inline = [], [], [], []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [value for name, value in attrs.items() if name in ("src", "href", "action") and value]
        self.inline += [f"{tag} {name}" for name in attrs if name == "style" or name.startswith("on")]
        if tag == "script":
            self.scripts.append(attrs.get("src"))
        elif tag == "link" and attrs.get("rel") == "stylesheet":
            self.stylesheets.append(attrs.get("href"))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in and data.strip():
            self.inline.append(f"<{self._in}> {data.strip()[:40]}")


def test_page_loads_only_its_own_script_and_style():
    page = page_file("page.html").decode()
    parts = PageParts()
    parts.feed(page)
    # The CSP allows scripts and styles from this server only: the page has no inline code
    # (no <script>/<style> bodies, no style= or on*= attributes) and loads exactly its two files.
    assert parts.scripts == ["page.js"] and parts.stylesheets == ["page.css"] and parts.inline == []
    assert set(parts.urls) == {"page.js", "page.css", "data:,"}  # data:, is the empty favicon
    assert set(PAGE_FILES) == {"page.html", "page.css", "page.js"}
    for name in PAGE_FILES:
        text = page_file(name).decode()
        assert "://" not in text and '"//' not in text and "'//" not in text and "url(" not in text, name
    policy = PAGE_HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "script-src 'self';" in policy and "style-src 'self';" in policy and "unsafe" not in policy
    assert PAGE_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost"] and allowed_hosts("0.0.0.0") == ["*"]


def test_page_files_ship_as_package_data():
    globs = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]["unpaired"]
    for name in PAGE_FILES:
        assert any(fnmatch.fnmatch(f"serve/{name}", pattern) for pattern in globs), name


def test_serve_without_the_web_extra_is_one_line_naming_the_install(models, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    monkeypatch.setitem(sys.modules, "starlette", None)
    assert main(["serve", "--checkpoint", str(models), "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "pip install 'unpaired[web]'" in error
    with pytest.raises(UserError, match=r"unpaired\[web\]"):
        build_app(ModelShelf(find_checkpoints(models)))
    assert main(["serve", "--checkpoint", str(models), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb" in capsys.readouterr().err


def test_a_busy_port_is_a_user_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UserError, match="cannot listen on 127.0.0.1"):
            open_socket("127.0.0.1", taken.getsockname()[1])


# ----------------------------------------------------------------------------- HTTP API on a live server


@pytest.fixture(scope="module")
def server(models) -> str:
    """The app on uvicorn in a thread, on a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    app = build_app(ModelShelf(find_checkpoints(models), device="cpu", capacity=3), LIMITS, allowed_hosts("127.0.0.1"))
    sock = open_socket("127.0.0.1", 0)
    uv = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not uv.started:
        assert thread.is_alive(), "the server stopped while starting"
        thread.join(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    uv.should_exit = True
    thread.join(10)
    sock.close()


def call(url: str, body=None, headers: dict | None = None, method: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        assert error.headers.get_content_type() == "application/json", error.read()
        return error.code, json.load(error)


@needs_web
def test_api_translates_an_upload(server):
    status, info = call(server + "api/info")
    assert status == 200
    assert info == {"models": list(SIZES), "directions": ["A2B", "B2A"], "max_upload_bytes": 100_000,
                    "max_pixels": 1_000_000}
    status, answer = call(server + "api/translate?model=large.safetensors&direction=B2A", picture_bytes(40, 30))
    assert status == 200 and (answer["model"], answer["direction"]) == ("large.safetensors", "B2A")
    assert decoded(answer["translation"]).size == decoded(answer["heatmap"]).size == (48, 48)


def chunks(data: bytes, size: int = 16_384):
    """An iterable body: urllib sends it chunked, without announcing its length."""
    return (data[i:i + size] for i in range(0, len(data), size))


@needs_web
@pytest.mark.parametrize("case, body, query, status, message", [
    ("text", b"plain text, named photo.png", "", 415, "not a picture"),
    ("announced too big", bytes(150_000), "", 413, "larger than the upload limit of 0.1 MB"),
    ("streamed too big", "chunked", "", 413, "larger than the upload limit of 0.1 MB"),
    ("too many pixels", png_header_only(1200, 1000), "", 413, "1.2 megapixels; the limit is 1 megapixels"),
    ("unknown model", picture_bytes(8, 8), "?model=nope", 404, "no model named 'nope'"),
    ("unknown direction", picture_bytes(8, 8), "?direction=sideways", 400, "unknown direction"),
])
def test_api_refuses_bad_uploads_with_a_json_message(server, case, body, query, status, message):
    # The streamed body is one byte over the limit: the server can only see that at the last
    # chunk, after the client has sent everything, so the client always reads the 413 answer
    # (with more data queued, the server's early close could reach urllib as a broken pipe).
    body = chunks(bytes(100_001)) if body == "chunked" else body
    code, answer = call(server + "api/translate" + query, body, {"Content-Type": "image/png"}, "POST")
    assert code == status and message in answer["error"]


@needs_web
def test_api_errors_outside_uploads_are_json_too(server):
    assert call(server + "nothing-here") == (404, {"error": "Not Found"})
    assert call(server + "api/translate")[0] == 405
    request = urllib.request.Request(server + "api/info", headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    with urllib.request.urlopen(server, timeout=10) as page:
        assert page.headers["Content-Security-Policy"] == PAGE_HEADERS["Content-Security-Policy"]
        assert 'id="file"' in page.read().decode()


@needs_web
def test_every_page_file_is_served_with_the_policy(server):
    for name, media_type in PAGE_FILES.items():
        address = server if name == "page.html" else server + name
        with urllib.request.urlopen(address, timeout=10) as response:
            assert response.headers["Content-Type"] == media_type, name
            for header, value in PAGE_HEADERS.items():
                assert response.headers[header] == value, (name, header)
            assert response.read() == page_file(name), name


# ----------------------------------------------------------------------------- the page in Chromium


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh tab on the page, its settings loaded; fails the test if it asked anything of another host."""
    context = browser.new_context()
    # Anything the Content-Security-Policy blocks (inline code, another host) is recorded here.
    context.add_init_script("document.addEventListener('securitypolicyviolation', event => "
                            "(window.violations = window.violations || []).push("
                            "`${event.violatedDirective} ${event.blockedURI}`));")
    tab = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    tab.on("request", lambda request: requests.append(request.url))
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error"
           and "Content Security Policy" in message.text else None)
    tab.set_default_timeout(20_000)
    tab.goto(server)
    tab.wait_for_selector("body[data-ready]", state="attached")
    tab.requests = requests
    yield tab
    violations = tab.evaluate("window.violations || []")
    context.close()
    assert requests and all(url.startswith(server) or url.startswith("data:") for url in requests), requests
    assert {server + "page.css", server + "page.js"} <= set(requests)
    assert violations == [] and errors == [], (violations, errors)


def upload(tab, name: str, data: bytes, mime: str = "image/png") -> None:
    tab.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": data}])


def natural_size(tab, selector: str) -> tuple[int, int]:
    return tuple(tab.eval_on_selector(selector, "async img => { await img.decode(); "
                                                "return [img.naturalWidth, img.naturalHeight]; }"))


@needs_browser
def test_page_translates_an_uploaded_and_a_dropped_picture(page):
    from playwright.sync_api import expect

    upload(page, "photo.png", picture_bytes(40, 30))
    expect(page.locator("#status")).to_contain_text("large.safetensors, A2B: 48×48 px")
    assert natural_size(page, "#translation") == natural_size(page, "#heatmap") == (48, 48)
    assert natural_size(page, "#input") == (40, 30)
    download = page.locator("#download")
    assert download.get_attribute("download") == "photo_A2B.png"
    assert download.get_attribute("href") == page.get_attribute("#translation", "src")

    page.select_option("#model", "small.safetensors")
    page.check("input[value=B2A]")
    expect(page.locator("#status")).to_contain_text("small.safetensors, B2A: 32×32 px")
    assert natural_size(page, "#translation") == (32, 32)
    plain = page.get_attribute("#heatmap", "src")
    page.check("#over")
    assert page.get_attribute("#heatmap", "src") not in (plain, None)

    picture = base64.b64encode(picture_bytes(20, 50)).decode()
    page.dispatch_event("#drop", "drop", {"dataTransfer": page.evaluate_handle(
        """data => { const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                     const transfer = new DataTransfer();
                     transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
                     return transfer; }""", picture)})
    expect(page.locator("#download")).to_have_attribute("download", "dropped_B2A.png")
    assert natural_size(page, "#input") == (20, 50)
    assert page.locator("#error").is_hidden()


@needs_browser
def test_page_shows_why_a_text_file_is_refused(page):
    from playwright.sync_api import expect

    upload(page, "not-really.png", b"just some text\n" * 10, "image/png")
    expect(page.locator("#error")).to_contain_text("this file is not a picture")
    assert page.locator("#result").is_hidden()


@needs_browser
def test_page_refuses_oversize_files_and_pictures(page):
    from playwright.sync_api import expect

    upload(page, "huge.png", bytes(150_000))
    expect(page.locator("#error")).to_contain_text("huge.png is 0.15 MB: the file is larger than the upload limit")
    assert not any("api/translate" in url for url in page.requests), "the page sent a file over the limit"
    upload(page, "wide.png", picture_bytes(1200, 1000))
    expect(page.locator("#error")).to_contain_text("1200×1000 = 1.2 megapixels; the limit is 1 megapixels")
    assert page.locator("#result").is_hidden()
