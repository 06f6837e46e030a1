"""One upload, start to finish: decode, gate, predict; Grad-CAM maps later, on request.

The page and the JSON API both call ``Analyser.analyse``, so they can't disagree about what an
upload means. The predictor schedules model calls onto the cores (chestx.session_pool): a lone
upload gets every core, concurrent uploads one core each; decoding, the gate and preprocessing
of other uploads run beside them in gunicorn's other threads. A large JPEG is decoded
straight at the reduced scale the model needs (DCT scaling), exactly as training reads it
(``load_for_model``); the larger copy shown on the result page is decoded only when the page
asks for it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from chestx import gate
from chestx.errors import ImageError
from chestx.explain import overlay_png
from chestx.imaging import Radiograph, preprocess, read_image, to_display_png
from chestx.inference import Prediction, Predictor
from chestx.web.heatmaps import GradCamMaps

#: The copy shown on the result page and under the heat maps is decoded at a reduced scale
#: (1/2, 1/4 or 1/8, in the JPEG decoder) of at least this size, about the 512 px of the maps.
#: It is made on first request: an API client that never fetches an image never pays for it.
DISPLAY_DECODE_SIZE = 448
#: Largest side of the image kept for display and heat maps.
DISPLAY_SIDE = 768
MAP_SIDE = 512
#: Colourfulness above this is worth a warning that colour was dropped (the gate refuses > 20).
COLOUR_WARNING = 2.0

log = logging.getLogger("chestx.web")

#: Hashes uploads on a spare core while the request's own thread checks and preprocesses.
_hashing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="chestx-sha256")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class GateRefusal(ImageError):
    """The upload doesn't look like a chest radiograph: no findings are shown for it."""

    def __init__(self, verdict: gate.GateVerdict):
        super().__init__(
            "This does not look like a chest radiograph, so ChestX shows no findings for it: "
            + "; ".join(verdict.reasons)
            + ".",
            status=422,
        )
        self.verdict = verdict


