"""Large greyscale JPEGs at 1/8 scale from their DC coefficients: libjpeg's pixels, sooner.

At 1/8 scale each 8 x 8 block of a JPEG becomes one pixel, its DC coefficient dequantised, / 8,
+ 128 (libjpeg's ``jpeg_idct_1x1``, which Pillow's ``draft`` uses). libjpeg still decodes every
AC coefficient's Huffman code one at a time to skip it, and that is most of the 14 ms a 1.3 MB,
2000 px radiograph takes. Here one lookup on the next 12 bits skips several AC codes at once
(5.5 to 6 ms for that file), and a large scan is decoded in two halves at once (3.5 to 4 ms on
2 cores; see ``_decode_halves``). The pixels are libjpeg's, exactly: tests compare them on
every JPEG in ../shared/cxr and on generated ones.

Only what radiographs usually are is decoded here: baseline (or extended) Huffman coding,
8 bits, one component, one scan, no restart markers, DC codes of at most 12 bits. For anything
else, and for any stream that looks wrong (a bad code, data that runs out), ``decode_eighth``
returns None and the caller decodes with Pillow, so odd files get Pillow's pixels and Pillow's
errors.

The kernel (chestx.kernels.huffman_dc) is compiled by numba and cached on disk, beside it.
Loading it takes about a second (4 s the first time, when it compiles), so ``prepare()`` does
that in a background thread (chestx.lazy_kernel), and the first large JPEG a process reads
calls it. Until it is ready, ``decode_eighth`` returns None and Pillow decodes: nothing waits
for it. (The web app doesn't prepare it at start-up: importing numba there would delay the
first answer by half a second.)
"""

from __future__ import annotations

import functools
import logging
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from chestx.lazy_kernel import LazyKernel

log = logging.getLogger(__name__)

#: Bits looked up at once, for a DC code or a group of AC codes: 4096-entry tables stay in L1
#: cache (a 16-bit DC table, 256 kB, did not: 10 % of the time went to its misses).
WINDOW = 12
#: Scans shorter than this aren't worth it: Pillow is as quick on small files.
MIN_SCAN_BYTES = 64 * 1024
#: Larger scans are decoded in two halves at once (see _decode_halves).
SPLIT_SCAN_BYTES = 256 * 1024
#: How far past the middle the first half goes to find a block where both halves agree:
#: about 100 blocks; they agree within a few.
OVERLAP_BITS = 16 * 1024

_SOF_SUPPORTED = (0xC0, 0xC1)  # baseline, extended sequential (Huffman)
_SKIPPED = set(range(0xE0, 0xF0)) | {0xFE}  # APPn, COM


class _Unsupported(Exception):
    """This file is for Pillow to decode."""


@dataclass(frozen=True)
class _Scan:
    width: int
    height: int
    quant_dc: int  # the DC entry of the component's quantisation table
    dc_table: bytes  # DHT counts (16 bytes) + symbols
    ac_table: bytes
    data_start: int  # offset of the entropy-coded data


def _parse(data: bytes) -> _Scan:
    """Read the markers up to the scan; _Unsupported for anything but the simple case."""
    if data[:2] != b"\xff\xd8":
        raise _Unsupported("not a JPEG")
    quant: dict[int, int] = {}
    tables: dict[tuple[int, int], bytes] = {}
    frame = None
    pos = 2
    while True:
        while data[pos : pos + 2] == b"\xff\xff":
            pos += 1  # fill bytes
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise _Unsupported("no scan")
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(segment) != length - 2:
            raise _Unsupported("truncated segment")
        if marker == 0xDB:
            quant.update(_quant_tables(segment))
        elif marker == 0xC4:
            tables.update(_huffman_tables(segment))
        elif marker in _SOF_SUPPORTED:
            precision, height, width, count = struct.unpack_from(">BHHB", segment)
            if precision != 8 or count != 1 or not height or not width or len(segment) < 9:
                raise _Unsupported("not an 8-bit greyscale frame")
            if segment[7] != 0x11:
                raise _Unsupported("sampling factors")
            frame = (width, height, segment[6], segment[8])  # component id, quant table
        elif marker == 0xDD:
            if len(segment) < 2 or struct.unpack_from(">H", segment)[0]:
                raise _Unsupported("restart markers")
        elif marker == 0xDA:
            return _scan(frame, quant, tables, segment, pos + 2 + length)
        elif marker not in _SKIPPED:
            raise _Unsupported(f"marker {marker:#x}")
        pos += 2 + length


