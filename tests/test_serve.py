"""unpaired serve: upload checks, the model menu, the HTTP API's limits, and the page in a real browser.

Three layers, each skipped only when what it needs is missing: plain functions (always), the
HTTP API on a live uvicorn server (the ``web`` extra), and the page in headless Chromium
driven by Playwright (``playwright`` from pip, ``chromium`` from apt; never ``playwright install``).
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import gc
import html.parser
import io
import json
import logging
import shutil
import socket
import struct
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
import zlib
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unpaired import checkpoint as ckpt
from unpaired.cli import main
from unpaired.data.images import to_rgb_peak_bytes
from unpaired.errors import UserError
from unpaired.faces import FaceCrop, Square
from unpaired.models.photo2cartoon.networks import build_photo2cartoon
from unpaired.models.stargan_v2.networks import build_stargan_v2
from unpaired.models.stargan_v2.options import StarGANv2Arch
from unpaired.models.ugatit.networks import build_ugatit
from unpaired.models.ugatit.options import UGATITArch
from unpaired.serve import app as serve_app
from unpaired.serve import shelf as serve_shelf
from unpaired.serve.app import (PAGE_FILES, PAGE_HEADERS, allowed_hosts, answer_upload, build_app, open_socket,
                                page_file)
from unpaired.serve.shelf import MAX_OUTPUTS, Ask, ModelShelf, find_checkpoints
from unpaired.serve.uploads import MemoryBudget, Rejected, UploadLimits, decode_upload, split_body

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HAS_WEB = all(find_spec(name) for name in ("starlette", "uvicorn"))
needs_web = pytest.mark.skipif(not HAS_WEB, reason="the web extra is not installed: pip install 'unpaired[web]'")
needs_browser = pytest.mark.skipif(
    not (HAS_WEB and find_spec("playwright") and CHROMIUM),
    reason="browser tests need the web extra, playwright (pip) and Chromium (apt-get install chromium)")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]

LIMITS = UploadLimits(max_bytes=100_000, max_pixels=1_000_000, body_timeout_s=2.0)
SIZES = {"large.safetensors": 48, "run": 32, "small.safetensors": 32}
P2C, STARGAN = "p2c.safetensors", "stargan.safetensors"
DOMAINS = ("cat", "dog")
MENU = ["large.safetensors", P2C, "run", "small.safetensors", STARGAN]
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def picture_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    """A smooth colour gradient (compresses well, so big pictures stay small files)."""
    x = torch.linspace(0, 255, width).expand(height, width)
    y = torch.linspace(0, 255, height)[:, None].expand(height, width)
    rgb = torch.stack([x, y, 255 - x], dim=-1).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt)
    return buffer.getvalue()


def sixteen_bit_png(width: int, height: int) -> bytes:
    """A 16-bit grey gradient: the decode path that widens samples to 64 bits to scale them."""
    ramp = np.linspace(0, 65535, width, dtype=np.float32)[None, :].repeat(height, 0).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, "PNG", compress_level=1)
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


def rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A folder as a user keeps one: U-GAT-IT weight files of two sizes and a run folder, a tiny
    photo2cartoon and a tiny StarGAN v2 model, and a stray note."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    for name, size in SIZES.items():
        arch = UGATITArch(light=True, img_size=size, ch=4, n_res=1)
        nets = build_ugatit(arch)
        if name == "run":
            ckpt.save_checkpoint(root / name / "checkpoints", 2, nets, "ugatit", arch, state={}, keep=1)
        else:
            ckpt.save_weights(root / name, ckpt.states_of(nets), "ugatit", arch)
    arch = UGATITArch(light=True, img_size=32, ch=4, n_res=1)
    ckpt.save_weights(root / P2C, ckpt.states_of(build_photo2cartoon(arch)), "photo2cartoon", arch)
    arch = StarGANv2Arch(img_size=32, style_dim=8, latent_dim=4, max_conv_dim=16, domains=DOMAINS)
    ckpt.save_weights(root / STARGAN, ckpt.states_of(build_stargan_v2(arch)), "stargan_v2", arch)
    (root / "notes.txt").write_text("not a checkpoint")
    return root


@pytest.fixture
def no_mediapipe(monkeypatch):
    """Face preparation unavailable, as without the faces extra (also in the venv that has it)."""
    monkeypatch.setitem(sys.modules, "mediapipe", None)


# ----------------------------------------------------------------------------- uploads and their limits


def test_find_checkpoints_offers_runs_and_weight_files_and_ignores_the_rest(models, tmp_path):
    found = find_checkpoints(models)
    assert list(found) == MENU
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

    def refusal(data: bytes, what: str = "this file") -> tuple[int, str]:
        with pytest.raises(Rejected) as info:
            decode_upload(data, LIMITS, what)
        return info.value.status, info.value.message

    assert refusal(b"hello, I am text\n")[0] == 415
    assert refusal(picture_bytes(8, 8, "PPM"))[0] == 415  # Pillow reads it, the page does not try
    assert refusal(b"")[0] == 400
    assert refusal(picture_bytes(40, 30)[:60])[0] == 422
    assert refusal(b"\0" * (LIMITS.max_bytes + 1)) == (413, "this file is larger than the upload limit of 0.1 MB")
    status, message = refusal(png_header_only(1001, 1000), "the reference file")
    assert status == 413 and message.startswith("the reference file is 1001×1000 = 1.0 megapixels; the limit is 1 ")


def test_a_two_picture_body_splits_where_reference_bytes_says():
    assert split_body(b"picture", None) == (b"picture", None)
    assert split_body(b"REFpicture", "3") == (b"picture", b"REF")
    for bad in ("0", "10", "x", "-1", "³"):
        with pytest.raises(Rejected, match="reference_bytes must be a number of bytes between 1 and 9") as info:
            split_body(b"REFpicture", bad)
        assert info.value.status == 400


@pytest.mark.parametrize("mode, per_pixel", [("L", 6), ("RGB", 12), ("RGBA", 24), ("I;16", 24), ("I", 28),
                                             ("P", 6), ("1", 6)])
def test_decode_estimate_counts_samples_copies_and_working_arrays(mode, per_pixel):
    """Bytes per pixel of load + to_rgb: 2 × the stored samples + the RGB result, + 16 for
    16-bit scaling, + 12 for transparency (the measured peaks are in to_rgb_peak_bytes' docstring)."""
    assert to_rgb_peak_bytes(Image.new(mode, (10, 3))) == 30 * per_pixel
    transparent = Image.new(mode, (10, 3))
    transparent.info["transparency"] = 0
    if mode not in ("RGBA", "I;16", "I"):
        assert to_rgb_peak_bytes(transparent) == 30 * (per_pixel + 12)


def test_memory_budget_waits_for_room_then_refuses_and_refuses_what_never_fits():
    budget = MemoryBudget(100, wait_s=0.2)
    with pytest.raises(Rejected, match="this server decodes at most 0.0001 MB at a time") as info:
        with budget.reserve(101):
            pass
    assert info.value.status == 413
    with budget.reserve(60), budget.reserve(40):
        assert budget.used == 100
        started = time.monotonic()
        with pytest.raises(Rejected, match="busy with other pictures") as info:
            with budget.reserve(1):
                pass
        assert info.value.status == 503 and time.monotonic() - started >= 0.2
    assert budget.used == 0
    holder = contextlib.ExitStack()
    holder.enter_context(budget.reserve(80))
    threading.Timer(0.05, holder.close).start()
    with budget.reserve(80):  # waits for the holder to let go
        assert budget.used == 80
    assert budget.used == 0


# ----------------------------------------------------------------------------- the shelf and its controls


def test_model_shelf_loads_translators_on_first_use_and_keeps_at_most_its_capacity(models):
    shelf = ModelShelf(find_checkpoints(models), device="cpu", capacity=2)
    assert shelf.loaded == []
    photo = rgb(picture_bytes(40, 30))
    assert shelf.translate("large.safetensors", Ask(direction="B2A"), photo).images[0].size == (48, 48)
    assert shelf.translate("small.safetensors", Ask(direction="A2B"), photo).images[0].size == (32, 32)
    assert shelf.loaded == [("large.safetensors", "B2A"), ("small.safetensors", "A2B")]
    shelf.translate("large.safetensors", Ask(direction="B2A"), photo)
    shelf.translate("run", Ask(direction="A2B"), photo)
    assert shelf.loaded == [("large.safetensors", "B2A"), ("run", "A2B")]
    with pytest.raises(Rejected, match="no model named 'other'") as info:
        shelf.controls("other")
    assert info.value.status == 404


def test_each_family_gets_the_controls_its_options_and_translator_expose(models, no_mediapipe, caplog):
    shelf = ModelShelf(find_checkpoints(models), device="cpu")
    two_domain = shelf.controls("small.safetensors")
    assert (two_domain.family, two_domain.directions, two_domain.domains, two_domain.guides) == \
        ("ugatit", ("A2B", "B2A"), (), ())
    assert two_domain.attention and not two_domain.faces and two_domain.note == ""
    multi = shelf.controls(STARGAN)
    assert (multi.family, multi.directions, multi.domains, multi.guides) == \
        ("stargan_v2", (), DOMAINS, ("latent", "reference"))
    assert not multi.attention and multi.max_outputs == MAX_OUTPUTS == 8
    with caplog.at_level(logging.WARNING, logger="unpaired"):
        cartoon = shelf.controls(P2C)
        shelf.translate(P2C, Ask(direction="A2B"), rgb(picture_bytes(40, 30)))
        shelf.translate(P2C, Ask(direction="B2A"), rgb(picture_bytes(40, 30)))
    assert cartoon.attention and not cartoon.faces and "translated as they are" in cartoon.note
    warnings = [r.getMessage() for r in caplog.records if "face" in r.getMessage()]
    assert len(warnings) == 1 and "pip install 'unpaired[faces]'" in warnings[0], warnings
    assert "translated as they are" in warnings[0]


@pytest.mark.parametrize("model, query, message", [
    ("small.safetensors", {"direction": "sideways"}, "unknown direction 'sideways': use A2B or B2A"),
    ("small.safetensors", {"domain": "dog"}, "domain does not apply to small.safetensors, a ugatit model"),
    (STARGAN, {}, "choose a domain: one of cat, dog"),
    (STARGAN, {"domain": "cow"}, "unknown domain 'cow': use cat or dog"),
    (STARGAN, {"domain": "dog", "direction": "A2B"}, "direction does not apply to stargan.safetensors"),
    (STARGAN, {"domain": "dog", "num": "9"}, "num must be a whole number from 1 to 8 (the page makes at most 8"),
    (STARGAN, {"domain": "dog", "num": "0"}, "num must be a whole number from 1 to 8"),
    (STARGAN, {"domain": "dog", "seed": "-3"}, "seed must be a whole number 0 or more, got '-3'"),
    (STARGAN, {"domain": "dog", "seed": "²"}, "seed must be a whole number 0 or more"),
    (STARGAN, {"domain": "dog", "seed": "1", "reference_bytes": "5"}, "a reference picture gives one style"),
    (P2C, {"raw": "1"}, "raw does not apply"),  # faces are not prepared here (no mediapipe)
])
def test_requests_are_checked_against_the_models_controls(models, no_mediapipe, model, query, message):
    controls = ModelShelf(find_checkpoints(models / model), device="cpu").controls(model)
    with pytest.raises(Rejected) as info:
        Ask.parse({"model": model, **query}, controls)
    assert info.value.status == 400 and message in info.value.message


def answer(shelf: ModelShelf, body: bytes, **query: str) -> dict:
    return answer_upload(shelf, LIMITS, MemoryBudget(LIMITS.memory_budget, 1.0), body, query)


def test_answer_upload_returns_input_translation_and_heatmaps_inline(models):
    shelf = ModelShelf(find_checkpoints(models / "small.safetensors"), device="cpu")
    reply = answer(shelf, picture_bytes(40, 30), model="small.safetensors", direction="A2B")
    assert (reply["width"], reply["height"], reply["label"]) == (32, 32, "A2B")
    assert decoded(reply["input"]).size == (40, 30)
    [output] = reply["outputs"]
    assert (output["tag"], output["caption"]) == ("A2B", "Translation")
    for key in ("image", "heatmap", "overlay"):
        assert decoded(output[key]).size == (32, 32), key
    reference = shelf.translate("small.safetensors", Ask(direction="A2B"), rgb(picture_bytes(40, 30)))
    assert decoded(output["image"]).tobytes() == reference.images[0].tobytes()


def test_a_tf_checkpoint_folder_is_offered_and_translated(tmp_path):
    """The paper's TF checkpoints are served like any model: found in a folder, translated with heatmaps."""
    folder = Path(__file__).parent / "parity_fixtures" / "tf" / "full_s64_ch3_nd5" / "checkpoint"
    models = tmp_path / "models"
    models.mkdir()
    (models / "paper").symlink_to(folder, target_is_directory=True)
    found = find_checkpoints(models)
    assert list(found) == ["paper"]
    reply = answer(ModelShelf(found, device="cpu"), picture_bytes(40, 30), model="paper", direction="B2A")
    [output] = reply["outputs"]
    assert (reply["width"], reply["height"]) == (64, 64) and decoded(output["heatmap"]).size == (64, 64)


def test_answer_upload_of_a_multi_domain_model_latent_and_reference_guided(models):
    shelf = ModelShelf(find_checkpoints(models / STARGAN), device="cpu")
    photo, style = picture_bytes(40, 30), picture_bytes(20, 20, "JPEG")
    reply = answer(shelf, photo, model=STARGAN, domain="dog", seed="7", num="3")
    assert reply["label"] == "into dog, seed 7, 3 outputs"
    assert [(o["tag"], o["caption"]) for o in reply["outputs"]] == \
        [("dog_seed7_0", "Style 0"), ("dog_seed7_1", "Style 1"), ("dog_seed7_2", "Style 2")]
    assert all(set(o) == {"image", "tag", "caption"} for o in reply["outputs"])  # no attention map
    translator = shelf._translator(STARGAN)
    expected = translator(rgb(photo), domain="dog", seed=7, num=3).images
    assert [decoded(o["image"]).tobytes() for o in reply["outputs"]] == [im.tobytes() for im in expected]

    reply = answer(shelf, style + photo, model=STARGAN, domain="cat", reference_bytes=str(len(style)))
    assert reply["label"] == "into cat in the reference's style" and decoded(reply["input"]).size == (40, 30)
    [output] = reply["outputs"]
    assert output["tag"] == "cat_ref"
    expected = translator(rgb(photo), domain="cat", reference=rgb(style)).images[0]
    assert decoded(output["image"]).tobytes() == expected.tobytes()
    with pytest.raises(Rejected, match="the reference file is not a picture") as info:
        answer(shelf, b"not a picture" + photo, model=STARGAN, domain="cat", reference_bytes="13")
    assert info.value.status == 415


class FakePreparer:
    """A stand-in for MediaPipe's face preparation: the 'face' is the picture resized, its mask
    the left half (so where the white background goes is known)."""

    def __init__(self, size: int, background: str):
        self.size = size

    def largest(self, image: Image.Image) -> FaceCrop:
        mask = np.zeros((self.size, self.size), np.float32)
        mask[:, : self.size // 2] = 1.0
        return FaceCrop(image.resize((self.size, self.size)), mask, np.zeros((468, 2)), Square(0, 0, 1))

    def close(self):
        pass


def test_face_crop_models_get_their_faces_cut_out_and_the_output_pasted_on_white(models, monkeypatch):
    monkeypatch.setattr(serve_shelf, "FacePreparer", FakePreparer)
    shelf = ModelShelf(find_checkpoints(models / P2C), device="cpu")
    controls = shelf.controls(P2C)
    assert controls.faces and "cut out first" in controls.note
    photo = picture_bytes(40, 30)
    finished = answer(shelf, photo, model=P2C, direction="A2B")
    raw = answer(shelf, photo, model=P2C, direction="A2B", raw="1")
    assert decoded(finished["input"]).size == (32, 32), "the input shown is the face crop the model got"
    white, kept = (np.asarray(decoded(r["outputs"][0]["image"]).convert("RGB")) for r in (finished, raw))
    assert (white[:, 16:] == 255).all() and np.array_equal(white[:, :16], kept[:, :16])
    assert (kept[:, 16:] != 255).any()
    crop = FakePreparer(32, "white").largest(rgb(photo))
    model_output = shelf._translator(P2C, "A2B")([crop.image]).images[0]
    assert np.array_equal(kept, np.asarray(model_output))


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


@pytest.mark.parametrize("flag, value", [("--max-upload-mb", "0"), ("--max-upload-mb", "inf"), ("--max-upload-mb", "nan"),
                                         ("--max-upload-mb", "-1"), ("--body-timeout-s", "0"),
                                         ("--memory-budget-mb", "inf"), ("--max-megapixels", "nan")])
def test_serve_refuses_limits_that_are_not_finite_positive_numbers(models, capsys, flag, value):
    assert main(["serve", "--checkpoint", str(models), flag, value]) == 2
    error = capsys.readouterr().err.strip()
    needle = "must be a finite number" if value in ("inf", "nan") else "must be above 0"  # options' shared checks
    assert error.count("\n") == 0 and f"argument {flag}: {needle}, got" in error


def test_a_busy_port_is_a_user_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UserError, match="cannot listen on 127.0.0.1"):
            open_socket("127.0.0.1", taken.getsockname()[1])


# ----------------------------------------------------------------------------- HTTP API on a live server


@contextlib.contextmanager
def running(app):
    """The app on uvicorn in a thread, on a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    sock = open_socket("127.0.0.1", 0)
    uv = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not uv.started:
        assert thread.is_alive(), "the server stopped while starting"
        thread.join(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def server(models) -> str:
    shelf = ModelShelf(find_checkpoints(models), device="cpu", capacity=3)
    with running(build_app(shelf, LIMITS, allowed_hosts("127.0.0.1"))) as url:
        yield url


def call(url: str, body=None, headers: dict | None = None, method: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        assert error.headers.get_content_type() == "application/json", error.read()
        return error.code, json.load(error)


@needs_web
def test_api_translates_an_upload(server):
    status, info = call(server + "api/info")
    assert status == 200
    assert info == {"models": MENU, "max_upload_bytes": 100_000, "max_pixels": 1_000_000}
    status, controls = call(server + "api/model?model=large.safetensors")
    assert status == 200 and (controls["directions"], controls["domains"], controls["attention"]) == \
        (["A2B", "B2A"], [], True)
    status, reply = call(server + "api/translate?model=large.safetensors&direction=B2A", picture_bytes(40, 30))
    assert status == 200 and (reply["model"], reply["label"]) == ("large.safetensors", "B2A")
    [output] = reply["outputs"]
    assert decoded(output["image"]).size == decoded(output["heatmap"]).size == (48, 48)


@needs_web
def test_api_translates_into_a_domain_latent_and_reference_guided(server):
    status, controls = call(server + f"api/model?model={STARGAN}")
    assert status == 200
    assert (controls["family"], controls["directions"], controls["domains"], controls["guides"], controls["attention"],
            controls["max_outputs"]) == ("stargan_v2", [], list(DOMAINS), ["latent", "reference"], False, 8)
    photo, style = picture_bytes(40, 30), picture_bytes(24, 24)
    status, reply = call(server + f"api/translate?model={STARGAN}&domain=dog&seed=3&num=2", photo)
    assert status == 200 and [o["tag"] for o in reply["outputs"]] == ["dog_seed3_0", "dog_seed3_1"]
    assert decoded(reply["outputs"][0]["image"]).tobytes() != decoded(reply["outputs"][1]["image"]).tobytes()
    status, reply = call(server + f"api/translate?model={STARGAN}&domain=cat&reference_bytes={len(style)}",
                         style + photo)
    assert status == 200 and [o["tag"] for o in reply["outputs"]] == ["cat_ref"]
    # Each picture of a two-picture body is checked on its own: a reference past the pixel limit
    # is refused before decoding, naming it.
    big = png_header_only(1200, 1000)
    status, reply = call(server + f"api/translate?model={STARGAN}&domain=cat&reference_bytes={len(big)}", big + photo)
    assert status == 413 and reply["error"].startswith("the reference file is 1200×1000")
    status, reply = call(server + f"api/translate?model={STARGAN}&domain=cat&num=9", photo)
    assert status == 400 and "at most 8" in reply["error"]


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
    ("two pictures too big", bytes(250_000), f"?model={STARGAN}&domain=cat&reference_bytes=9", 413,
     "the 2 files together are larger than the upload limit of 0.2 MB"),
])
def test_api_refuses_bad_uploads_with_a_json_message(server, case, body, query, status, message):
    # The streamed body is one byte over the limit: the server can only see that at the last
    # chunk, after the client has sent everything, so the client always reads the 413 answer
    # (with more data queued, the server's early close could reach urllib as a broken pipe).
    body = chunks(bytes(100_001)) if body == "chunked" else body
    code, reply = call(server + "api/translate" + query, body, {"Content-Type": "image/png"}, "POST")
    assert code == status and message in reply["error"]


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


def stall(url: str, sent: bytes, announced: int) -> socket.socket:
    """A connection that sends the headers of an upload of ``announced`` bytes, then ``sent``, then nothing."""
    host, port = url.split("//")[1].strip("/").split(":")
    sock = socket.create_connection((host, int(port)), timeout=LIMITS.body_timeout_s + 10)
    sock.sendall(b"POST /api/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                 b"Content-Length: %d\r\n\r\n" % announced + sent)
    return sock


def read_to_the_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


@needs_web
def test_a_stalled_upload_is_answered_408_within_the_timeout_and_its_connection_closed(server):
    started = time.monotonic()
    with stall(server, picture_bytes(40, 30)[:50], 5000) as sock:
        reply = read_to_the_end(sock)
    waited = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408 ") and b"connection: close" in reply.lower()
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1]) == {"error": "the upload did not arrive within 2 s; try again"}
    assert LIMITS.body_timeout_s - 0.1 < waited < LIMITS.body_timeout_s + 3
    assert call(server + "api/translate?model=small.safetensors", picture_bytes(8, 8))[0] == 200


@needs_web
def test_requests_past_the_pending_limit_are_refused_until_one_finishes(server, monkeypatch):
    monkeypatch.setattr(serve_app, "MAX_PENDING", 1)
    with stall(server, b"", 5000) as held:
        deadline = time.monotonic() + 5
        while (answer := call(server + "api/translate?model=small.safetensors", picture_bytes(8, 8)))[0] == 200:
            assert time.monotonic() < deadline, "the stalled upload never counted as pending"
        assert answer == (503, {"error": "the server is busy with other uploads (1 in progress); try again in a moment"})
        assert read_to_the_end(held).startswith(b"HTTP/1.1 408 ")
    assert call(server + "api/translate?model=small.safetensors", picture_bytes(8, 8))[0] == 200


def memory(key: str) -> int:
    """A line of /proc/self/status in bytes: VmRSS (now) or VmHWM (the peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak() -> int:
    """Start a new RSS high-water mark (writing 5 to clear_refs, Linux 4.0+); returns RSS now."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return memory("VmRSS")


@needs_web
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc RSS high-water mark")
@pytest.mark.parametrize("kind", ["8-bit RGB", "16-bit grey"])
def test_concurrent_large_uploads_stay_within_the_memory_budget(models, kind):
    """8 uploads of one large picture at once: the process's peak RSS above the idle server stays
    within the memory budget, which holds one picture and not two.

    The peak is the kernel's high-water mark of the whole process (VmHWM, reset just before):
    Pillow's pixel buffers come from its own C allocator, which tracemalloc does not see, and
    freed memory the allocator keeps counts too. Before the budget and the pool, the server
    decoded all 8 at once: 1141 MB (8-bit) and 886 to 1056 MB (16-bit) above the idle server.
    """
    data = picture_bytes(4000, 3000) if kind == "8-bit RGB" else sixteen_bit_png(3000, 2000)
    with Image.open(io.BytesIO(data)) as header:
        cost = max(to_rgb_peak_bytes(header), header.width * header.height * serve_app.TRANSLATE_BYTES_PER_PIXEL)
    assert cost == 144_000_000
    limits = UploadLimits(max_bytes=len(data), max_pixels=12_000_000, memory_budget=cost * 3 // 2, budget_wait_s=120)
    shelf = ModelShelf(find_checkpoints(models / "small.safetensors"), device="cpu")
    with running(build_app(shelf, limits)) as url:
        address = url + "api/translate?model=small.safetensors"
        assert call(address, picture_bytes(64, 64))[0] == 200  # model loaded, worker threads started
        statuses: list[int] = []
        start = threading.Barrier(8)

        def post():
            start.wait()
            statuses.append(call(address, data)[0])

        clients = [threading.Thread(target=post) for _ in range(8)]
        idle = reset_peak()
        for client in clients:
            client.start()
        for client in clients:
            client.join(120)
        peak = memory("VmHWM") - idle
    assert statuses == [200] * 8
    print(f"{kind}: 8 concurrent uploads, peak {peak / 1e6:.0f} MB above the idle server "
          f"(one picture {cost / 1e6:.0f} MB, budget {limits.memory_budget / 1e6:.0f} MB)")
    assert peak < limits.memory_budget + 32_000_000, f"peak {peak / 1e6:.0f} MB"


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
    assert natural_size(page, ".output") == natural_size(page, ".heatmap") == (48, 48)
    assert natural_size(page, "#input") == (40, 30)
    download = page.locator(".download")
    assert download.get_attribute("download") == "photo_A2B.png"
    assert download.get_attribute("href") == page.get_attribute(".output", "src")
    assert page.locator("#domains").is_hidden() and page.locator("#guides").is_hidden()

    page.select_option("#model", "small.safetensors")
    page.check("input[value=B2A]")
    expect(page.locator("#status")).to_contain_text("small.safetensors, B2A: 32×32 px")
    assert natural_size(page, ".output") == (32, 32)
    plain = page.get_attribute(".heatmap", "src")
    page.check("#over")
    assert page.get_attribute(".heatmap", "src") not in (plain, None)

    picture = base64.b64encode(picture_bytes(20, 50)).decode()
    page.dispatch_event("#drop", "drop", {"dataTransfer": page.evaluate_handle(
        """data => { const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                     const transfer = new DataTransfer();
                     transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
                     return transfer; }""", picture)})
    expect(page.locator(".download")).to_have_attribute("download", "dropped_B2A.png")
    assert natural_size(page, "#input") == (20, 50)
    assert page.locator("#error").is_hidden()


@needs_browser
def test_page_translates_into_a_chosen_domain_latent_then_reference_guided(page):
    from playwright.sync_api import expect

    page.select_option("#model", STARGAN)
    expect(page.locator("#domains")).to_be_visible()
    assert page.locator("#directions").is_hidden() and page.locator("#attention").is_hidden()
    assert page.get_attribute("#num", "max") == "8" and page.text_content("#cap") == "(at most 8)"
    page.select_option("#domain", "dog")
    page.fill("#num", "2")
    page.press("#num", "Tab")
    upload(page, "photo.png", picture_bytes(40, 30))
    expect(page.locator("#status")).to_contain_text(f"{STARGAN}, into dog, seed 0, 2 outputs: 32×32 px")
    outputs = page.locator(".output")
    expect(outputs).to_have_count(2)
    assert page.locator(".heatmap").count() == 0
    downloads = page.locator(".download")
    assert [downloads.nth(i).get_attribute("download") for i in range(2)] == \
        ["photo_dog_seed0_0.png", "photo_dog_seed0_1.png"]
    sources = [outputs.nth(i).get_attribute("src") for i in range(2)]
    assert [downloads.nth(i).get_attribute("href") for i in range(2)] == sources and sources[0] != sources[1]
    assert all(natural_size(page, f".made:nth-of-type({i}) .output") == (32, 32) for i in (2, 3))

    page.fill("#num", "9")
    page.press("#num", "Tab")
    expect(page.locator("#error")).to_contain_text("num must be a whole number from 1 to 8")

    page.check("input[name=guide][value=reference]")
    expect(page.locator("#error")).to_contain_text("choose a reference picture")
    assert page.locator("#latent").is_hidden()
    page.set_input_files("#reference", files=[{"name": "rex.png", "mimeType": "image/png",
                                              "buffer": picture_bytes(24, 24)}])
    expect(page.locator("#status")).to_contain_text(f"{STARGAN}, into dog in the reference's style: 32×32 px")
    expect(page.locator(".output")).to_have_count(1)
    assert page.get_attribute(".download", "download") == "photo_dog_ref.png"
    assert any("reference_bytes=" in url for url in page.requests)
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
