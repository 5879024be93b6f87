"""Make the ``meter-digits`` example models and data files, deterministically.

"Reading meter digits" is stood in for by scikit-learn's bundled digits data set
(1797 grey 8x8 images, pixel values 0..16, scaled here to [0, 1]).  This script
trains small convolutional classifiers on it with plain numpy (hand-written
forward/backward passes using im2col, Adam, fixed seeds), exports them as ONNX
(opset 17, IR version 8) with ``onnx.helper`` and writes:

* ``1.0.0/full.onnx``, ``1.0.0/student.onnx`` -- briefly trained version
* ``1.1.0/full.onnx``, ``1.1.0/student.onnx`` -- longer trained version
* ``data/calibration.npz`` -- key ``input``: float32 (128, 1, 8, 8), training split only
* ``data/evaluation.npz`` -- keys ``input`` float32 (N, 1, 8, 8) and ``label``
  int64 (N,): the stratified 20 % held-out split, never used to train or calibrate

``full`` is a wide CNN (Conv 1->32, Conv 32->64, MaxPool, Gemm 1024->512->10,
about 550k parameters); ``student`` is a small CNN (Conv 1->8, MaxPool,
Gemm 128->10, about 1.4k parameters) distilled from the ``full`` model of the
same version.  Both take ``image`` float32 [N, 1, 8, 8] and return ``logits``
float32 [N, 10].

Afterwards the script checks every model (onnx full check, onnxruntime,
OpenVINO CPU against onnxruntime, a static INT8 QDQ quantisation of the full
model against FP32) and prints accuracies, sha256 and sizes.  Running it again
rewrites byte-identical files (fixed seeds, no timestamps, single-threaded BLAS,
zip entries with a fixed date).  Rerun from the repository root with::

    python fleet/models/meter-digits/make_model.py
"""

from __future__ import annotations

import os

# Pin BLAS to one thread before numpy is imported so that every floating-point
# reduction happens in the same order on every run and every machine size.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import hashlib  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA_DIR = HERE / "data"

OPSET = 17
IR_VERSION = 8
PRODUCER_NAME = "edgefleet-make-model"
PRODUCER_VERSION = "1"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
NUM_CLASSES = 10

SPLIT_SEED = 20240501
CALIBRATION_SEED = 7
CALIBRATION_SIZE = 128
TEST_FRACTION = 0.2
TEMPERATURE = 4.0
DISTILL_ALPHA = 0.7  # weight of the soft-target term; 1 - alpha goes to hard labels

Params = dict[str, np.ndarray]
Grads = dict[str, np.ndarray]


@dataclass(frozen=True)
class Recipe:
    """How one version of the model pair is trained."""

    version: str
    seed: int
    full_epochs: int
    full_lr: float
    student_epochs: int
    student_lr: float
    batch_size: int = 64


RECIPES: tuple[Recipe, ...] = (
    Recipe(version="1.0.0", seed=1000, full_epochs=2, full_lr=1e-3,
           student_epochs=25, student_lr=1e-2),
    Recipe(version="1.1.0", seed=1100, full_epochs=25, full_lr=1e-3,
           student_epochs=150, student_lr=1e-2),
)


# --------------------------------------------------------------------------- data


