"""Hostile inputs for the readers: mutations of real files and odd files made from scratch.

Used by tests/test_fuzz_images.py (and the web fuzz test). Each
strategy yields bytes; whatever they are, ``read_image`` must return a sane Radiograph or raise
ImageError with a 4xx status: no other exception, no hang.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from hypothesis import strategies as st
from PIL import Image


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but carries one tiny compressed row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def dicom_bytes(
    pixels: np.ndarray | None,
    modality: str = "DX",
    photometric: str = "MONOCHROME2",
    frames: int = 1,
    transfer_syntax: str | None = None,
) -> bytes:
    """A minimal DICOM file with a fake patient (to check it never leaks)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.PatientName = "Fuzz^Patient"
    dataset.PatientID = "FUZZ-0001"
    dataset.Modality = modality
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if pixels is not None:
        pixels = np.ascontiguousarray(pixels)
        dataset.Rows, dataset.Columns = pixels.shape[-2:]
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = photometric
        dataset.BitsAllocated = pixels.dtype.itemsize * 8
        dataset.BitsStored = dataset.BitsAllocated
        dataset.HighBit = dataset.BitsStored - 1
        dataset.PixelRepresentation = 0
        if frames > 1:
            dataset.NumberOfFrames = frames
        if transfer_syntax:  # compressed syntaxes carry encapsulated fragments
            from pydicom.encaps import encapsulate

            dataset.PixelData = encapsulate([pixels.tobytes()])
        else:
            dataset.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@functools.cache
def huge_png(side: int = 20_000) -> bytes:
    """A real, complete side x side PNG (1-bit, so 48 KB for 20000 px): 400 million pixels,
    far over the decoder's limit. Made once (2 s) and reused."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A real file with bytes flipped, cut, duplicated or spliced in."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "duplicate", "zero"]))
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[position:]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "duplicate":
            end = min(len(data), position + draw(st.integers(1, 512)))
            data[position:position] = data[position:end]
        else:
            end = min(len(data), position + draw(st.integers(1, 256)))
            data[position:end] = bytes(end - position)
    return bytes(data)


@st.composite
def odd_images(draw) -> bytes:
    """Valid files of odd shapes, depths and modes, made from scratch."""
    kind = draw(
        st.sampled_from(
            [
                "tiny",
                "one_pixel",
                "huge",
                "grey16",
                "float_tiff",
                "rgba",
                "palette",
                "cmyk_jpeg",
                "bomb",
                "dicom",
                "dicom16",
                "dicom_multiframe",
                "dicom_no_pixels",
                "dicom_ct",
                "dicom_compressed",
                "random_bytes",
            ]
        )
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    width, height = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    if kind == "tiny":
        return png_bytes(rng.integers(0, 256, (height, width), dtype=np.uint8))
    if kind == "one_pixel":
        dtype = draw(st.sampled_from([np.uint8, np.uint16]))
        return png_bytes(np.full((1, 1), draw(st.integers(0, 255)), dtype=dtype))
    if kind == "huge":
        return huge_png()
    if kind == "grey16":
        return png_bytes(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    if kind == "float_tiff":
        buffer = io.BytesIO()
        array = rng.normal(0, draw(st.sampled_from([1e-6, 1.0, 1e6])), (height, width))
        Image.fromarray(array.astype(np.float32), mode="F").save(buffer, format="TIFF")
        return buffer.getvalue()
    if kind == "rgba":
        return png_bytes(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    if kind == "palette":
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        buffer = io.BytesIO()
        image.convert("P").save(buffer, format="PNG")
        return buffer.getvalue()
    if kind == "cmyk_jpeg":
        image = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "CMYK")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG")
        return buffer.getvalue()
    if kind == "bomb":
        side = draw(st.sampled_from([20_000, 65_535]))
        return png_claiming_size(side, side)
    if kind == "dicom":
        return dicom_bytes(rng.integers(0, 256, (height, width), dtype=np.uint8))
    if kind == "dicom16":
        photometric = draw(st.sampled_from(["MONOCHROME1", "MONOCHROME2"]))
        return dicom_bytes(
            rng.integers(0, 4096, (height, width), dtype=np.uint16), "CR", photometric
        )
    if kind == "dicom_multiframe":
        frames = draw(st.integers(2, 4))
        array = rng.integers(0, 256, (frames, height, width), dtype=np.uint8)
        return dicom_bytes(array, frames=frames)
    if kind == "dicom_no_pixels":
        return dicom_bytes(None)
    if kind == "dicom_ct":
        return dicom_bytes(rng.integers(0, 256, (height, width), dtype=np.uint8), "CT")
    if kind == "dicom_compressed":
        # Claims JPEG 2000 but carries raw bytes: no decoder can make sense of it.
        return dicom_bytes(
            rng.integers(0, 256, (height, width), dtype=np.uint8),
            transfer_syntax="1.2.840.10008.1.2.4.90",
        )
    return draw(st.binary(min_size=0, max_size=2048))