def _scan(frame, quant, tables, segment: bytes, data_start: int) -> _Scan:
    if frame is None or len(segment) != 6 or segment[0] != 1:
        raise _Unsupported("not a single-component scan")
    width, height, component, quant_id = frame
    selector, start, end, approximation = segment[1], segment[3], segment[4], segment[5]
    if selector != component or (start, end, approximation) != (0, 63, 0):
        raise _Unsupported("not a sequential scan")
    try:
        dc = tables[(0, segment[2] >> 4)]
        ac = tables[(1, segment[2] & 15)]
        quant_dc = quant[quant_id]
    except KeyError:
        raise _Unsupported("missing table") from None
    return _Scan(width, height, quant_dc, dc, ac, data_start)


def _quant_tables(segment: bytes) -> dict[int, int]:
    found, i = {}, 0
    while i < len(segment):
        precision, table = segment[i] >> 4, segment[i] & 15
        size = 128 if precision else 64
        if precision > 1 or i + 1 + size > len(segment):
            raise _Unsupported("bad DQT")
        found[table] = struct.unpack_from(">H" if precision else ">B", segment, i + 1)[0]
        i += 1 + size
    return found


def _huffman_tables(segment: bytes) -> dict[tuple[int, int], bytes]:
    found, i = {}, 0
    while i < len(segment):
        kind, table = segment[i] >> 4, segment[i] & 15
        counts = segment[i + 1 : i + 17]
        total = sum(counts)
        if kind > 1 or table > 3 or len(counts) != 16 or i + 17 + total > len(segment):
            raise _Unsupported("bad DHT")
        found[(kind, table)] = segment[i + 1 : i + 17 + total]
        i += 17 + total
    return found


def _codes(table: bytes) -> list[tuple[int, int, int]]:
    """(length, code, symbol) of a DHT table's canonical Huffman codes."""
    counts, symbols = table[:16], table[16:]
    if sum(counts) > 256:
        raise _Unsupported("bad DHT")
    codes, code, k = [], 0, 0
    for length in range(1, 17):
        for _ in range(counts[length - 1]):
            codes.append((length, code, symbols[k]))
            code += 1
            k += 1
        if code >= (1 << length):  # no code may be all ones
            raise _Unsupported("bad DHT")  # libjpeg: "Bogus Huffman table definition"
        code <<= 1
    return codes


@functools.lru_cache(maxsize=32)
def _dc_lookup(table: bytes) -> np.ndarray:
    """WINDOW-bit window -> (code length << 8) | DC difference size; 0 where no code starts.

    Twelve symbols need codes of at most 12 bits (11, plus the all-ones code JPEG forbids);
    a table with longer codes is left to Pillow."""
    lookup = np.zeros(1 << WINDOW, np.uint16)
    for length, code, symbol in _codes(table):
        if symbol > 11:
            raise _Unsupported("DC size over 11 bits")
        if length > WINDOW:
            raise _Unsupported("DC code over 12 bits")
        low = code << (WINDOW - length)
        lookup[low : low + (1 << (WINDOW - length))] = (length << 8) | symbol
    return lookup


def _ac_step(symbol: int, length: int) -> int:
    """(bits to skip << 8) | coefficients advanced (64 for end-of-block) for one AC code."""
    run, size = symbol >> 4, symbol & 15
    advance = 64 if symbol == 0 else (16 if symbol == 0xF0 else run + 1)
    return ((length + size) << 8) | advance


#: Offsets into the slow path's array: per code length, the largest code, the index of its first
#: symbol and its first code; then each symbol's step, in DHT order.
_MAX_CODE, _FIRST_INDEX, _FIRST_CODE, _STEPS = 0, 18, 36, 54


