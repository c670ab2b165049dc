#!/usr/bin/env python3
"""Make the int8 graph of a newsd model folder (embed.precision = "int8") from its fp32 graph, with ONNX Runtime's
own quantization tools (the onnxruntime wheel whose library newsd loads).

    usage: quantize.py MODEL_DIR CALIBRATION_CSV [--outliers N] [--mode hybrid|split|smooth] [--out FILE]

Recipe (chosen by measurement on the corpus; the variants and their figures are in README "int8 embedding"):
1. Outlier channels. Transformer activations have a few channels with a much larger range than the rest (here
   the feed-forward down projection's inputs reach 24 while most channels stay under 5, and the same few hidden
   dimensions reach 30 after LayerNorm). Dynamic int8 quantizes each activation tensor with ONE scale, so those
   few channels cost every other channel its resolution (plain dynamic int8: top-10 overlap with fp32 0.92).
   Per weight MatMul input, the N channels with the largest absolute value on calibration texts are handled:
   - hidden-size inputs (after LayerNorm, attention context): scaled down to the rest's range by an elementwise
     Mul, their weight rows scaled up by the same factor (SmoothQuant-style, Xiao et al. 2023, for those channels
     only: exact in fp32; scales rounded to quarter octaves so the file is the same on every machine);
   - feed-forward inputs (after GELU, 2N channels): split off (LLM.int8()-style, Dettmers et al. 2022):
     X W = (X * rest_mask) W + (X S) W[outl], the small outlier product in fp32 through a one-hot selection S.
   ("--mode split" splits everywhere: a little more accurate, ~25% slower; "--mode smooth" scales everywhere.)
2. quantize_dynamic: per-channel signed 8-bit weights, activations quantized per tensor at run time (u8), MatMul
   only (attention's activation x activation products and everything else stay fp32). ONNX Runtime's MLAS picks
   the int8 kernel for the CPU at run time (AVX2 / AVX-512 / AVX-512 VNNI / AMX).
The word-embedding table and LayerNorms stay fp32.

Writes MODEL_DIR/model.int8.onnx (or --out) and prints what it did. Deterministic for the same inputs.
"""
import argparse
import csv
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def calibration_texts(path, n, max_chars=6144):
    csv.field_size_limit(1 << 30)
    rows = []
    with open(path, encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if len(r.get("text", "")) > 200:
                rows.append((r["title"].strip() + "\n\n" + r["text"].strip())[:max_chars])
    # spread over the whole corpus, deterministic
    step = max(1, len(rows) // n)
    return rows[::step][:n]


def weight_matmuls(model):
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits and n.input[0] not in inits]


def activation_absmax(model_path, model, tokenizer_path, texts, names, max_tokens):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    cal = onnx.ModelProto()
    cal.CopyFrom(model)
    have = {o.name for o in cal.graph.output}
    for name in names:
        if name not in have:
            cal.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(cal.SerializeToString(), so, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(tokenizer_path)
    tok.enable_truncation(max_tokens)
    tok.no_padding()
    inputs = {i.name for i in sess.get_inputs()}
    outs = [o.name for o in sess.get_outputs()]
    amax = {}
    for t in texts:
        e = tok.encode(t)
        ids = np.array([e.ids], np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        for name, v in zip(outs, sess.run(None, feed)):
            if name in names:
                a = np.abs(v).reshape(-1, v.shape[-1]).max(0)
                amax[name] = np.maximum(amax[name], a) if name in amax else a
    return amax


def split_outliers(model, amax, n_outliers, mode="split"):
    """Splits each weight MatMul's input channels into the n largest (fp32 side product) and the rest; or, with
    mode "smooth", scales the n largest down to the rest's range and their weight rows up by the same factor."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    by_input = {}
    for n in weight_matmuls(model):
        by_input.setdefault(n.input[0], []).append(n)
    report = []
    for name, nodes in by_input.items():
        a = amax.get(name)
        if a is None or len(a) <= 4 * n_outliers:
            continue
        k = n_outliers if len(a) <= 512 else 2 * n_outliers
        # ranked on 3 significant digits, so float noise between CPUs does not change the choice
        order = np.argsort(-np.array([float(f"{x:.3g}") for x in a]), kind="stable")
        outl = np.sort(order[:k]).astype(np.int64)
        rest = np.sort(order[k:]).astype(np.int64)
        if mode == "smooth" or (mode == "hybrid" and len(a) <= 512):
            scale = np.ones(len(a), np.float32)
            raw = np.maximum(a[outl] / max(float(a[rest].max()), 1e-6), 1.0)
            scale[outl] = np.exp2(np.round(np.log2(raw) * 4) / 4)
            g.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), name + ".smooth"))
            first = min(list(g.node).index(n) for n in nodes)
            g.node.insert(first, helper.make_node("Mul", [name, name + ".smooth"], [name + ".smoothed"], name=name + ".smooth"))
            for n in nodes:
                w = numpy_helper.to_array(inits[n.input[1]])
                inits[n.input[1]].CopyFrom(numpy_helper.from_array((w * scale[:, None]).astype(np.float32), n.input[1]))
                n.input[0] = name + ".smoothed"
            report.append((name, len(a), k, float(a.max()), float(a[rest].max()), "scaled down"))
            continue
        # No Gather (ONNX Runtime copies a last-axis gather element by element): the quantized product sees the
        # input with the outlier channels zeroed (an elementwise Mul), the fp32 side product reads them through a
        # one-hot selection matrix (a [width, k] MatMul: k/width of the main product's work).
        mask = np.ones(len(a), np.float32)
        mask[outl] = 0.0
        select = np.zeros((len(a), k), np.float32)
        select[outl, np.arange(k)] = 1.0
        g.initializer.extend([numpy_helper.from_array(mask, name + ".rest_mask"), numpy_helper.from_array(select, name + ".outl_select")])
        first = min(list(g.node).index(n) for n in nodes)
        prep = [
            helper.make_node("Mul", [name, name + ".rest_mask"], [name + ".rest"], name=name + ".mask_rest"),
            helper.make_node("MatMul", [name, name + ".outl_select"], [name + ".outl"], name=name + ".select_outl_fp32"),
        ]
        for i, node in enumerate(prep):
            g.node.insert(first + i, node)
        for n in nodes:
            w = numpy_helper.to_array(inits[n.input[1]])
            side_w = n.input[1] + ".outl"
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[outl]), side_w))
            # (the weight keeps its outlier rows: they meet zeros)
            out = n.output[0]
            n.input[0] = name + ".rest"
            n.output[0] = out + ".main"
            at = list(g.node).index(n) + 1
            g.node.insert(at, helper.make_node("MatMul", [name + ".outl", side_w], [out + ".side"], name=n.name + "_outliers_fp32"))
            g.node.insert(at + 1, helper.make_node("Add", [out + ".main", out + ".side"], [out], name=n.name + "_join"))
        report.append((name, len(a), k, float(a.max()), float(a[rest].max()), "split off in fp32"))
    return report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("calibration_csv")
    ap.add_argument("--outliers", type=int, default=8, help="outlier channels split off per 384-wide input (x2 for wider); 0: none")
    ap.add_argument("--mode", choices=["split", "smooth", "hybrid"], default="hybrid")
    ap.add_argument("--only", default="", help="comma-separated weight names' layer kinds to treat (q,k,v,o,i,f); default all")
    ap.add_argument("--texts", type=int, default=64, help="calibration texts")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = os.path.join(args.model_dir, "model.onnx")
    out = args.out or os.path.join(args.model_dir, "model.int8.onnx")
    model = onnx.load(src)
    report = []
    if args.outliers > 0:
        texts = calibration_texts(args.calibration_csv, args.texts)
        names = sorted({n.input[0] for n in weight_matmuls(model)})
        amax = activation_absmax(src, model, os.path.join(args.model_dir, "tokenizer.json"), texts, set(names), args.max_tokens)
        if args.only:
            kinds = set(args.only.split(","))
            keep = {n.input[0] for n in weight_matmuls(model) if n.input[1].split(".")[-2] in kinds}
            amax = {k: v for k, v in amax.items() if k in keep}
        report = split_outliers(model, amax, args.outliers, args.mode)
    tmp = out + ".split.onnx"
    onnx.save(model, tmp)
    keep_fp32 = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name.endswith("_fp32")]
    try:
        quantize_dynamic(
            tmp,
            out + ".tmp",
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=keep_fp32,
        )
    finally:
        os.remove(tmp)
    os.replace(out + ".tmp", out)
    for name, width, k, before, after, how in report:
        print(f"{name}: {k} of {width} outlier channels {how} (max |x| {before:.1f}, the rest {after:.1f})")
    q = onnx.load(out)
    ops = {}
    for n in q.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"wrote {out} ({os.path.getsize(out)} bytes): {sorted(ops.items(), key=lambda x: -x[1])[:6]}")


if __name__ == "__main__":
    sys.exit(main())
