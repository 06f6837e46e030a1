"""Reading radiographs and turning them into model input: one path for training and serving.

``read_image`` decodes PNG, JPEG and DICOM into a greyscale float image in [0, 1];
``preprocess`` resizes it and applies the normalisation DenseNet121 expects. The trainer, the
command line and the web app all call ``load_for_model`` (or these two), so a saved model and the
app can't disagree about what an input looks like.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from chestx import jpeg_dc, resample
from chestx.errors import ImageError

#: ImageNet statistics used by ``keras.applications.densenet.preprocess_input`` ("torch" mode).
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

#: A one-line description stored in every model card.
PREPROCESSING = (
    "greyscale in [0, 1] (8-bit / 255; 16-bit, float and DICOM min-max after modality and VOI "
    "LUTs, MONOCHROME1 inverted), bilinear resize to a square, grey copied to 3 channels, "
    "ImageNet mean/std per channel (keras densenet 'torch' mode)"
)

#: Larger images are refused as decompression bombs (a 4k x 4k radiograph is 16 M pixels).
MAX_PIXELS = 50_000_000

#: Modalities a chest radiograph can be stored as; anything else is refused.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT", "PX", ""})

DICOM_MAGIC_OFFSET = 128


@dataclass(frozen=True)
class Radiograph:
    """A decoded image: greyscale pixels plus what the input gate needs to know about the file."""

    pixels: np.ndarray  # float32, H x W, in [0, 1]
    format: str  # "PNG", "JPEG", "DICOM", ...
    original_size: tuple[int, int]  # (width, height) as stored in the file
    colourfulness: float  # 0 for greyscale; Hasler-Suesstrunk metric on the RGB data otherwise
    modality: str | None = None  # DICOM modality, None for ordinary images


def _is_dicom(data: bytes) -> bool:
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == b"DICM"


def _colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness on 0-255 RGB: about 0 for a radiograph."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(abs(rg.mean()), abs(yb.mean())))


def _min_max(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros_like(array, dtype=np.float32)
    return (array - low) / (high - low)


def _pil_to_grey(image: Image.Image) -> tuple[np.ndarray, float]:
    """Greyscale float pixels in [0, 1] and the colourfulness of the original colours."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image)
        return _min_max(array), 0.0
    if mode == "1":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA"):
        # Transparent areas become black, like the background of a radiograph: composite over
        # opaque black (over transparent black, half-transparent pixels kept their full value).
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
        image = image.convert("RGB" if mode == "RGBA" else "L")
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, ...
    if image.mode == "RGB":
        rgb = np.asarray(image)
        small = rgb[:: max(1, rgb.shape[0] // 256), :: max(1, rgb.shape[1] // 256)]
        colour = _colourfulness(small)
        grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        return grey, colour
    return np.asarray(image, dtype=np.float32) / 255.0, 0.0


def _is_eighth_grey(image: Image.Image) -> bool:
    """A greyscale JPEG that libjpeg would decode at 1/8 scale, with nothing to rotate."""
    return (
        image.mode == "L"
        and image.decoderconfig[:1] == (8,)
        and image.getexif().get(ExifTags.Base.Orientation, 1) == 1
    )


def _read_pil(data: bytes, min_size: int | None, parallel: bool = True) -> Radiograph:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            image = Image.open(io.BytesIO(data))
            original_size = image.size
            fmt = image.format or "unknown"
            if fmt not in ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF"):
                raise ImageError(
                    f"{fmt} files are not supported: upload a PNG, JPEG or DICOM (.dcm) file",
                    status=415,
                )
            if fmt == "JPEG" and min_size:
                # Decode large JPEGs at a reduced scale straight away (DCT scaling): far faster.
                image.draft("L" if image.mode == "L" else "RGB", (min_size, min_size))
                if _is_eighth_grey(image):
                    # The same pixels, sooner; or None.
                    pixels = jpeg_dc.decode_eighth(data, parallel)
                    if pixels is not None:
                        return Radiograph(pixels / np.float32(255), fmt, original_size, 0.0)
            image.load()
            image = ImageOps.exif_transpose(image)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(
                f"the image is too large to decode safely (over {MAX_PIXELS:,} pixels)", 400
            ) from None
        except UnidentifiedImageError:
            raise ImageError(
                "the file is not an image ChestX can read: upload a PNG, JPEG or DICOM (.dcm)",
                status=415,
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageError(f"the image file is corrupt or truncated ({error})", 400) from None
    pixels, colour = _pil_to_grey(image)
    return Radiograph(pixels, fmt, original_size, colour)


def _read_dicom(data: bytes) -> Radiograph:
    """Decode a DICOM radiograph. Only pixel-related tags are read: no patient data leaves here.

    pydicom raises many exception types for malformed files (fuzzing found NotImplementedError
    for an unknown VR, among others), so anything but our own ImageError becomes a 400.
    """
    import pydicom

    # Never log element values: pydicom's validation warnings quote them, patient names included.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        return _decode_dicom(pydicom.dcmread(io.BytesIO(data)))
    except ImageError:
        raise
    except MemoryError:
        raise ImageError("the DICOM image is too large to decode", 400) from None
    except Exception as error:
        raise ImageError(
            f"the DICOM file is corrupt or truncated ({type(error).__name__})", 400
        ) from None


def _decode_dicom(dataset) -> Radiograph:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    modality = str(dataset.get("Modality", "") or "").upper()
    if modality not in RADIOGRAPH_MODALITIES:
        raise ImageError(
            f"this DICOM is a {modality} image, not a radiograph: upload a chest X-ray "
            "(modality CR or DX)",
            status=422,
        )
    if "PixelData" not in dataset:
        raise ImageError("the DICOM file holds no image (no pixel data)", status=400)
    # pydicom allocates Rows x Columns x frames before decoding: refuse bombs first.
    claimed = (
        int(dataset.get("Rows", 0) or 0)
        * int(dataset.get("Columns", 0) or 0)
        * max(1, int(dataset.get("NumberOfFrames", 1) or 1))
    )
    if claimed > MAX_PIXELS:
        raise ImageError(
            f"the image is too large to decode safely (over {MAX_PIXELS:,} pixels)", 400
        )
    try:
        array = dataset.pixel_array
    except Exception as error:  # pydicom raises many kinds for undecodable pixel data
        raise ImageError(
            f"the DICOM image can't be decoded ({type(error).__name__}); "
            "uncompressed or JPEG-baseline transfer syntaxes are supported",
            status=415,
        ) from None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        array = array[0]  # a radiograph is one frame; take the first of a multi-frame file
    if array.ndim == 3:  # colour DICOM (RGB): a radiograph stored in colour
        array = array.mean(axis=-1)
    if array.ndim != 2 or min(array.shape) < 2:
        raise ImageError("the DICOM image has an unexpected shape", status=422)
    values = apply_modality_lut(array, dataset)
    values = (
        apply_voi_lut(values, dataset, index=0)
        if "WindowCenter" in dataset or ("VOILUTSequence" in dataset)
        else values
    )
    pixels = _min_max(np.asarray(values, dtype=np.float32))
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = 1.0 - pixels
    height, width = array.shape
    return Radiograph(pixels, "DICOM", (width, height), 0.0, modality or None)


def read_image(
    source: bytes | str | Path, min_size: int | None = None, parallel: bool = True
) -> Radiograph:
    """Decode a PNG, JPEG (or other Pillow format) or DICOM file into greyscale pixels.

    ``min_size`` lets large JPEGs decode at a reduced scale no smaller than that many pixels,
    which is all the model needs. ``parallel`` lets a large JPEG decode on two cores (sooner,
    for about 10 % more CPU): right for a lone upload, wrong when other work has the cores.
    Raises ImageError with a user-facing message and HTTP status.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"image file not found: {path}", 404) from None
    else:
        data = source
    if not data:
        raise ImageError("the file is empty", 400)
    if _is_dicom(data):
        return _read_dicom(data)
    return _read_pil(data, min_size, parallel)


def preprocess(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """Greyscale [0, 1] pixels to the (size, size, 3) float32 input DenseNet121 expects.

    Training and serving both come here. chestx.resample does it in one pass once its kernel
    is loaded, with exactly these numbers (for a 250 px radiograph in the server, 0.7 ms
    instead of 1.0 to 1.1)."""
    fast = resample.model_input(pixels, image_size, IMAGENET_MEAN, IMAGENET_STD)
    if fast is not None:
        return fast
    image = Image.fromarray(np.asarray(pixels, dtype=np.float32), mode="F")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    grey = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    # Channel by channel into one array: the same numbers as (grey[..., None] - mean) / std,
    # but 8x faster, because numpy broadcasts badly over a last axis of length 3 (computing
    # each plane contiguously, then one strided copy, beats working in the strided plane).
    model_input = np.empty((image_size, image_size, 3), dtype=np.float32)
    for channel in range(3):
        model_input[..., channel] = (grey - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
    return model_input


def load_for_model(source: bytes | str | Path, image_size: int) -> np.ndarray:
    """Read a file and preprocess it: the one function training and serving both call."""
    return preprocess(read_image(source, min_size=image_size).pixels, image_size)


def to_display_png(pixels: np.ndarray, max_side: int = 768) -> bytes:
    """Re-encode greyscale pixels as a PNG for the browser: no metadata of the upload survives."""
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="L")
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
