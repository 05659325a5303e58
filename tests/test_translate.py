"""Translator API and the ``unpaired translate`` command on tiny generators (32 px, ch 4)."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unpaired import TranslationOutput, load_translator
from unpaired.checkpoint import save_weights, states_of
from unpaired.cli import main
from unpaired.data.images import ResizeTransform
from unpaired.errors import UserError
from unpaired.inference.pictures import place
from unpaired.models.ugatit.networks import build_ugatit
from unpaired.models.ugatit.options import UGATITArch
from unpaired.viz import to_uint8_image

SIZE = 32
LIGHT = UGATITArch(light=True, img_size=SIZE, ch=4, n_res=2, n_dis=4)
FULL = UGATITArch(light=False, img_size=SIZE, ch=4, n_res=2, n_dis=4)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_nets(arch: UGATITArch, seed: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    return {name: net.eval() for name, net in build_ugatit(arch).items()}


def save_run(run: Path, step: int, nets: dict[str, torch.nn.Module], arch: UGATITArch) -> Path:
    """A run folder as the trainer leaves it: checkpoints/<step>/{weights.safetensors,state.pt}."""
    folder = run / "checkpoints" / f"{step:07d}"
    folder.mkdir(parents=True)
    save_weights(folder / "weights.safetensors", states_of(nets), "ugatit", arch, step=step)
    torch.save({}, folder / "state.pt")
    return folder / "weights.safetensors"


def generate(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        image, _, heatmap = net(x)
    return image, heatmap


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    """Light nets, and a run folder whose newest complete checkpoint holds them."""
    run = tmp_path_factory.mktemp("run")
    save_run(run, 10, tiny_nets(LIGHT, 1), LIGHT)
    nets = tiny_nets(LIGHT, 2)
    weights = save_run(run, 20, nets, LIGHT)
    (run / "checkpoints" / "0000030").mkdir()  # incomplete: no files, must be ignored
    return nets, run, weights


def rand_batch(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def write_video(path: Path, frames: int, width: int, height: int, rate: int, fmt: str, codec: str) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, width=width, height=height,
                                      pix_fmt="rgb8" if codec == "gif" else "yuv420p")
        for i in range(frames):
            pixels = np.full((height, width, 3), 40 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


def read_video(path: Path) -> tuple[int, Fraction, tuple[int, int]]:
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return len(frames), stream.average_rate, (frames[0].width, frames[0].height)


# ----------------------------------------------------------------------------- Python API


def test_run_folder_uses_newest_complete_checkpoint_and_matches_generator(light):
    nets, run, weights = light
    translator = load_translator(run)
    assert translator.source == weights  # step 20's, not the empty 0000030
    x = rand_batch(3)
    images, heatmaps = translator.translate_tensor(x)
    ref_image, ref_heatmap = generate(nets["genA2B"], x)
    torch.testing.assert_close(images, ref_image, rtol=0, atol=1e-6)
    torch.testing.assert_close(heatmaps, ref_heatmap, rtol=0, atol=1e-5)
    assert images.shape == (3, 3, SIZE, SIZE) and heatmaps.shape == (3, 1, SIZE // 4, SIZE // 4)


def test_every_input_kind_gives_the_generator_output(light):
    nets, _, weights = light
    translator = load_translator(weights, direction="A2B", device="cpu")
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    x = ResizeTransform(SIZE)(picture)[None]
    ref_image, ref_heatmap = generate(nets["genA2B"], x)
    expected = to_uint8_image(ref_image[0])

    from_pil = translator(picture)
    from_array = translator(np.asarray(picture))
    from_list = translator([picture, np.asarray(picture), x[0]], batch_size=2)
    for output, count in ((from_pil, 1), (from_array, 1), (from_list, 3)):
        assert isinstance(output, TranslationOutput) and len(output) == count
        assert [t.source for t in output] == list(range(count)) and [t.style for t in output] == [0] * count
        assert output.images == [t.image for t in output]
    for result in (from_pil[0], from_array[0], *from_list):
        assert result.image.size == (SIZE, SIZE) and result.image.mode == "RGB"
        assert np.abs(np.asarray(result.image).astype(int) - expected).max() <= 1
        assert result.heatmap.dtype == np.float32 and result.heatmap.shape == (SIZE // 4, SIZE // 4)
        np.testing.assert_allclose(result.heatmap, ref_heatmap[0, 0].numpy(), atol=1e-5)
        assert result.heatmap_image().size == result.overlay().size == (SIZE, SIZE)


def test_b2a_runs_genB2A(light):
    nets, _, weights = light
    x = rand_batch(2)
    images, _ = load_translator(weights, direction="B2A").translate_tensor(x)
    torch.testing.assert_close(images, generate(nets["genB2A"], x)[0], rtol=0, atol=1e-6)
    assert not torch.allclose(images, generate(nets["genA2B"], x)[0])


def test_official_checkpoints_match_our_weights(tmp_path):
    for arch in (LIGHT, FULL):
        nets = tiny_nets(arch, 3)
        torch.save(states_of(nets), tmp_path / "official.pt")
        save_weights(tmp_path / "ours.safetensors", states_of(nets), "ugatit", arch)
        ours = load_translator(tmp_path / "ours.safetensors")
        # A light official file does not record its size; a full one does (its MLP width).
        official = load_translator(tmp_path / "official.pt", img_size=SIZE if arch.light else None)
        assert official.arch.light == arch.light and official.img_size == SIZE
        x = rand_batch(2)
        torch.testing.assert_close(official.translate_tensor(x), ours.translate_tensor(x), rtol=0, atol=0)


def test_light_model_runs_at_another_size_full_model_does_not(light, tmp_path):
    _, _, weights = light
    translator = load_translator(weights, img_size=48)
    assert translator(Image.new("RGB", (20, 20)))[0].image.size == (48, 48)
    save_weights(tmp_path / "full.safetensors", states_of(tiny_nets(FULL, 4)), "ugatit", FULL)
    with pytest.raises(UserError, match="full model"):
        load_translator(tmp_path / "full.safetensors", img_size=48)


def test_fit_policies_and_keep_size(light):
    _, _, weights = light
    translator = load_translator(weights)
    wide = Image.new("RGB", (50, 30), "orange")
    sizes = {(fit, keep): translator(wide, fit=fit, keep_size=keep)[0]
             for fit in ("stretch", "pad") for keep in (0, 1)}
    assert sizes["stretch", 0].image.size == (SIZE, SIZE)
    assert sizes["pad", 0].image.size == (SIZE, 19)  # 30/50 of 32, padding cropped off
    for result in sizes.values():
        assert result.heatmap_image().size == result.overlay().size == result.image.size
    assert sizes["stretch", 1].image.size == sizes["pad", 1].image.size == (50, 30)


def test_pad_keeps_proportions_and_repeats_edges():
    picture = torch.zeros(3, 20, 40)
    picture[:, :, 20:] = 1.0  # left half black, right half white
    square, placement = place(picture, 32, "pad", keep_size=True)
    assert placement.box == (8, 0, 16, 32)
    assert torch.equal(square[:, :8], square[:, 8:9].expand(-1, 8, -1))  # top padding repeats row 8
    assert square[0, 16, 15] < 0.5 < square[0, 16, 16]  # the black/white edge stays in the middle
    assert placement.restore(square).shape == (3, 20, 40)


def test_loading_errors_are_user_errors(light, tmp_path):
    _, _, weights = light
    with pytest.raises(UserError, match="nowhere.safetensors"):
        load_translator(tmp_path / "nowhere.safetensors")
    with pytest.raises(UserError, match="direction"):
        load_translator(weights, direction="C2D")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a checkpoint"):
        load_translator(tmp_path / "notes.txt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match=r"list\.pt is not a checkpoint.*an official U-GAT-IT \.pt"):
        load_translator(tmp_path / "list.pt")
    with pytest.raises(UserError, match="CUDA"):
        load_translator(weights, device="cpu", half=True)


# ----------------------------------------------------------------------------- CLI


def test_cli_folder_mirrors_names_keeps_sizes_and_skips_bad_files(light, tmp_path, caplog):
    _, run, _ = light
    src, out = tmp_path / "photos", tmp_path / "out"
    sizes = {"a.jpg": (50, 30), "nested/deeper/b.png": (17, 41), "nested/c.webp": (32, 32)}
    for name, size in sizes.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, "teal").save(src / name)
    (src / "broken.jpg").write_text("this is not a JPEG")

    code = main(["translate", "--checkpoint", str(run), "--input", str(src), "--out", str(out),
                 "--keep-size", "--heatmap", "--batch-size", "2"])
    assert code == 0
    assert "skipping" in caplog.text and "broken.jpg" in caplog.text
    for name, size in sizes.items():
        stem = Path(name).with_suffix("").as_posix()
        assert Image.open(out / f"{stem}.png").size == size
        assert Image.open(out / f"{stem}_heatmap.png").size == size
    assert not (out / "broken.png").exists()


def test_cli_glob_and_file_inputs(light, tmp_path):
    _, _, weights = light
    for name in ("x1.png", "x2.png", "y.png"):
        Image.new("RGB", (40, 24)).save(tmp_path / name)
    code = main(["translate", "--checkpoint", str(weights), "--input", str(tmp_path / "x*.png"),
                 str(tmp_path / "y.png"), "--out", str(tmp_path / "out"), "--fit", "pad"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x1.png", "x2.png", "y.png"]
    assert Image.open(tmp_path / "out" / "y.png").size == (SIZE, 19)


def test_cli_exits_2_with_one_line_when_nothing_translates(light, tmp_path, capsys):
    _, run, _ = light
    (tmp_path / "fake.jpg").write_text("text")
    cases = {
        "nothing translated": ["--checkpoint", str(run), "--input", str(tmp_path / "fake.jpg"),
                               str(tmp_path / "missing.png")],
        "no_run": ["--checkpoint", str(tmp_path / "no_run"), "--input", str(tmp_path / "fake.jpg")],
        "C2D": ["--checkpoint", str(run), "--input", str(tmp_path / "fake.jpg"), "--direction", "C2D"],
    }
    for expected, args in cases.items():
        assert main(["translate", *args, "--out", str(tmp_path / "out")]) == 2
        last_line = capsys.readouterr().err.splitlines()[-1]  # skip notices may come first
        assert last_line.startswith("unpaired: error:") and expected in last_line, last_line
    assert not (tmp_path / "out").exists()


def test_cli_video_keeps_frame_count_and_rate(light, tmp_path, caplog):
    _, _, weights = light
    caplog.set_level(logging.INFO, logger="unpaired")
    write_video(tmp_path / "clip.mp4", 6, 64, 48, 12, "mp4", "libx264")
    write_video(tmp_path / "anim.gif", 5, 40, 30, 10, "gif", "gif")
    (tmp_path / "empty.mov").write_bytes(b"")
    code = main(["translate", "--checkpoint", str(weights), "--input", str(tmp_path / "clip.mp4"),
                 str(tmp_path / "anim.gif"), str(tmp_path / "empty.mov"), "--out", str(tmp_path / "out"),
                 "--keep-size", "--batch-size", "4"])
    assert code == 0
    assert read_video(tmp_path / "out" / "clip.mp4") == (6, 12, (64, 48))
    frames, rate, size = read_video(tmp_path / "out" / "anim.gif")
    assert (frames, size) == (5, (40, 30)) and rate == read_video(tmp_path / "anim.gif")[1]
    assert "skipping" in caplog.text and "empty.mov" in caplog.text
    assert not (tmp_path / "out" / "empty.mp4").exists()
