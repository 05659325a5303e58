"""Tests for the OpenCV-free reproduction of the official U-GAT-IT sample grids."""

import colorsys
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from unpaired import viz


def _hot_pixel_map(h: int, w: int, y: int, x: int) -> torch.Tensor:
    """A ``[1,h,w]`` map that is zero except for one hot pixel."""
    m = torch.zeros(1, h, w)
    m[0, y, x] = 1.0
    return m


def _constant_image(rgb: tuple[float, float, float], size: int) -> torch.Tensor:
    """A ``[3,size,size]`` image in [-1,1] filled with one colour."""
    return torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).expand(3, size, size).clone()


# --- JET lookup table -------------------------------------------------------------------------


def test_jet_endpoints_and_midpoint():
    lut = viz.jet_colormap()
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[0]) == (0, 0, 128)  # dark blue
    assert tuple(lut[255]) == (128, 0, 0)  # dark red
    r, g, b = (int(v) for v in lut[128])
    assert g == 255 and abs(r - b) <= 4  # the green centre between cyan and yellow


def test_jet_hue_runs_monotonically_from_blue_to_red():
    hues = [colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))[0] * 360.0 for rgb in viz.jet_colormap()]
    assert hues[0] == pytest.approx(240.0) and hues[-1] == pytest.approx(0.0)
    assert all(b <= a + 1e-9 for a, b in zip(hues, hues[1:]))


def test_jet_is_cached_and_read_only():
    lut = viz.jet_colormap()
    assert viz.jet_colormap() is lut
    with pytest.raises(ValueError):
        lut[0, 0] = 1


# --- heatmap normalisation and colouring ------------------------------------------------------


def test_normalize_truncates_instead_of_rounding():
    h = torch.tensor([[0.0, 0.999, 1.0]])
    assert viz.normalize_heatmap(h).tolist() == [[0, 254, 255]]


def test_normalize_subtracts_min_before_dividing_by_max():
    h = torch.tensor([[[-2.0, 0.0, 2.0]]])
    assert viz.normalize_heatmap(h).tolist() == [[0, 127, 255]]


def test_colorize_single_hot_pixel_is_red_there_and_blue_elsewhere():
    lut = viz.jet_colormap()
    tile = viz.colorize_heatmap(_hot_pixel_map(8, 8, 2, 5), 32)
    assert tile.shape == (32, 32, 3) and tile.dtype == np.uint8
    # Pixel (2,5) of an 8x8 map covers output rows 8..11 and cols 20..23 after a x4 resize;
    # with half-pixel centres the peak lands on its central 2x2 block.
    y, x = np.unravel_index(np.argmax(tile[..., 0]), tile.shape[:2])
    assert 9 <= y <= 10 and 21 <= x <= 22
    assert tile[y, x, 0] == 255 and tile[y, x, 2] == 0
    # Bilinear support of that pixel ends at rows 6..13 and cols 18..25; all else is LUT[0].
    outside = np.ones((32, 32), dtype=bool)
    outside[6:14, 18:26] = False
    assert (tile[outside] == lut[0]).all()


def test_colorize_upscale_matches_half_pixel_bilinear():
    # A 2x1 ramp [0, 255] resized to width 4 with half-pixel centres gives 0, 64, 191, 255.
    tile = viz.colorize_heatmap(torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]), (2, 4))
    assert (tile[0] == viz.jet_colormap()[[0, 64, 191, 255]]).all()


def test_colorize_constant_map_is_lut0_without_nan_or_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tile = viz.colorize_heatmap(torch.full((1, 4, 4), 3.5), 16)
    assert (tile == viz.jet_colormap()[0]).all()


def test_colorize_accepts_2d_and_half_precision():
    m = _hot_pixel_map(4, 4, 1, 1)
    expected = viz.colorize_heatmap(m, 16)
    assert (viz.colorize_heatmap(m[0], 16) == expected).all()
    assert (viz.colorize_heatmap(m.to(torch.bfloat16), 16) == expected).all()
    assert (viz.colorize_heatmap(m.half(), 16) == expected).all()


def test_colorize_rejects_bad_shape():
    with pytest.raises(ValueError, match="heatmap"):
        viz.colorize_heatmap(torch.zeros(2, 4, 4), 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiles_accept_cuda_tensors():
    m = _hot_pixel_map(4, 4, 1, 1)
    img = torch.linspace(-1, 1, 48).view(3, 4, 4)
    assert (viz.colorize_heatmap(m.cuda(), 16) == viz.colorize_heatmap(m, 16)).all()
    assert (viz.to_uint8_image(img.cuda().half()) == viz.to_uint8_image(img.half())).all()


# --- image tiles ------------------------------------------------------------------------------


def test_to_uint8_image_maps_range_and_layout():
    t = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1).expand(3, 2, 5)
    out = viz.to_uint8_image(t)
    assert out.shape == (2, 5, 3) and out.dtype == np.uint8
    assert (out == np.array([0, 128, 255], dtype=np.uint8)).all()


