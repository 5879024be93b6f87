"""Real inputs for the PP-OCR text detector that rapidocr-onnxruntime ships.

Photos bundled with scikit-image (no download), preprocessed the way PP-OCR's detector
expects (as rapidocr does): BGR, scaled to [0, 1], normalized with mean 0.5 and std 0.5,
NCHW float32, sides a multiple of 32 (here 320x320: a crop of the photo at a given scale,
padded with white). `page` is the one photo with printed text; the others are the scenes
a detector must leave empty. Calibration and evaluation use different photos and crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 320

# (photo, scale, top, left); scale None fits the whole photo into SIZE x SIZE.
CALIBRATION = [("page", 1.0, 0, 0), ("astronaut", None, 0, 0), ("coffee", None, 0, 0),
               ("chelsea", None, 0, 0), ("rocket", None, 0, 0), ("camera", None, 0, 0)]
EVALUATION = [("page", 1.5, 0, 64), ("page", 1.8, 100, 0), ("page", 1.2, 40, 200), ("clock", None, 0, 0),
              ("text", 1.0, 0, 0), ("coins", None, 0, 0), ("immunohistochemistry", None, 0, 0),
              ("cat", None, 0, 0)]


def ppocr_detector() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"


def _rgb(name: str) -> np.ndarray:
    import skimage.data
    from skimage.color import gray2rgb, rgba2rgb

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = gray2rgb(image)
    if image.shape[2] == 4:
        image = (rgba2rgb(image) * 255).astype(np.uint8)
    return image.astype(np.float32)


def sample(name: str, scale: float | None, top: int, left: int) -> np.ndarray:
    from skimage.transform import resize

    image = _rgb(name)
    h, w = image.shape[:2]
    scale = SIZE / max(h, w) if scale is None else scale
    if scale != 1.0:
        image = resize(image, (round(h * scale), round(w * scale)), anti_aliasing=True, preserve_range=True)
    crop = image[top:top + SIZE, left:left + SIZE]
    canvas = np.full((SIZE, SIZE, 3), 255.0, np.float32)
    canvas[:crop.shape[0], :crop.shape[1]] = crop
    bgr = canvas[:, :, ::-1]
    return ((bgr / 255.0 - 0.5) / 0.5).transpose(2, 0, 1).astype(np.float32)


def inputs(samples) -> np.ndarray:
    return np.stack([sample(*s) for s in samples])


def write_data(folder: Path) -> tuple[Path, Path]:
    """calibration.npz and evaluation.npz in `folder` (the npz layout a fleet model declares)."""
    folder.mkdir(parents=True, exist_ok=True)
    calibration, evaluation = folder / "calibration.npz", folder / "evaluation.npz"
    np.savez(calibration, input=inputs(CALIBRATION))
    np.savez(evaluation, input=inputs(EVALUATION))
    return calibration, evaluation
