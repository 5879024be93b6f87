"""TensorRT's ONNX parser, as data: which operators and opsets each release accepts.

TensorRT cannot be installed on a CPU-only host, so edgefleet never imports it to
validate a fleet; it checks a class pinned to TensorRT against this table instead.

Source: `docs/operators.md` of github.com/onnx/onnx-tensorrt at the commits named
below (the parser that ships inside TensorRT), and its ModelImporter for the lowest
opset. A class pinned to a version between two rows is checked against the newest
row not above it (TensorRT only adds operators within a major version), and the
check says which row it used. To add a release: copy the operator table's `Y`
rows into `supported` and its `N` rows into `unsupported`, and set the opset range
its header states.

Precision: TensorRT builds FP32 and FP16 from the graph's float tensors; INT8 only
from explicit QuantizeLinear/DequantizeLinear pairs whose zero point is 0 and whose
type is INT8 (symmetric quantization; operators.md: "`y_zero_point` must be 0").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorRTRelease:
    version: str
    source_commit: str
    min_opset: int
    max_opset: int
    supported: frozenset[str]
    unsupported: frozenset[str]


# Precisions TensorRT executes; INT8 only through symmetric INT8 QDQ.
PRECISIONS = ("fp32", "fp16", "int8")
QDQ_ZERO_POINT_TYPES = frozenset({"int8"})

RELEASES: dict[str, TensorRTRelease] = {
    "8.6": TensorRTRelease(
        version="8.6",
        source_commit="6ba67d3428e05f690145373ca87fb8d32f98df45",
        min_opset=7,
        max_opset=17,
        supported=frozenset("""
            Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
            BatchNormalization Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv
            ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu
            Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gemm
            GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
            GroupNormalization HardSigmoid HardSwish Identity If ImageScaler
            InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less
            LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean
            MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or
            PRelu Pad ParametricSoftplus Pow QuantizeLinear RNN RandomNormal RandomNormalLike
            RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
            ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
            Relu Reshape Resize ReverseSequence RoiAlign Round ScaledTanh Scan Scatter
            ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
            Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu
            Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
        """.split()),
        unsupported=frozenset("""
            Bernoulli BitShift BlackmanWindow Compress ConcatFromSequence ConvInteger DFT Det
            DynamicQuantizeLinear HammingWindow HannWindow Hardmax MatMulInteger MaxRoiPool
            MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional
            OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul STFT SequenceAt
            SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength
            SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringNormalizer TfIdfVectorizer
            Unique
        """.split()),
    ),
    "10.0": TensorRTRelease(
        version="10.0",
        source_commit="1b4dafeb199f7b7b7071d38fdebaea475e91b403",
        min_opset=9,
        max_opset=20,
        supported=frozenset("""
            Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
            BatchNormalization Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv
            ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu
            Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gelu
            Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
            GroupNormalization HardSigmoid HardSwish Hardmax Identity If ImageScaler
            InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less
            LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean
            MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot
            Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RNN RandomNormal RandomNormalLike
            RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
            ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
            Relu Reshape Resize ReverseSequence RoiAlign Round ScaledTanh Scan Scatter
            ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
            Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu
            Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
        """.split()),
        unsupported=frozenset("""
            AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor
            BlackmanWindow CenterCropPad Col2Im Compress ConcatFromSequence ConvInteger DFT Det
            DynamicQuantizeLinear HammingWindow HannWindow ImageDecoder MatMulInteger MaxRoiPool
            MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional
            OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch STFT
            SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert
            SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat
            StringNormalizer StringSplit TfIdfVectorizer Unique
        """.split()),
    ),
    "10.1": TensorRTRelease(
        version="10.1",
        source_commit="96e781103cfc4adf4a6bb557e94bac8e693f6f4c",
        min_opset=9,
        max_opset=20,
        supported=frozenset("""
            Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
            BatchNormalization Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv
            ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout
            Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements
            GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
            GreaterOrEqual GridSample GroupNormalization HardSigmoid HardSwish Hardmax Identity
            If ImageScaler InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization
            LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool MatMul Max
            MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression
            NonZero Not OneHot Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RNN
            RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal
            ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
            ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign
            Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid
            Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
            Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where
            Xor
        """.split()),
        unsupported=frozenset("""
            AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor
            BlackmanWindow CenterCropPad Col2Im Compress ConcatFromSequence ConvInteger DFT Det
            DynamicQuantizeLinear HammingWindow HannWindow ImageDecoder MatMulInteger MaxRoiPool
            MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional
            OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch STFT
            SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert
            SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat
            StringNormalizer StringSplit TfIdfVectorizer Unique
        """.split()),
    ),
}


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2])


def release_for(version: str) -> TensorRTRelease | None:
    """The newest table row of the same major version not above `version`."""
    want = _key(version)
    rows = [r for r in RELEASES.values() if _key(r.version)[0] == want[0] and _key(r.version) <= want]
    return max(rows, key=lambda r: _key(r.version)) if rows else None
