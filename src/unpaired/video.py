"""Videos and animated GIFs, translated frame by frame (PyAV, the optional ``video`` extra).

The output keeps the input's frame count and frame rate. Videos become H.264 MP4 (libx264, or
FFmpeg's MPEG-4 part 2 encoder where the FFmpeg build lacks it); animated GIFs stay GIFs, written
by Pillow (identical consecutive frames merge into one longer frame, so the timing holds).
Audio is dropped: the result is picture only. Variable frame rates become the average rate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from .data.images import DECODE_ERRORS
from .errors import UserError, import_optional
from .files import atomic_path
from .inference.translator import Translator

VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"})
FALLBACK_RATE = Fraction(25)  # for the rare stream that states no rate at all

FrameSink = Callable[[Image.Image], None]


@dataclass(frozen=True)
class VideoResult:
    frames: int
    rate: Fraction
    dropped_audio: bool


def is_video(path: Path) -> bool:
    """Video files by extension; a GIF counts only when it is animated (else it is an image)."""
    suffix = path.suffix.lower()
    if suffix != ".gif":
        return suffix in VIDEO_EXTENSIONS
    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1) > 1
    except DECODE_ERRORS:
        return False  # reported when it is read as an image


def output_suffix(path: Path) -> str:
    return ".gif" if path.suffix.lower() == ".gif" else ".mp4"


def _require_av() -> Any:
    return import_optional("av", "video", "translating videos")


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _mp4_codec(av: Any) -> str:
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except av.error.FFmpegError:
        return "mpeg4"


class _Mp4Encoder:
    """Frames → H.264 in YUV 4:2:0, which needs even sides: an odd last row/column is cropped.

    The stream is added at the first frame, whose size fixes the video's.
    """

    def __init__(self, av: Any, container: Any, rate: Fraction):
        self.av, self.container, self.rate = av, container, rate
        self.stream: Any = None

    def write(self, image: Image.Image) -> None:
        image = image.crop((0, 0, image.width // 2 * 2, image.height // 2 * 2))
        if self.stream is None:
            self.stream = self.container.add_stream(_mp4_codec(self.av), rate=self.rate, width=image.width,
                                                    height=image.height, pix_fmt="yuv420p")
        self.container.mux(self.stream.encode(self.av.VideoFrame.from_image(image)))

    def flush(self) -> None:
        if self.stream is not None:
            self.container.mux(self.stream.encode())


@contextlib.contextmanager
def _mp4_writer(av: Any, path: Path, rate: Fraction) -> Iterator[FrameSink]:
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        encoder = _Mp4Encoder(av, container, rate)
        yield encoder.write
        encoder.flush()


@contextlib.contextmanager
def _gif_writer(path: Path, rate: Fraction) -> Iterator[FrameSink]:
    """Frames → animated GIF via Pillow, which picks a 256-colour palette per frame.

    (FFmpeg's GIF encoder only takes a fixed 3-3-2 bit palette, visibly banded.) The frames are
    held in memory until the end, which is fine at GIF sizes.
    """
    frames: list[Image.Image] = []
    yield frames.append
    if frames:
        with atomic_path(path) as tmp:
            frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                           duration=round(1000 / rate), loop=0)


def _writer(av: Any, path: Path, rate: Fraction) -> contextlib.AbstractContextManager[FrameSink]:
    return _gif_writer(path, rate) if path.suffix.lower() == ".gif" else _mp4_writer(av, path, rate)


def translate_video(translator: Translator, source: Path, target: Path, *, heatmap_target: Path | None = None,
                    batch_size: int = 8, fit: str = "stretch", keep_size: bool = False) -> VideoResult:
    """Translate every frame of ``source`` into ``target`` (and the attention overlay into
    ``heatmap_target``), written atomically: a failure leaves no partial file behind.

    A ``UserError`` says what is wrong with the video without naming it (callers add the name).
    """
    av = _require_av()
    try:
        with av.open(str(source)) as container:
            if not container.streams.video:
                raise UserError("no video stream in the file")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or FALLBACK_RATE
            frames = (frame.to_image() for frame in container.decode(stream))
            count = _translate_frames(av, translator, frames, rate, target, heatmap_target,
                                      batch_size, fit, keep_size, total=stream.frames or None)
            dropped_audio = bool(container.streams.audio)
    except av.error.FFmpegError as exc:
        raise UserError(f"not a decodable video ({exc.strerror or exc})") from None
    return VideoResult(count, Fraction(rate), dropped_audio)


def _translate_frames(av: Any, translator: Translator, frames: Iterable[Image.Image], rate: Fraction,
                      target: Path, heatmap_target: Path | None, batch_size: int, fit: str,
                      keep_size: bool, total: int | None) -> int:
    count = 0
    with contextlib.ExitStack() as stack:
        write = stack.enter_context(_writer(av, target, rate))
        write_heatmap = stack.enter_context(_writer(av, heatmap_target, rate)) if heatmap_target else None
        progress = stack.enter_context(tqdm(total=total, unit="frame", leave=False, disable=None))
        for batch in _batches(frames, batch_size):
            for result in translator(batch, batch_size=batch_size, fit=fit, keep_size=keep_size):
                write(result.image)
                if write_heatmap:
                    write_heatmap(result.overlay())
            count += len(batch)
            progress.update(len(batch))
        if not count:
            raise UserError("the video has no frames")  # raised inside the writers: nothing is written
    return count
