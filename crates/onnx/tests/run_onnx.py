#!/usr/bin/env python3
"""Checks and runs an ONNX model for effnet's tests, independently of effnet.

    run_onnx.py MODEL INPUT.npy OUT_DIR RUNTIME

Checks the model with onnx.checker (full check) and strict shape inference, then runs INPUT.npy through it
with RUNTIME (`ort`: ONNX Runtime on the CPU; `reference`: onnx's reference evaluator), writes each output
to OUT_DIR/NAME.npy and prints a JSON report: the operator domains and types, the inferred output shapes
and the metadata.
"""
import json, os, sys

import numpy as np
import onnx


def main():
    model_path, input_path, out_dir, runtime = sys.argv[1:5]
    model = onnx.load(model_path)  # also loads external data beside the model
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    x = np.load(input_path)
    if runtime == "ort":
        import onnxruntime as ort
        session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        outputs = session.run(None, {"input": x})
    elif runtime == "reference":
        from onnx.reference import ReferenceEvaluator
        evaluator = ReferenceEvaluator(model)
        names = list(evaluator.output_names)
        outputs = evaluator.run(None, {"input": x})
    else:
        sys.exit(f"unknown runtime {runtime}")
    for name, value in zip(names, outputs):
        np.save(os.path.join(out_dir, name + ".npy"), np.ascontiguousarray(value, dtype=np.float32))
    shape = lambda t: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.type.tensor_type.shape.dim]
    print(json.dumps({
        "domains": sorted({n.domain for n in model.graph.node}),
        "operators": sorted({n.op_type for n in model.graph.node}),
        "outputs": {o.name: shape(o) for o in inferred.graph.output},
        "metadata": {p.key: p.value for p in model.metadata_props},
        "opset": [o.version for o in model.opset_import],
    }))


if __name__ == "__main__":
    main()