@functools.lru_cache(maxsize=32)
def _ac_lookup(table: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The skip table on WINDOW bits, and the slow path for longer codes.

    Entry bits: 0-4 bits the group takes, 5 end-of-block ends it, 6-13 coefficients it
    advances, 14-21 and 22-26 advance and bits for its first code alone. A group is every
    whole code (with its extra bits) that fits in the window. A code longer than the window
    has advance 255 and no first code, so the kernel's one test sends it to the slow path.
    """
    size = 1 << WINDOW
    first = np.zeros(size, np.int64)
    slow = np.zeros(_STEPS + 256, np.int64)
    slow[_MAX_CODE : _MAX_CODE + 18] = -1
    for index, (length, code, symbol) in enumerate(_codes(table)):
        step = _ac_step(symbol, length)
        if length <= WINDOW:
            low = code << (WINDOW - length)
            first[low : low + (1 << (WINDOW - length))] = step
        if slow[_MAX_CODE + length] < 0:
            slow[_FIRST_INDEX + length], slow[_FIRST_CODE + length] = index, code
        slow[_MAX_CODE + length] = code
        slow[_STEPS + index] = step
    window = np.arange(size, dtype=np.int64)
    valid = first != 0
    first_bits, first_advance = first >> 8, first & 255
    bits = np.where(valid, first_bits, 0)
    advance = np.where(valid & (first_advance != 64), first_advance, 0)
    ended = valid & (first_advance == 64)
    active = valid & ~ended & (bits < WINDOW)
    while active.any():  # append the next whole code to every group that has room for it
        rows = np.flatnonzero(active)
        following = first[(window[rows] << bits[rows]) & (size - 1)]
        fits = (following != 0) & ((following >> 8) <= WINDOW - bits[rows])
        rows, following = rows[fits], following[fits]
        bits[rows] += following >> 8
        is_end = (following & 255) == 64
        ended[rows[is_end]] = True
        going = rows[~is_end]
        advance[going] += following[~is_end] & 255
        active[:] = False
        active[going] = bits[going] < WINDOW
    packed = (first_bits << 22) | (first_advance << 14) | (advance << 6) | (ended << 5) | bits
    packed[~valid] = 255 << 6  # advances past any block: takes the slow path
    return packed.astype(np.int32), slow


#: libjpeg's post-IDCT range limit for 8 bits, indexed by value & 1023: value + 128 clamped to
#: 0-255 for -384..383, wrapping beyond (jdmaster.c, prepare_range_limit_table).
_RANGE_LIMIT = np.concatenate(
    [
        np.arange(128, 256),
        np.full(384, 255),
        np.zeros(384),
        np.arange(0, 128),
    ]
).astype(np.uint8)


@functools.lru_cache(maxsize=32)
def _dc_pixels(quant_dc: int) -> np.ndarray:
    """The 1/8-scale pixel of every 16-bit DC coefficient, indexed by its bits as uint16:
    dequantised, descaled by 8 with rounding, range-limited, as libjpeg does. One lookup per
    pixel instead of six passes over the image."""
    values = np.arange(1 << 16, dtype=np.uint16).view(np.int16).astype(np.int32)
    values *= quant_dc  # at most 2 ** 15 * (2 ** 16 - 1): fits
    values += 4
    values >>= 3
    values &= 1023
    return _RANGE_LIMIT[values]


_NONE = np.zeros(0, np.int64)  # "don't record block starts"


def _build_kernel():
    from chestx.kernels.huffman_dc import dc_values as kernel

    table = bytes([1] + [0] * 15 + [0])  # one 1-bit code
    empty = np.frombuffer(b"", np.uint8)  # read-only, like every real call's
    # Compiles (or loads from numba's cache) the one signature every call uses.
    no_values = np.zeros(0, np.int32)
    kernel(empty, 0, 0, _dc_lookup(table), *_ac_lookup(table), WINDOW, no_values, _NONE, 0)
    return kernel


#: No numba, no writable cache or an unsupported CPU leave it unloaded: Pillow decodes.
_KERNEL = LazyKernel("jpeg-dc", _build_kernel)
prepare = _KERNEL.prepare
ready = _KERNEL.ready
_helpers_lock = threading.Lock()


def decode_eighth(data: bytes, parallel: bool = True) -> np.ndarray | None:
    """The JPEG at 1/8 scale as uint8 (H/8 x W/8, rounded up), equal to libjpeg's; None when
    the file isn't the simple kind, looks wrong, or the kernel isn't loaded yet. Never raises:
    this is only a faster way to Pillow's pixels, and Pillow is there for anything else.
    ``parallel`` lets a large scan decode in two halves at once (see ``_decode_halves``)."""
    kernel = _KERNEL.get()  # the first large JPEG starts loading it; Pillow decodes meanwhile
    if kernel is None:
        return None
    try:
        return _decode(kernel, data, parallel)
    except (_Unsupported, struct.error, IndexError):
        return None
    except Exception:  # a bug here must not cost an upload: Pillow decodes it
        log.exception("the fast JPEG decoder failed; Pillow decodes this file")
        return None


def _decode(kernel, data: bytes, parallel: bool) -> np.ndarray | None:
    scan = _parse(data)
    tables = (_dc_lookup(scan.dc_table), *_ac_lookup(scan.ac_table), WINDOW)
    if len(data) - scan.data_start < MIN_SCAN_BYTES:
        return None
    rows, columns = -(-scan.height // 8), -(-scan.width // 8)
    values = None
    # Two halves at once when asked and a helper is free. Splitting costs 10 to 20 % more CPU
    # (the overlap, the block starts, the hand-over): only worth it on an idle core.
    big = len(data) - scan.data_start >= SPLIT_SCAN_BYTES
    if parallel and big and _free_helpers.acquire(blocking=False):
        try:
            values = _decode_halves(kernel, data, scan.data_start, rows * columns, tables)
        finally:
            _free_helpers.release()
    if values is None:
        values = np.empty(rows * columns, np.int32)
        stream = np.frombuffer(data, np.uint8)
        status, done, _ = kernel(stream, scan.data_start, len(values), *tables, values, _NONE, 0)
        if status != 0:
            return None
    # libjpeg keeps a coefficient in 16 bits: its low 16 bits index the table of pixels.
    return _dc_pixels(scan.quant_dc)[values.astype(np.uint16)].reshape(rows, columns)


def _decode_halves(kernel, data: bytes, start: int, blocks: int, tables) -> np.ndarray | None:
    """Decode the two halves of the scan at once, the second in a helper thread.

    The second half starts at a byte boundary in the middle of some code, with no idea where
    its blocks begin. Huffman codes resynchronise: a few blocks on, it decodes the same codes
    as a decoder that started at the beginning. So the first half decodes on past the middle,
    and where both saw a block start at the same bit, they agree from there on, except for
    the DC predictor, which differs by a constant. Returns None where that doesn't work out
    (no common block, data with markers): the caller decodes in one piece.
    """
    stream = np.frombuffer(data, np.uint8)
    later = _helpers().submit(_decode_later_half, kernel, data, stream, start, blocks, tables)
    values = np.empty(blocks, np.int32)
    starts = np.empty(blocks, np.int64)
    # Past the middle by OVERLAP_BITS at least (stuffed bytes make the middle come sooner).
    stop = 8 * ((len(data) - start) // 2 + 16) + OVERLAP_BITS
    status, done, data_end = kernel(stream, start, blocks, *tables, values, starts, stop)
    offset, later_values, later_starts, later_done, later_end = later.result()
    if status != 0 or data_end != -1:
        return None  # a bad code, or a marker in the first half
    if done == blocks:
        return values
    if not later_done:
        return None
    past_middle = int(np.searchsorted(starts[:done], offset))
    ours = starts[past_middle:done] - offset  # in the helper's bits
    theirs = later_starts[:later_done]
    found = np.minimum(np.searchsorted(theirs, ours), later_done - 1)
    same = np.flatnonzero(theirs[found] == ours)
    if not len(same):
        return None
    first = past_middle + int(same[0])  # this block starts where the helper's block did
    helper_first = int(found[same[0]])
    last = helper_first + blocks - first  # one past the helper's last needed block
    if last > later_done or (later_end != -1 and later_starts[last] > later_end):
        return None  # a bad code, or the last block ran into the zero bits after the data
    shift = (values[first - 1] if first else 0) - (
        later_values[helper_first - 1] if helper_first else 0
    )
    values[first:] = later_values[helper_first:last]
    values[first:] += shift  # the DC predictor the helper didn't know
    return values


def _decode_later_half(kernel, data: bytes, stream: np.ndarray, start: int, blocks: int, tables):
    """The helper's half: from the middle, on to the end. Returns the middle's offset in bits
    (stuffing removed), the DC values and block starts, blocks decoded, and the data's end."""
    middle = start + (len(data) - start) // 2
    values = np.empty(blocks, np.int32)
    starts = np.empty(blocks + 1, np.int64)
    for _ in range(16):
        while middle < len(data) and data[middle - 1] == 0xFF:  # not inside a 0xFF 0x00
            middle += 1
        status, done, data_end = kernel(stream, middle, blocks, *tables, values, starts, 1 << 62)
        if status != -1 or done > 8:
            break
        middle += 1  # an invalid code before it found its feet: start a byte later
    offset = 8 * (middle - start - _stuffed_bytes(stream, start, middle))
    return offset, values, starts, done, data_end


def _stuffed_bytes(stream: np.ndarray, start: int, end: int) -> int:
    """How many 0xFF 0x00 pairs lie in stream[start:end] (the 0 is stuffing the decoder drops).

    Counts the 0xFF bytes: in entropy-coded data each one is followed by a stuffed 0 unless it
    starts a marker, and a marker in the first half makes _decode_halves give up anyway (its
    decoder reports the data's end). 0.08 ms on half a 1.3 MB scan; bytes.count took 0.8."""
    return int(np.count_nonzero(stream[start:end] == 0xFF))


HELPERS = 2
_free_helpers = threading.BoundedSemaphore(HELPERS)
_helper_pool: ThreadPoolExecutor | None = None


def _helpers() -> ThreadPoolExecutor:
    global _helper_pool
    with _helpers_lock:
        if _helper_pool is None:
            _helper_pool = ThreadPoolExecutor(max_workers=HELPERS, thread_name_prefix="jpeg-dc")
        return _helper_pool