def test_to_uint8_image_clamps_and_handles_bf16_and_nan():
    t = torch.tensor([-3.0, 3.0, float("nan")]).view(3, 1, 1)
    assert viz.to_uint8_image(t)[0, 0].tolist() == [0, 255, 128]
    assert viz.to_uint8_image(t.to(torch.bfloat16))[0, 0].tolist() == [0, 255, 128]


def test_to_uint8_image_rejects_batched_input():
    with pytest.raises(ValueError, match=r"\[3,H,W\]"):
        viz.to_uint8_image(torch.zeros(1, 3, 4, 4))


# --- column, grid and row ---------------------------------------------------------------------


def test_sample_column_shape_and_official_tile_order():
    s = 8
    real, ident, fake, cycle = (
        _constant_image(c, s) for c in [(1, -1, -1), (-1, 1, -1), (-1, -1, 1), (1, 1, -1)]
    )
    # Distinct hot spots make every heatmap tile distinguishable from the others.
    ident_hm, fake_hm, cycle_hm = (_hot_pixel_map(2, 2, y, x) for y, x in [(0, 0), (0, 1), (1, 1)])
    col = viz.sample_column(real, ident, ident_hm, fake, fake_hm, cycle, cycle_hm)
    assert col.shape == (7 * s, s, 3) and col.dtype == np.uint8
    tiles = [col[k * s : (k + 1) * s] for k in range(7)]
    for k, rgb in [(0, (255, 0, 0)), (2, (0, 255, 0)), (4, (0, 0, 255)), (6, (255, 255, 0))]:
        assert (tiles[k] == np.array(rgb, dtype=np.uint8)).all(), f"image tile {k}"
    for k, hm in [(1, ident_hm), (3, fake_hm), (5, cycle_hm)]:
        assert (tiles[k] == viz.colorize_heatmap(hm, s)).all(), f"heatmap tile {k}"


def test_make_grid_places_columns_left_to_right():
    a = np.zeros((6, 2, 3), dtype=np.uint8)
    b = np.full((6, 3, 3), 200, dtype=np.uint8)
    grid = viz.make_grid([a, b])
    assert grid.shape == (6, 5, 3)
    assert (grid[:, :2] == 0).all() and (grid[:, 2:] == 200).all()


def test_make_grid_builds_a_row_of_tiles():
    tiles = [np.full((4, 4, 3), v, dtype=np.uint8) for v in (10, 20, 30)]
    row = viz.make_grid(tiles)
    assert row.shape == (4, 12, 3)
    assert [int(row[0, 4 * k, 0]) for k in range(3)] == [10, 20, 30]


@pytest.mark.parametrize(
    "arrays",
    [[], [np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)], [np.zeros((4, 4, 3))]],
    ids=["empty", "heights-differ", "not-uint8"],
)
def test_concatenation_rejects_misaligned_input(arrays):
    with pytest.raises(ValueError):
        viz.make_grid(arrays)


# --- overlay ----------------------------------------------------------------------------------


def test_overlay_blends_heatmap_over_image():
    img = np.full((8, 6, 3), 100, dtype=np.uint8)
    hm = _hot_pixel_map(2, 2, 0, 1)
    colour = viz.colorize_heatmap(hm, (8, 6))
    assert (viz.overlay_heatmap(img, hm, alpha=0.0) == img).all()
    assert (viz.overlay_heatmap(img, hm, alpha=1.0) == colour).all()
    half = viz.overlay_heatmap(img, hm).astype(int)
    assert half.shape == (8, 6, 3)
    assert np.abs(half - (img.astype(int) + colour.astype(int)) / 2).max() <= 0.5


def test_overlay_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay_heatmap(np.zeros((4, 4, 3), np.uint8), torch.zeros(1, 1, 1), alpha=1.5)


# --- saving -----------------------------------------------------------------------------------


def test_save_png_roundtrips_and_leaves_no_temp_files(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, size=(14, 9, 3), dtype=np.uint8)
    target = tmp_path / "deep" / "dir" / "A2B_0001.png"
    assert viz.save_png(arr, target) == target
    assert os.listdir(target.parent) == ["A2B_0001.png"]
    with Image.open(target) as im:
        assert im.mode == "RGB" and (np.asarray(im) == arr).all()


def test_save_png_failure_keeps_previous_file_and_cleans_up(tmp_path):
    target = tmp_path / "grid.png"
    good = np.full((4, 4, 3), 7, dtype=np.uint8)
    viz.save_png(good, target)
    with pytest.raises((TypeError, ValueError)):
        viz.save_png(np.zeros((4, 4, 5), dtype=np.float64), target)
    assert os.listdir(tmp_path) == ["grid.png"]
    with Image.open(target) as im:
        assert (np.asarray(im) == good).all()
