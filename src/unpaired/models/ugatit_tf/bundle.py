"""Reader of TensorFlow checkpoints (the tensor-bundle format of ``tf.train.Saver``), without TensorFlow.

A checkpoint is a prefix ``P`` with two kinds of files:

* ``P.index``: a LevelDB-style table (sorted string keys → values). Each block holds
  prefix-compressed entries followed by restart offsets and is followed by a 5-byte trailer
  (compression type, masked CRC-32C); the file ends with a 48-byte footer holding the handles
  (varint offset and size) of the metaindex and index blocks and a magic number. The index
  block maps the last key of each data block to that block's handle. The value under the empty
  key is a ``BundleHeaderProto`` (shard count, endianness); every other key is a tensor name
  whose value is a ``BundleEntryProto`` (dtype, shape, shard, offset, size, CRC-32C).
* ``P.data-SSSSS-of-NNNNN``: the raw tensor bytes, in the header's byte order, at those offsets.

A folder names its newest checkpoint in a text file ``checkpoint``
(``model_checkpoint_path: "P"``). Protobufs are decoded by hand (the wire format is five
rules); nothing in the files is executed or unpickled. Tensors are read one at a time, on
request, so skipping the Adam slots of an 8 GB training checkpoint costs nothing, and each is
checked against its stored CRC (TensorFlow stores it masked, as for table blocks).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import UserError
from .crc32c import crc32c, masked

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked CRC-32C
NO_COMPRESSION = 0
STATE_FILE = "checkpoint"

# TensorFlow DataType enum values of the plain types variables use.
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
          9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}


@dataclass(frozen=True)
class Entry:
    """Where one tensor lives (a decoded ``BundleEntryProto``)."""

    dtype: int  # TensorFlow DataType enum value
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int  # masked CRC-32C of the tensor's bytes
    sliced: bool  # a partitioned variable, stored as slices under other keys


# ----------------------------------------------------------------------------- protobuf wire format


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field of a serialised message, unknown ones included.

    Varints come back as unsigned ints, length-delimited fields as bytes, fixed32/fixed64 as ints.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise ValueError("truncated fixed-width field")
            value = int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def _signed(value: int) -> int:
    """An int64 field's value (negative numbers are sent as 64-bit two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(buf: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated Dim dim = 2 (Dim: int64 size = 1)."""
    dims = []
    for number, value in _fields(buf):
        if number == 2:
            size = 0
            for sub, sub_value in _fields(value):
                if sub == 1:
                    size = _signed(sub_value)
            dims.append(size)
    return tuple(dims)


def _entry(buf: bytes) -> Entry:
    """BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6 (fixed32), slices 7."""
    values = {"dtype": 0, "shape": (), "shard": 0, "offset": 0, "size": 0, "crc": 0, "sliced": False}
    for number, value in _fields(buf):
        if number == 1:
            values["dtype"] = value
        elif number == 2:
            values["shape"] = _shape(value)
        elif number == 3:
            values["shard"] = value
        elif number == 4:
            values["offset"] = _signed(value)
        elif number == 5:
            values["size"] = _signed(value)
        elif number == 6:
            values["crc"] = value
        elif number == 7:
            values["sliced"] = True
    return Entry(**values)


def _header(buf: bytes) -> tuple[int, bool]:
    """BundleHeaderProto: num_shards 1, endianness 2 (0 little, 1 big). Returns (shards, big_endian)."""
    shards, big = 1, False
    for number, value in _fields(buf):
        if number == 1:
            shards = value
        elif number == 2:
            big = value == 1
    return shards, big


# ----------------------------------------------------------------------------- table format


