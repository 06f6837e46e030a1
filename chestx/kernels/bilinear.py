"""The resize behind ``chestx.resample.model_input``: Pillow 13's bilinear passes, the clip
and the normalisation, in one call. ``chestx.resample`` computes the weights and the pass order."""

import numba
import numpy as np

OPTIONS = {"cache": True, "nogil": True, "boundscheck": False}


@numba.njit(inline="always", **OPTIONS)
def vertical_pass(source, first_row, bounds, weights, target):
    # Each output pixel sums its taps in Pillow's order; the loop runs along rows so that
    # a row's sums advance together (contiguous, vectorised).
    totals = np.empty(target.shape[1], np.float64)
    for row in range(target.shape[0]):
        start, taps = bounds[row, 0] - first_row, bounds[row, 1]
        totals[:] = 0.0
        for tap in range(taps):
            weight = weights[row, tap]
            for column in range(target.shape[1]):
                totals[column] += np.float64(source[start + tap, column]) * weight
        for column in range(target.shape[1]):
            target[row, column] = np.float32(totals[column])


@numba.njit(inline="always", **OPTIONS)
def transposed(source):
    target = np.empty((source.shape[1], source.shape[0]), source.dtype)
    for row_block in range(0, source.shape[0], 32):
        for column_block in range(0, source.shape[1], 32):
            for row in range(row_block, min(row_block + 32, source.shape[0])):
                for column in range(column_block, min(column_block + 32, source.shape[1])):
                    target[column, row] = source[row, column]
    return target


@numba.njit(inline="always", **OPTIONS)
def horizontal_pass(source, bounds, weights):
    # The same sums as a row-by-row pass, done as a vertical pass on the transposed image:
    # vectorised across rows (3x quicker than summing each pixel's few taps in turn).
    turned = np.empty((bounds.shape[0], source.shape[0]), np.float32)
    vertical_pass(transposed(source), 0, bounds, weights, turned)
    return transposed(turned)


@numba.njit(**OPTIONS)
def kernel(pixels, h_bounds, h_weights, v_bounds, v_weights, v_first, mean, std, out):
    rows, columns = out.shape[0], out.shape[1]
    if v_first:
        temporary = np.empty((rows, pixels.shape[1]), np.float32)
        vertical_pass(pixels, 0, v_bounds, v_weights, temporary)
        grey = horizontal_pass(temporary, h_bounds, h_weights)
    else:
        first = v_bounds[0, 0]
        last = v_bounds[rows - 1, 0] + v_bounds[rows - 1, 1]
        temporary = horizontal_pass(pixels[first:last], h_bounds, h_weights)
        grey = np.empty((rows, columns), np.float32)
        vertical_pass(temporary, first, v_bounds, v_weights, grey)
    # Clip, then (grey - mean) / std along each row of (pixel, channel) pairs, contiguous:
    # float32 division vectorises there, and not across a stride of 3.
    means, stds = np.empty(3 * columns, np.float32), np.empty(3 * columns, np.float32)
    for column in range(columns):
        means[3 * column : 3 * column + 3] = mean
        stds[3 * column : 3 * column + 3] = std
    line = np.empty(3 * columns, np.float32)
    flat = out.reshape(rows, 3 * columns)
    zero, one = np.float32(0.0), np.float32(1.0)
    for row in range(rows):
        for column in range(columns):
            value = min(max(grey[row, column], zero), one)
            line[3 * column] = line[3 * column + 1] = line[3 * column + 2] = value
        for index in range(3 * columns):
            flat[row, index] = (line[index] - means[index]) / stds[index]