def load_dataset() -> tuple[np.ndarray, np.ndarray]:
    """Return digits images as float32 (N, 1, 8, 8) in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    return np.ascontiguousarray(images), digits.target.astype(np.int64)


def split_dataset(
    x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded train/held-out split: (x_train, y_train, x_eval, y_eval)."""
    from sklearn.model_selection import train_test_split

    idx_train, idx_eval = train_test_split(
        np.arange(len(y)), test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    idx_train, idx_eval = np.sort(idx_train), np.sort(idx_eval)
    return x[idx_train], y[idx_train], x[idx_eval], y[idx_eval]


def pick_calibration(x_train: np.ndarray) -> np.ndarray:
    """Draw the calibration images from the training split only."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    idx = np.sort(rng.choice(len(x_train), size=CALIBRATION_SIZE, replace=False))
    return np.ascontiguousarray(x_train[idx], dtype=np.float32)


# ------------------------------------------------------------------ numpy layers


def im2col3x3(x: np.ndarray) -> np.ndarray:
    """(B, C, H, W) -> (B*H*W, C*9) patches of a 3x3, pad 1, stride 1 convolution.

    Column order is (c, kh, kw), matching an ONNX Conv weight reshaped to (O, C*9).
    """
    b, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.stack(
        [xp[:, :, kh:kh + h, kw:kw + w] for kh in range(3) for kw in range(3)], axis=-1
    )  # (B, C, H, W, 9)
    return patches.transpose(0, 2, 3, 1, 4).reshape(b * h * w, c * 9)


def col2im3x3(dcols: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Adjoint of :func:`im2col3x3`: scatter-add patch gradients back to (B, C, H, W)."""
    b, c, h, w = shape
    d = dcols.reshape(b, h, w, c, 3, 3).transpose(0, 3, 4, 5, 1, 2)  # (B, C, 3, 3, H, W)
    dxp = np.zeros((b, c, h + 2, w + 2), dtype=dcols.dtype)
    for kh in range(3):
        for kw in range(3):
            dxp[:, :, kh:kh + h, kw:kw + w] += d[:, :, kh, kw]
    return dxp[:, :, 1:-1, 1:-1]


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 pad-1 convolution; returns output (B, O, H, W) and the im2col cache."""
    bsz, _, h, wd = x.shape
    cols = im2col3x3(x)
    out = cols @ w.reshape(w.shape[0], -1).T + b
    return out.reshape(bsz, h, wd, -1).transpose(0, 3, 1, 2), cols


def conv_backward(
    dout: np.ndarray, cols: np.ndarray, w: np.ndarray, x_shape: tuple[int, int, int, int] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients (dW, db, dx) of :func:`conv_forward`; dx is skipped if x_shape is None."""
    o = w.shape[0]
    dflat = dout.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (dflat.T @ cols).reshape(w.shape)
    db = dflat.sum(axis=0)
    dx = None if x_shape is None else col2im3x3(dflat @ w.reshape(o, -1), x_shape)
    return dw, db, dx


def maxpool_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 stride-2 max pool; returns output and the one-hot argmax mask."""
    b, c, h, w = x.shape
    win = x.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(b, c, h // 2, w // 2, 4)
    arg = win.argmax(axis=-1)
    mask = np.eye(4, dtype=x.dtype)[arg]  # first maximum wins, like ONNX MaxPool indices
    return win.max(axis=-1), mask


def maxpool_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gradient of :func:`maxpool_forward` routed to the arg-max position."""
    b, c, h2, w2, _ = mask.shape
    d = (mask * dout[..., None]).reshape(b, c, h2, w2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return d.reshape(b, c, h2 * 2, w2 * 2)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise numerically stable softmax."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------- models


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """He-normal float32 initialisation."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def init_full(rng: np.random.Generator) -> Params:
    """Parameters of the wide CNN, in ONNX layout (Conv OIHW, Gemm (out, in))."""
    return {
        "conv1.weight": he_normal(rng, (32, 1, 3, 3), 9),
        "conv1.bias": np.zeros(32, np.float32),
        "conv2.weight": he_normal(rng, (64, 32, 3, 3), 32 * 9),
        "conv2.bias": np.zeros(64, np.float32),
        "fc1.weight": he_normal(rng, (512, 1024), 1024),
        "fc1.bias": np.zeros(512, np.float32),
        "fc2.weight": he_normal(rng, (10, 512), 512) * np.float32(0.5),
        "fc2.bias": np.zeros(10, np.float32),
    }


def init_student(rng: np.random.Generator) -> Params:
    """Parameters of the small student CNN, in ONNX layout."""
    return {
        "conv1.weight": he_normal(rng, (8, 1, 3, 3), 9),
        "conv1.bias": np.zeros(8, np.float32),
        "fc.weight": he_normal(rng, (10, 128), 128) * np.float32(0.5),
        "fc.bias": np.zeros(10, np.float32),
    }


def full_forward(p: Params, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Forward pass of the wide CNN; returns logits and the backward cache."""
    a1, c1 = conv_forward(x, p["conv1.weight"], p["conv1.bias"])
    r1 = np.maximum(a1, 0)
    a2, c2 = conv_forward(r1, p["conv2.weight"], p["conv2.bias"])
    r2 = np.maximum(a2, 0)
    pooled, mask = maxpool_forward(r2)
    flat = pooled.reshape(len(x), -1)
    h = flat @ p["fc1.weight"].T + p["fc1.bias"]
    rh = np.maximum(h, 0)
    logits = rh @ p["fc2.weight"].T + p["fc2.bias"]
    cache = {"x": x, "c1": c1, "a1": a1, "r1": r1, "c2": c2, "a2": a2,
             "mask": mask, "flat": flat, "h": h, "rh": rh}
    return logits, cache


def full_backward(p: Params, cache: dict, dlogits: np.ndarray) -> Grads:
    """Backward pass of the wide CNN given d(loss)/d(logits)."""
    g: Grads = {"fc2.weight": dlogits.T @ cache["rh"], "fc2.bias": dlogits.sum(0)}
    dh = (dlogits @ p["fc2.weight"]) * (cache["h"] > 0)
    g["fc1.weight"], g["fc1.bias"] = dh.T @ cache["flat"], dh.sum(0)
    dflat = dh @ p["fc1.weight"]
    dr2 = maxpool_backward(dflat.reshape(-1, 64, 4, 4), cache["mask"])
    da2 = dr2 * (cache["a2"] > 0)
    g["conv2.weight"], g["conv2.bias"], dr1 = conv_backward(
        da2, cache["c2"], p["conv2.weight"], cache["r1"].shape)
    da1 = dr1 * (cache["a1"] > 0)
    g["conv1.weight"], g["conv1.bias"], _ = conv_backward(da1, cache["c1"], p["conv1.weight"], None)
    return g


def student_forward(p: Params, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """Forward pass of the student CNN; returns logits and the backward cache."""
    a1, c1 = conv_forward(x, p["conv1.weight"], p["conv1.bias"])
    r1 = np.maximum(a1, 0)
    pooled, mask = maxpool_forward(r1)
    flat = pooled.reshape(len(x), -1)
    logits = flat @ p["fc.weight"].T + p["fc.bias"]
    return logits, {"c1": c1, "a1": a1, "mask": mask, "flat": flat}


def student_backward(p: Params, cache: dict, dlogits: np.ndarray) -> Grads:
    """Backward pass of the student CNN given d(loss)/d(logits)."""
    g: Grads = {"fc.weight": dlogits.T @ cache["flat"], "fc.bias": dlogits.sum(0)}
    dflat = dlogits @ p["fc.weight"]
    dr1 = maxpool_backward(dflat.reshape(-1, 8, 4, 4), cache["mask"])
    da1 = dr1 * (cache["a1"] > 0)
    g["conv1.weight"], g["conv1.bias"], _ = conv_backward(da1, cache["c1"], p["conv1.weight"], None)
    return g


# -------------------------------------------------------------------- training


class Adam:
    """Plain Adam optimiser over a dict of float32 arrays (updated in place)."""

    def __init__(self, params: Params, lr: float, b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-8) -> None:
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, params: Params, grads: Grads, lr: float | None = None) -> None:
        """Apply one bias-corrected Adam update."""
        self.t += 1
        step = (self.lr if lr is None else lr) * np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        for k, g in grads.items():
            g = g.astype(np.float32, copy=False)
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            params[k] -= (np.float32(step) * self.m[k] / (np.sqrt(self.v[k]) + self.eps)).astype(np.float32)


def batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield shuffled index batches covering range(n) once."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def hard_loss_grad(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d(mean cross-entropy)/d(logits)."""
    g = softmax(logits)
    g[np.arange(len(y)), y] -= 1
    return (g / len(y)).astype(np.float32)


def distill_loss_grad(logits: np.ndarray, y: np.ndarray, teacher_logits: np.ndarray) -> np.ndarray:
    """d/d(logits) of alpha*T^2*KL(teacher_T || student_T) + (1-alpha)*CE(labels)."""
    soft = TEMPERATURE * (softmax(logits / TEMPERATURE) - softmax(teacher_logits / TEMPERATURE))
    hard = softmax(logits)
    hard[np.arange(len(y)), y] -= 1
    return ((DISTILL_ALPHA * soft + (1 - DISTILL_ALPHA) * hard) / len(y)).astype(np.float32)


def train(
    params: Params,
    forward: Callable[[Params, np.ndarray], tuple[np.ndarray, dict]],
    backward: Callable[[Params, dict, np.ndarray], Grads],
    loss_grad: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    x: np.ndarray, y: np.ndarray, aux: np.ndarray,
    epochs: int, lr: float, batch_size: int, rng: np.random.Generator,
) -> Params:
    """Mini-batch Adam with cosine learning-rate decay; ``aux`` rows go along with x."""
    opt = Adam(params, lr)
    steps_per_epoch = -(-len(x) // batch_size)
    total, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        for idx in batches(len(x), batch_size, rng):
            logits, cache = forward(params, x[idx])
            grads = backward(params, cache, loss_grad(logits, y[idx], aux[idx]))
            opt.step(params, grads, lr * 0.5 * (1 + np.cos(np.pi * step / total)))
            step += 1
    return params


def predict(forward: Callable[[Params, np.ndarray], tuple[np.ndarray, dict]], p: Params,
            x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of a numpy model over x in batches."""
    return np.concatenate([forward(p, x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)])


# ------------------------------------------------------------------ ONNX export


def conv_node(name: str, inp: str, out: str) -> onnx.NodeProto:
    """A 3x3, pad-1, stride-1 Conv node using ``<name>.weight`` / ``<name>.bias``."""
    return helper.make_node("Conv", [inp, f"{name}.weight", f"{name}.bias"], [out], name=name,
                            kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])


def gemm_node(name: str, inp: str, out: str) -> onnx.NodeProto:
    """A Gemm node computing inp @ weight.T + bias."""
    return helper.make_node("Gemm", [inp, f"{name}.weight", f"{name}.bias"], [out], name=name,
                            transB=1)


def full_nodes() -> list[onnx.NodeProto]:
    """Graph nodes of the wide CNN."""
    return [
        conv_node("conv1", INPUT_NAME, "conv1_out"),
        helper.make_node("Relu", ["conv1_out"], ["relu1_out"], name="relu1"),
        conv_node("conv2", "relu1_out", "conv2_out"),
        helper.make_node("Relu", ["conv2_out"], ["relu2_out"], name="relu2"),
        helper.make_node("MaxPool", ["relu2_out"], ["pool_out"], name="pool",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool_out"], ["flat_out"], name="flatten", axis=1),
        gemm_node("fc1", "flat_out", "fc1_out"),
        helper.make_node("Relu", ["fc1_out"], ["relu3_out"], name="relu3"),
        gemm_node("fc2", "relu3_out", OUTPUT_NAME),
    ]


def student_nodes() -> list[onnx.NodeProto]:
    """Graph nodes of the student CNN."""
    return [
        conv_node("conv1", INPUT_NAME, "conv1_out"),
        helper.make_node("Relu", ["conv1_out"], ["relu1_out"], name="relu1"),
        helper.make_node("MaxPool", ["relu1_out"], ["pool_out"], name="pool",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool_out"], ["flat_out"], name="flatten", axis=1),
        gemm_node("fc", "flat_out", OUTPUT_NAME),
    ]


def build_onnx(kind: str, version: str, nodes: list[onnx.NodeProto], params: Params) -> onnx.ModelProto:
    """Assemble a checked ONNX model (opset 17, IR 8) with weights as initializers."""
    graph = helper.make_graph(
        nodes,
        name=f"meter_digits_{kind}",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, 8, 8])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", NUM_CLASSES])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(v, np.float32), name=k)
                     for k, v in params.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string=(f"meter-digits {kind} {version}: 8x8 grey digit classifier "
                    "(input 'image' float32 [N,1,8,8] in [0,1], output 'logits' [N,10]); "
                    "trained with numpy on sklearn digits by make_model.py"),
        model_version=int(version.replace(".", "")),
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"edgefleet.model": "meter-digits", "edgefleet.variant": kind,
                                   "edgefleet.version": version})
    onnx.checker.check_model(model, full_check=True)
    return model


def count_params(params: Params) -> int:
    """Total number of scalar parameters."""
    return int(sum(v.size for v in params.values()))


# ------------------------------------------------------------ deterministic I/O


def write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to path via a temp file in the same directory and os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz (readable by np.load) with fixed zip timestamps and order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ validation


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Run a model with onnxruntime on CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def openvino_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Run a model with OpenVINO on CPU at FP32 inference precision."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled({INPUT_NAME: x})[compiled.output(0)])


def int8_agreement(path: Path, calibration: np.ndarray, x: np.ndarray) -> float:
    """Top-1 agreement between FP32 and a static INT8 QDQ quantisation (not saved)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{INPUT_NAME: calibration[i:i + 32]} for i in range(0, len(calibration), 32)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared, qpath = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(path), str(prepared))
        quantize_static(str(prepared), str(qpath), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        q = ort_logits(qpath, x)
    return float(np.mean(q.argmax(1) == ort_logits(path, x).argmax(1)))


# ------------------------------------------------------------------------ main


def train_version(recipe: Recipe, x: np.ndarray, y: np.ndarray) -> tuple[Params, Params]:
    """Train the full model, then distil the student from it, for one version."""
    rng = np.random.default_rng(recipe.seed)
    full = init_full(rng)
    train(full, full_forward, full_backward, lambda z, t, _a: hard_loss_grad(z, t),
          x, y, np.zeros(len(x)), recipe.full_epochs, recipe.full_lr, recipe.batch_size, rng)
    teacher = predict(full_forward, full, x)
    student = init_student(rng)
    train(student, student_forward, student_backward, distill_loss_grad,
          x, y, teacher, recipe.student_epochs, recipe.student_lr, recipe.batch_size, rng)
    return full, student


def main() -> int:
    """Make every file, validate the models and print a report."""
    x, y = load_dataset()
    x_train, y_train, x_eval, y_eval = split_dataset(x, y)
    calibration = pick_calibration(x_train)
    written: list[Path] = []
    for name, arrays in (("calibration.npz", {"input": calibration}),
                         ("evaluation.npz", {"input": x_eval, "label": y_eval})):
        write_atomic(DATA_DIR / name, npz_bytes(arrays))
        written.append(DATA_DIR / name)
    print(f"split: train={len(x_train)} eval={len(x_eval)} calibration={len(calibration)}")

    accuracy: dict[tuple[str, str], float] = {}
    t0 = time.perf_counter()
    for recipe in RECIPES:
        t_version = time.perf_counter()
        full, student = train_version(recipe, x_train, y_train)
        print(f"{recipe.version}: trained in {time.perf_counter() - t_version:.1f}s "
              f"(full {count_params(full)} params, student {count_params(student)} params)")
        for kind, nodes, params, fwd in (("full", full_nodes(), full, full_forward),
                                         ("student", student_nodes(), student, student_forward)):
            path = HERE / recipe.version / f"{kind}.onnx"
            write_atomic(path, build_onnx(kind, recipe.version, nodes, params).SerializeToString())
            written.append(path)
            logits = ort_logits(path, x_eval)
            np.testing.assert_allclose(logits, predict(fwd, params, x_eval), rtol=1e-4, atol=1e-4)
            ov_diff = float(np.abs(openvino_logits(path, x_eval) - logits).max())
            accuracy[(recipe.version, kind)] = float(np.mean(logits.argmax(1) == y_eval))
            print(f"  {kind:7s} top-1={accuracy[(recipe.version, kind)]:.4f} "
                  f"openvino max|diff|={ov_diff:.2e}")
            if ov_diff > 1e-4:
                raise SystemExit(f"OpenVINO and onnxruntime disagree on {path}: {ov_diff}")
    train_seconds = time.perf_counter() - t0
    print(f"training+export time: {train_seconds:.1f}s")

    for version in ("1.0.0", "1.1.0"):
        agree = int8_agreement(HERE / version / "full.onnx", calibration, x_eval)
        print(f"{version} full INT8 (QDQ static) top-1 agreement with FP32: {agree:.4f}")
        if agree < 0.97:
            raise SystemExit(f"INT8 agreement too low for {version}: {agree}")

    failures = [
        f"{v} {k} accuracy {a:.4f} < {need}"
        for (v, k), a in accuracy.items()
        for need in [0.95 if (v, k) == ("1.1.0", "full") else 0.90 if k == "student" else 0.0]
        if a < need
    ] + [f"1.1.0 {k} less accurate than 1.0.0" for k in ("full", "student")
         if accuracy[("1.1.0", k)] < accuracy[("1.0.0", k)]]

    print("files:")
    for path in written:
        print(f"  {sha256_file(path)}  {path.stat().st_size:>9d}  {path.relative_to(HERE.parents[2])}")
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
