"""CRC-32C (Castagnoli), the checksum TensorFlow stores for checkpoint tables and tensors.

The standard library only has zlib's CRC-32 (another polynomial), and a byte-at-a-time Python
loop runs at ~15 MB/s, far too slow for a released checkpoint's 2 GB of generator weights.
This one runs at a few hundred MB/s with numpy alone: the data is cut into many equal lanes,
all lanes advance together four bytes per step (slicing-by-4 tables), and the lanes' CRCs are
then merged. Merging uses that a CRC without its pre/post inversion is linear over GF(2):
``raw(a || b) = shift(raw(a), len(b)) ^ raw(b)``, where ``shift`` (appending zero bytes) is a
linear map on 32-bit states, applied through four 256-entry tables (one per state byte).
Lane lengths are powers of two so that those tables are few and cached.
"""

from __future__ import annotations

import functools

import numpy as np

POLYNOMIAL = 0x82F63B78  # reversed Castagnoli polynomial
MASK_DELTA = 0xA282EAD8  # TensorFlow/LevelDB crc32c::Mask
MAX_LANES = 1 << 16
MIN_LANE_BYTES = 256  # shorter lanes cost more in merging than they save
SMALL = 4096  # below this many bytes the plain byte loop is quickest
LOG2_MAX_CHUNK = 26  # 64 MB per lane pass: bounds the transposed copy of a 1 GB tensor


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(POLYNOMIAL), table >> 1).astype(np.uint32)
    return table


_T0 = _byte_table()
_T1 = (_T0[_T0 & 0xFF] ^ (_T0 >> 8)).astype(np.uint32)
_T2 = (_T0[_T1 & 0xFF] ^ (_T1 >> 8)).astype(np.uint32)
_T3 = (_T0[_T2 & 0xFF] ^ (_T2 >> 8)).astype(np.uint32)
_TABLE = _T0.tolist()


def _raw_bytes(state: int, data: memoryview) -> int:
    """Advance a raw (uninverted) CRC state over ``data`` one byte at a time (short inputs)."""
    for byte in data:
        state = _TABLE[(state ^ byte) & 0xFF] ^ (state >> 8)
    return state


def _apply(tables: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A linear map on uint32 states, given as the images of each byte position's 256 values."""
    return (tables[0][values & 0xFF] ^ tables[1][(values >> 8) & 0xFF]
            ^ tables[2][(values >> 16) & 0xFF] ^ tables[3][values >> 24])


@functools.cache
def _shift_tables(log2_bytes: int) -> np.ndarray:
    """Tables of the map "append 2**log2_bytes zero bytes" to a raw CRC state."""
    byte = np.arange(256, dtype=np.uint32)
    if log2_bytes == 0:  # one zero byte: state -> T0[state & 0xFF] ^ (state >> 8)
        return np.stack([_T0, byte, byte << 8, byte << 16])
    half = _shift_tables(log2_bytes - 1)
    return np.stack([_apply(half, _apply(half, byte << (8 * i))) for i in range(4)])


def _raw_lanes(data: memoryview, lanes: int) -> int:
    """Raw CRC (from state 0) of ``data``, cut into ``lanes`` equal power-of-two lanes."""
    lane_bytes = len(data) // lanes
    block = np.frombuffer(data, dtype="<u4").reshape(lanes, lane_bytes // 4)
    state = np.zeros(lanes, dtype=np.uint32)
    for word in np.ascontiguousarray(block.T):  # step j reads word j of every lane contiguously
        state ^= word
        state = _T3[state & 0xFF] ^ _T2[(state >> 8) & 0xFF] ^ _T1[(state >> 16) & 0xFF] ^ _T0[state >> 24]
    log2_span = lane_bytes.bit_length() - 1
    while len(state) > 1:  # merge neighbouring lanes: shift the left one past the right one
        state = _apply(_shift_tables(log2_span), state[0::2]) ^ state[1::2]
        log2_span += 1
    return int(state[0])


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """The CRC-32C of ``data`` (initial value and final xor 0xFFFFFFFF, as everyone uses it).

    Power-of-two chunks (at most 64 MB) go through the lanes, the short rest through the byte loop.
    """
    data = memoryview(data).cast("B")
    state, pos = 0xFFFFFFFF, 0
    while len(data) - pos >= SMALL:
        log2_chunk = min((len(data) - pos).bit_length() - 1, LOG2_MAX_CHUNK)
        chunk = 1 << log2_chunk
        lanes = min(MAX_LANES, chunk // MIN_LANE_BYTES)
        raw = _raw_lanes(data[pos:pos + chunk], lanes)
        state = int(_apply(_shift_tables(log2_chunk), np.array([state], dtype=np.uint32))[0]) ^ raw
        pos += chunk
    return _raw_bytes(state, data[pos:]) ^ 0xFFFFFFFF


def masked(crc: int) -> int:
    """TensorFlow's stored form of a CRC (``crc32c::Mask``: rotate right by 15, add a constant)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF
