"""Reading ONNX models and proving they fit a hardware class (no inference needed)."""
