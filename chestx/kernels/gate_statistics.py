"""The one pass behind ``chestx.gate.measure``: histogram counts, flat patches, the mean
|Laplacian| and the gradient magnitudes, with the numpy path's float32 arithmetic per pixel
and float64 sums."""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, boundscheck=False)
def statistics(grey, levels):
    rows, columns = grey.shape
    counts = np.zeros(256, np.int64)
    for row in range(rows):
        for column in range(columns):
            counts[levels[row, column]] += 1
    flat = 0
    laplacian = 0.0
    four = np.float32(4)
    for row in range(1, rows - 1):
        for column in range(1, columns - 1):
            shade = levels[row, column]
            if (
                shade > 5
                and levels[row - 1, column - 1] == shade
                and levels[row - 1, column] == shade
                and levels[row - 1, column + 1] == shade
                and levels[row, column - 1] == shade
                and levels[row, column + 1] == shade
                and levels[row + 1, column - 1] == shade
                and levels[row + 1, column] == shade
                and levels[row + 1, column + 1] == shade
            ):
                flat += 1
            value = grey[row, column] * four - grey[row - 1, column]
            value = value - grey[row + 1, column] - grey[row, column - 1]
            laplacian += abs(value - grey[row, column + 1])
    magnitude = np.empty(rows * columns, np.float32)
    two = np.float32(2)
    total = 0.0
    for row in range(rows):
        above, below = max(row - 1, 0), min(row + 1, rows - 1)
        for column in range(columns):
            left, right = max(column - 1, 0), min(column + 1, columns - 1)
            dy = grey[below, column] - grey[above, column]
            if below - above == 2:
                dy = dy / two
            dx = grey[row, right] - grey[row, left]
            if right - left == 2:
                dx = dx / two
            value = np.sqrt(dx * dx + dy * dy)
            magnitude[row * columns + column] = value
            total += value
    inside = (rows - 2) * (columns - 2)
    return counts, flat / inside, laplacian / inside, magnitude, total
