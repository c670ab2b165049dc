#!/usr/bin/env python3
"""Check and time a newsd model folder with Python ONNX Runtime (CPU) + HF tokenizers.

usage:
  ort_check.py check MODEL_DIR REFERENCE_JSON [THREADS=1]
      embed every text of tests/fixtures/reference_vectors.json (masked mean pooling + L2 normalisation) and print
      the cosine to each reference vector; exit 1 if any is below 0.9999.
  ort_check.py bench MODEL_DIR NewsArticles.csv [THREADS=1] [N=1000] [BATCH=32] [RUNS=2]
      texts/s on the first N real articles with a body over 200 characters (title + "\\n" + text, as
      bench/python-baseline.sh does), truncated to the tokenizer's max length, in corpus order and sorted by length.
      Prints one JSON line per ordering.

Needs: numpy, onnxruntime, tokenizers.
"""
import csv
import json
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def session(model_dir, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(os.path.join(model_dir, "model.onnx"), so, providers=["CPUExecutionProvider"])


def tokenizer(model_dir):
    return Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))


def embed(sess, tok, texts):
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    types = np.array([e.type_ids for e in enc], dtype=np.int64)
    (h,) = sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    m = mask[:, :, None].astype(np.float32)
    v = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def check(model_dir, ref_path, threads=1):
    ref = json.load(open(ref_path, encoding="utf-8"))
    sess, tok = session(model_dir, threads), tokenizer(model_dir)
    texts = [it["text"] for it in ref["items"]]
    want = np.array([it["vector"] for it in ref["items"]], dtype=np.float64)
    # one by one (no padding) and all in one padded batch: both must match
    single = np.concatenate([embed(sess, tok, [t]) for t in texts]).astype(np.float64)
    batched = embed(sess, tok, texts).astype(np.float64)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    worst = 1.0
    id_mismatch = 0
    for i, t in enumerate(texts):
        if "input_ids" in ref["items"][i] and tok.encode(t).ids != ref["items"][i]["input_ids"]:
            id_mismatch += 1
            print(f"{i:2d} input_ids differ from the reference tokenizer's")
        c1 = float(single[i] @ want[i] / np.linalg.norm(single[i]))
        c2 = float(batched[i] @ want[i] / np.linalg.norm(batched[i]))
        ntok = len(tok.encode(t).ids)
        print(f"{i:2d} tokens={ntok:3d} cos_single={c1:.8f} cos_batched={c2:.8f} "
              f"maxdiff={np.abs(single[i] - want[i]).max():.2e}  {t[:50]!r}")
        worst = min(worst, c1, c2)
    print(json.dumps({"what": "ort_check", "items": len(texts), "min_cosine": round(worst, 10), "max_1_minus_cos": float(f"{1 - worst:.3g}"), "input_id_mismatches": id_mismatch,
                      "onnxruntime": ort.__version__}))
    if worst < 0.9999:
        raise SystemExit(f"FAIL: min cosine {worst} < 0.9999")
    if id_mismatch:
        raise SystemExit(f"FAIL: {id_mismatch} texts tokenized differently")


def bench(model_dir, csv_path, threads=1, n=1000, batch=32, runs=2):
    csv.field_size_limit(10**9)
    rows = [r for r in csv.DictReader(open(csv_path, encoding="utf-8")) if len(r["text"]) > 200]
    texts = [r["title"] + "\n" + r["text"] for r in rows[:n]]
    sess, tok = session(model_dir, threads), tokenizer(model_dir)
    t0 = time.perf_counter()
    ntok = [sum(e.attention_mask) for e in tok.encode_batch(texts)]  # real tokens (encode_batch pads)
    tok_s = time.perf_counter() - t0
    embed(sess, tok, texts[:batch])  # warm-up
    orders = {
        "corpus_order": list(range(len(texts))),
        "sorted_by_length": sorted(range(len(texts)), key=lambda i: -ntok[i]),
    }
    for name, order in orders.items():
        ts = [texts[i] for i in order]
        padded = sum(max(ntok[order[j]] for j in range(s, min(s + batch, len(order)))) * (min(s + batch, len(order)) - s)
                     for s in range(0, len(order), batch))
        best, cpu = [], []
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            for s in range(0, len(ts), batch):
                embed(sess, tok, ts[s:s + batch])
            best.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print(json.dumps({"what": "embed", "impl": f"python onnxruntime {ort.__version__} fp32 model.onnx",
                          "order": name, "threads": threads, "texts": len(texts), "batch": batch,
                          "tokens_mean": round(statistics.mean(ntok), 1),
                          "padded_tokens_per_text": round(padded / len(texts), 1),
                          "tokenize_all_s": round(tok_s, 2), "run_s": [round(r, 2) for r in best],
                          "texts_per_s_best": round(len(texts) / min(best), 2),
                          "cpu_s": [round(c, 2) for c in cpu],
                          "texts_per_cpu_s_best": round(len(texts) / min(cpu), 2)}), flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) >= 3 and a[0] == "check":
        check(a[1], a[2], *(int(x) for x in a[3:4]))
    elif len(a) >= 3 and a[0] == "bench":
        bench(a[1], a[2], *(int(x) for x in a[3:7]))
    else:
        raise SystemExit(__doc__)