@dataclass
class Analysis:
    """What one upload produced, kept in memory for the result page and its images."""

    prediction: Prediction
    verdict: gate.GateVerdict
    overridden: bool
    warnings: list[str]
    image_format: str
    original_size: tuple[int, int]
    #: sha256 of the uploaded bytes: the study store's key for "the same upload again".
    sha256: str
    seconds_total: float
    model_input: np.ndarray
    #: The uploaded bytes, in memory only, for the display copy (None once it is made).
    upload: bytes | None
    #: Greyscale pixels for display and heat maps; decoded from ``upload`` on first use.
    _display_pixels: np.ndarray | None = None
    _image_png: bytes | None = None
    _maps: dict[str, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ranked(self) -> list[tuple[str, float]]:
        return self.prediction.ranked()

    def top_findings(self, count: int = 3) -> list[str]:
        """The most probable observations other than "No Finding" (which has no location)."""
        return [name for name, _ in self.ranked() if name != "No Finding"][:count]

    def display_pixels(self) -> np.ndarray:
        """The image as shown (at most DISPLAY_SIDE a side), decoded once, on first use."""
        with self._lock:
            return self._display_locked()

    def _display_locked(self) -> np.ndarray:
        if self._display_pixels is None:
            pixels = read_image(self.upload, min_size=DISPLAY_DECODE_SIZE).pixels
            self._display_pixels = _shrink(pixels, DISPLAY_SIDE)
            self.upload = None  # the pixels replace the bytes: keep one copy, not two
        return self._display_pixels


def _shrink(pixels: np.ndarray, side: int) -> np.ndarray:
    if max(pixels.shape) <= side:
        return pixels
    image = Image.fromarray(pixels.astype(np.float32), mode="F")
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


class Analyser:
    """The loaded model and its Grad-CAM, shared by every request of this process."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.gradcam = GradCamMaps(predictor)

    @property
    def card(self):
        return self.predictor.card

    def warm_up(self) -> None:
        """Run the model once at start-up so the first user doesn't pay its first-call cost.
        (The one-core sessions for concurrent uploads are built when uploads first queue up.)

        Grad-CAM isn't warmed: on the ONNX form a map is a forward pass plus numpy (nothing to
        trace), and its TensorFlow fallback would import TensorFlow (seconds) at start-up."""
        size = self.predictor.image_size
        blank = np.zeros((size, size, 3), dtype=np.float32)
        self.predictor.predict_batch(blank[None])

    def analyse(self, data: bytes, override: bool = False) -> Analysis:
        """Decode and check an upload, then predict. Raises ImageError (GateRefusal: 422)."""
        start = time.perf_counter()
        # The scale training reads at (load_for_model): a 2000 px JPEG decodes at 1/8, 250 px.
        # On two cores only while no other upload is in the model: under load that second
        # core is a model's, and the split's extra CPU would come out of throughput.
        size = self.predictor.image_size
        radiograph = read_image(data, min_size=size, parallel=not self.predictor.busy())
        # The study's key, hashed on the other core while this one checks and preprocesses
        # (hashlib lets go of the GIL): 0.9 ms of a 1.3 MB upload off the answer's path.
        digest = _hashing.submit(_sha256, data)
        verdict = gate.check(radiograph)
        if not verdict.passed and not override:
            log.info("upload refused by the input gate (%s)", radiograph.format)
            raise GateRefusal(verdict)
        model_input = preprocess(radiograph.pixels, self.predictor.image_size)
        # A JPEG decoded at reduced scale is decoded again, larger, if the page shows it; any
        # other image was decoded in full, so its display copy is made now and the bytes dropped.
        reduced = radiograph.pixels.shape[::-1] != radiograph.original_size
        prediction = self.predictor.predict_image(model_input)
        analysis = Analysis(
            prediction=prediction,
            verdict=verdict,
            overridden=not verdict.passed,
            warnings=self._warnings(radiograph, verdict),
            image_format=radiograph.format,
            original_size=radiograph.original_size,
            sha256=digest.result(),
            seconds_total=time.perf_counter() - start,
            model_input=model_input,
            upload=data if reduced else None,
            _display_pixels=None if reduced else _shrink(radiograph.pixels, DISPLAY_SIDE),
        )
        width, height = radiograph.original_size
        log.info(
            "analysed a %s image, %dx%d, gate %s, model %.3f s, total %.3f s",
            radiograph.format,
            width,
            height,
            "passed" if verdict.passed else "overridden",
            prediction.seconds,
            analysis.seconds_total,
        )
        return analysis

    def _warnings(self, radiograph: Radiograph, verdict: gate.GateVerdict) -> list[str]:
        warnings = []
        if self.card.demo:
            warnings.append(
                "This is a DEMO model trained on generated data: its numbers mean nothing "
                "clinically."
            )
        if not verdict.passed:
            warnings.append(
                "The input check said this does not look like a chest radiograph ("
                + "; ".join(verdict.reasons)
                + "). It was analysed anyway because you asked: the numbers may be meaningless."
            )
        width, height = radiograph.original_size
        if min(width, height) < self.predictor.image_size:
            warnings.append(
                f"The image ({width} x {height} px) is smaller than the model's input "
                f"({self.predictor.image_size} px): it was enlarged, which blurs detail."
            )
        if radiograph.colourfulness > COLOUR_WARNING:
            warnings.append("The image was in colour; it was read as greyscale.")
        if radiograph.format == "DICOM" and radiograph.modality in (None, "OT"):
            warnings.append(
                "The DICOM file doesn't say it is a radiograph (modality "
                f"{radiograph.modality or 'missing'}); it was read as one."
            )
        return warnings

    def image_png(self, analysis: Analysis) -> bytes:
        """The upload re-encoded as a plain PNG: no metadata of the original file survives."""
        with analysis._lock:
            if analysis._image_png is None:
                analysis._image_png = to_display_png(analysis._display_locked(), DISPLAY_SIDE)
            return analysis._image_png

    def heatmap_png(self, analysis: Analysis, observation: str) -> bytes:
        """The Grad-CAM overlay for one observation, computed on first request, then kept."""
        with analysis._lock:
            cached = analysis._maps.get(observation)
            if cached is not None:
                return cached
            cam = self.gradcam.map(analysis.model_input, observation)
            png = overlay_png(analysis._display_locked(), cam, max_side=MAP_SIDE)
            analysis._maps[observation] = png
            return png
