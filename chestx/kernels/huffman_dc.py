"""The Huffman decoder behind ``chestx.jpeg_dc``: each block's DC value, its AC codes skipped
several at a time. ``chestx.jpeg_dc`` parses the file, builds the lookup tables and splits the
scan; anything it doesn't take is Pillow's."""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def refill(data, position, buffer, bits, padding, fed):
    """Top the bit buffer up to 57-64 bits, removing the 0 stuffed after each 0xFF. At a
    marker or the end, zero bits are fed (counted in ``padding``), as libjpeg does.
    ``fed`` counts every bit put into the buffer. The buffer is left-aligned: its next
    bit is its highest, so a lookup is one constant shift and taking bits one shift left
    (a shorter chain from one lookup to the next than masking a right-aligned buffer)."""
    size = data.shape[0]
    if bits <= 32 and padding == 0 and position + 4 <= size:
        b0, b1 = data[position], data[position + 1]
        b2, b3 = data[position + 2], data[position + 3]
        if b0 != 0xFF and b1 != 0xFF and b2 != 0xFF and b3 != 0xFF:  # the usual case
            word = (np.uint64(b0) << np.uint64(24)) | (np.uint64(b1) << np.uint64(16))
            word |= (np.uint64(b2) << np.uint64(8)) | np.uint64(b3)
            buffer |= word << np.uint64(32 - bits)
            return position + 4, buffer, bits + 32, padding, fed + 32
    while bits <= 56:
        byte = 0
        if padding == 0 and position < size:
            byte = data[position]
            if byte == 0xFF:
                if position + 1 < size and data[position + 1] == 0:
                    position += 2
                else:
                    byte = 0
                    padding += 8
            else:
                position += 1
        else:
            padding += 8
        buffer |= np.uint64(byte) << np.uint64(56 - bits)
        bits += 8
        fed += 8
    return position, buffer, bits, padding, fed


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def peek(buffer, count):
    """The next ``count`` bits (1 to 63) of the buffer, whose first bit is its highest."""
    return np.int64(buffer >> np.uint64(64 - count))


@numba.njit(cache=True, nogil=True, boundscheck=False)
def dc_values(data, position, blocks, dc_lookup, ac_lookup, slow, window, out, starts, stop):
    """Huffman-decode up to ``blocks`` blocks from ``data[position:]``, each DC value into
    ``out``. If ``starts`` isn't empty, also the bit offset (from ``position``, stuffing
    removed) where each block starts, and where the last decoded one ends; stop before a
    block that starts at ``stop`` bits or later. Returns (status, blocks decoded, bits of
    real data, or -1 if its end wasn't reached): status 0, -1 for a bad code, -2 when a
    block runs past the data.
    Files with a bad code or too little data are for libjpeg, with its warnings and errors.
    """
    shift = np.uint64(64 - window)
    record = starts.shape[0] > 0
    buffer = np.uint64(0)
    bits = 0  # bits in the buffer
    fed = 0  # bits put into the buffer so far
    padding = 0  # zero bits fed after the data
    previous = 0
    for block in range(blocks):
        if record:
            starts[block] = fed - bits
            if fed - bits >= stop:
                return 0, block, fed - padding if padding else -1
        # The buffer is topped up before each code, DC and AC alike; the two checks are
        # written out, not shared, because this loop is the whole decoder's time.
        if bits < 32:
            state = refill(data, position, buffer, bits, padding, fed)
            position, buffer, bits, padding, fed = state
            if padding > 128:
                return -2, block, fed - padding
        # The DC difference: a code for its size, then that many bits.
        entry = np.int64(dc_lookup[buffer >> shift])
        if entry == 0:
            return -1, block, -1
        buffer <<= np.uint64(entry >> 8)
        bits -= entry >> 8
        extra = entry & 255
        if extra:
            value = peek(buffer, extra)
            buffer <<= np.uint64(extra)
            bits -= extra
            if value < (1 << (extra - 1)):
                value -= (1 << extra) - 1
            previous += value
        out[block] = previous
        k = 1  # the AC codes, skipped
        while k < 64:
            if bits < 32:
                state = refill(data, position, buffer, bits, padding, fed)
                position, buffer, bits, padding, fed = state
                if padding > 128:
                    return -2, block, fed - padding
            # Up to three groups per test of the buffer's fill: one group takes at most 22
            # bits (a 12-bit code and 10 more), so ``bits >= 22`` says another one fits. That
            # test is nearly always true, where ``bits < 32`` is a coin toss for the CPU's
            # branch predictor: 15 % quicker than a test before every group (four groups
            # per test were slower than three).
            group = ac_lookup[buffer >> shift]
            in_block = True
            for _ in range(3):
                advance = (group >> 6) & 255
                in_block = k + advance < 64  # every code of the group is in this block
                if not in_block:
                    break
                taken = group & 31
                buffer <<= np.uint64(taken)
                bits -= taken
                if group & 32:
                    k = 64
                    break
                k += advance
                if bits < 22:
                    break
                group = ac_lookup[buffer >> shift]
            if in_block:
                continue
            if bits < 32:  # a long code and its bits need up to 26
                state = refill(data, position, buffer, bits, padding, fed)
                position, buffer, bits, padding, fed = state
                if padding > 128:
                    return -2, block, fed - padding
                group = ac_lookup[buffer >> shift]
            step = np.int64(group >> 14)
            if step == 0:  # a code longer than the window: canonical decoding, bit by bit
                length = window + 1
                code = peek(buffer, length)
                while length < 16 and code > slow[length]:
                    length += 1
                    code = peek(buffer, length)
                if code > slow[length]:
                    return -1, block, -1
                step = slow[54 + slow[18 + length] + code - slow[36 + length]]
            buffer <<= np.uint64(step >> 8)
            bits -= step >> 8
            if (step & 255) == 64:
                break
            k += step & 255
    if record and starts.shape[0] > blocks:
        starts[blocks] = fed - bits
    if bits < padding:  # the last block needed bits past the end of the data
        return -2, blocks, fed - padding
    return 0, blocks, fed - padding if padding else -1