def _block_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (offset, size), pos


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of one table block: each entry stores how many bytes it shares with
    the previous key, the rest of its key, and its value; the block ends with the restart array."""
    if len(block) < 4:
        raise ValueError("block shorter than its restart count")
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 * (restarts + 1)
    if end < 0:
        raise ValueError("restart array larger than the block")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise ValueError("entry runs past the end of its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + length]
        pos += length


class _Table:
    """All (key, value) pairs of a small in-memory table file (an ``.index`` is kilobytes)."""

    def __init__(self, data: bytes):
        self.data = data
        if len(data) < FOOTER_SIZE:
            raise ValueError(f"{len(data)} bytes, shorter than the {FOOTER_SIZE}-byte footer")
        footer = data[-FOOTER_SIZE:]
        if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
            raise ValueError("no table magic number at its end (not a checkpoint index, or cut short)")
        _metaindex, pos = _block_handle(footer, 0)
        self.index_handle, _ = _block_handle(footer, pos)

    def block(self, handle: tuple[int, int]) -> bytes:
        offset, size = handle
        end = offset + size + BLOCK_TRAILER_SIZE
        if end > len(self.data) - FOOTER_SIZE:
            raise ValueError(f"block at offset {offset} runs past the end of the file")
        contents, kind = self.data[offset:offset + size], self.data[offset + size]
        stored = int.from_bytes(self.data[offset + size + 1:end], "little")
        if masked(crc32c(self.data[offset:offset + size + 1])) != stored:
            raise ValueError(f"block at offset {offset} fails its checksum")
        if kind != NO_COMPRESSION:
            raise ValueError(f"block at offset {offset} is compressed (type {kind}), which TensorFlow "
                             "checkpoints never are")
        return contents

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for _last_key, handle_bytes in _block_entries(self.block(self.index_handle)):
            handle, _ = _block_handle(handle_bytes, 0)
            yield from _block_entries(self.block(handle))


# ----------------------------------------------------------------------------- checkpoint


def _state_file_prefix(folder: Path) -> Path | None:
    """The newest prefix named by ``folder/checkpoint`` (relative to the folder, or absolute;
    an absolute path from another machine falls back to its file name inside the folder)."""
    state = folder / STATE_FILE
    if not state.is_file():
        return None
    match = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', state.read_text(errors="replace"), re.M)
    if not match:
        raise UserError(f"{state} names no model_checkpoint_path")
    # text-format strings escape like C: \" \\ and octal bytes of UTF-8
    name = match.group(1).encode("latin-1", "backslashreplace").decode("unicode_escape")
    name = name.encode("latin-1").decode("utf-8", "replace")
    for prefix in (folder / name, folder / Path(name).name):
        if Path(f"{prefix}.index").is_file():
            return prefix
    raise UserError(f"{state} names checkpoint {name!r}, but {folder / Path(name).name}.index does not exist")


def looks_like_checkpoint(path: Path) -> bool:
    """Whether ``path`` could be a TF checkpoint (a folder with a state file or an ``*.index``, a
    prefix, or an ``.index`` file), without reading it."""
    path = Path(path)
    if path.is_dir():
        return (path / STATE_FILE).is_file() or any(path.glob("*.index"))
    return path.suffix == ".index" and path.is_file() or Path(f"{path}.index").is_file()


def resolve_prefix(path: Path | str) -> Path:
    """The checkpoint prefix for a folder (its ``checkpoint`` file, else its only ``*.index``),
    a prefix, or a prefix's ``.index`` file."""
    path = Path(path)
    if path.is_dir():
        prefix = _state_file_prefix(path)
        if prefix is not None:
            return prefix
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            found = "no *.index file" if not indexes else f"{len(indexes)} *.index files"
            raise UserError(f"{path} holds no TensorFlow 'checkpoint' state file and {found}: pass a checkpoint prefix")
        return indexes[0].with_suffix("")
    if path.suffix == ".index":
        path = path.with_suffix("")
    if not Path(f"{path}.index").is_file():
        raise UserError(f"no TensorFlow checkpoint at {path} (expected {path}.index or a folder)")
    return path


class TFCheckpoint:
    """The tensors of one TensorFlow checkpoint, read lazily by name.

    ``TFCheckpoint(path)`` takes a folder, a prefix or an ``.index`` file and parses only the
    index; ``shapes()`` lists every tensor, ``read(name)`` loads one from its data shard.
    Every problem with the files is a one-line ``UserError`` naming the file.
    """

    def __init__(self, path: Path | str):
        self.prefix = resolve_prefix(path)
        self.index_path = Path(f"{self.prefix}.index")
        self.entries: dict[str, Entry] = {}
        header = None
        try:
            for key, value in _Table(self.index_path.read_bytes()).items():
                if key == b"":
                    header = _header(value)
                else:
                    self.entries[key.decode("utf-8")] = _entry(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"{self.index_path} is not a readable TensorFlow checkpoint index: {exc}") from None
        if header is None:
            raise UserError(f"{self.index_path} has no bundle header (not a tf.train.Saver V2 checkpoint)")
        self.num_shards, self.big_endian = header

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: entry.shape for name, entry in self.entries.items()}

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """Tensor ``name`` as a writable numpy array; ``verify`` checks its stored CRC-32C."""
        if name not in self.entries:
            raise UserError(f"{self.index_path} holds no tensor {name!r}")
        entry = self.entries[name]
        if entry.sliced:
            raise UserError(f"{self.index_path}: {name} is a partitioned variable (stored in slices), not supported")
        if entry.dtype not in DTYPES:
            raise UserError(f"{self.index_path}: {name} has TensorFlow dtype {entry.dtype}, which is not a plain "
                            f"numeric type this reader supports")
        dtype = np.dtype(DTYPES[entry.dtype]).newbyteorder(">" if self.big_endian else "<")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if any(d < 0 for d in entry.shape) or count * dtype.itemsize != entry.size:
            raise UserError(f"{self.index_path}: {name} has shape {list(entry.shape)} of {dtype.name} "
                            f"but {entry.size} bytes (damaged index)")
        data = self._read_bytes(name, entry)
        if verify and masked(crc32c(data)) != entry.crc:
            raise UserError(f"{self.shard_path(entry.shard)} is damaged: tensor {name} fails its CRC-32C check")
        array = np.frombuffer(data, dtype=dtype).reshape(entry.shape)  # writable: it views our bytearray
        return array if dtype.isnative else array.astype(dtype.newbyteorder("="))

    def _read_bytes(self, name: str, entry: Entry) -> bytearray:
        path = self.shard_path(entry.shard)
        if not 0 <= entry.shard < self.num_shards:
            raise UserError(f"{self.index_path}: {name} is in shard {entry.shard} of {self.num_shards}")
        if not path.is_file():
            raise UserError(f"missing checkpoint data file {path}")
        data = bytearray(entry.size)
        with open(path, "rb") as fh:
            fh.seek(entry.offset)
            got = fh.readinto(data)
        if got != entry.size:
            end = entry.offset + entry.size
            raise UserError(f"{path} is truncated: tensor {name} needs bytes {entry.offset}..{end} "
                            f"but the file has {path.stat().st_size}")
        return data

