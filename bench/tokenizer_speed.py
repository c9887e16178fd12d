#!/usr/bin/env python3
"""Encode speed, ours beside the Hugging Face `tokenizers` library, on the same text and one
thread each (MB of UTF-8 text per CPU second, best of 3: process CPU time, which stays
comparable on a busy shared machine; on an idle one it equals wall time).

    make build/tokenizer_speed        (any BUILD=dir: the script reads $BUILD, default build)
    python3 bench/tokenizer_speed.py [TEXT]     (default data/tinyshakespeare.txt)

Two tokenizers: Llama-3 (data/llama3/tokenizer.json) and SmolLM2 (the GGUF in
models/; `tokenizers` gets the same vocab and merges through transformers' GGUF loader, with
the model's Digits + ByteLevel pre-tokenizer). Two ways of feeding the text: whole, as one
string, and cut into 2,000-character chunks (`tokenizers`: encode_batch, RAYON_NUM_THREADS=1).
"""
import os
import subprocess
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"          # before tokenizers starts its thread pool
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer, pre_tokenizers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "data", "tinyshakespeare.txt")
LLAMA3 = os.path.join(ROOT, "data", "llama3", "tokenizer.json")
GGUF = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
BIN = os.path.join(ROOT, os.environ.get("BUILD", "build"), "tokenizer_speed")


def best(f, n=3):
    times = []
    for _ in range(n):
        t0 = time.process_time()
        f()
        times.append(time.process_time() - t0)
    return min(times)


def smollm2_reference():
    from transformers import AutoTokenizer
    d, name = os.path.split(GGUF)
    tok = Tokenizer.from_str(AutoTokenizer.from_pretrained(d, gguf_file=name).backend_tokenizer.to_str())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tok


def main():
    text = open(TEXT, encoding="utf-8").read()
    mb = len(text.encode("utf-8")) / 1e6
    chunks = [text[i:i + 2000] for i in range(0, len(text), 2000)]
    print(f"text: {TEXT} ({mb:.2f} MB)")
    for name, src, load in [("llama3", LLAMA3, lambda: Tokenizer.from_file(LLAMA3)), ("smollm2", GGUF, smollm2_reference)]:
        t0 = time.process_time()
        tok = load()
        load_s = time.process_time() - t0
        whole = best(lambda: tok.encode(text, add_special_tokens=False))
        batch = best(lambda: tok.encode_batch(chunks, add_special_tokens=False))
        print(f"{name:8s} tokenizers: load {load_s:.2f} s, whole {mb / whole:6.2f} MB/s, 2000-char chunks {mb / batch:6.2f} MB/s")
        out = subprocess.run([BIN, src, TEXT, "3"], capture_output=True, text=True, check=True).stdout.split()
        v = dict(zip(out[::2], out[1::2]))
        print(f"{name:8s} kvtuner.c : load {float(v['load_s']):.2f} s, whole {float(v['whole_mb_s']):6.2f} MB/s, "
              f"2000-char chunks {float(v['chunks_mb_s']):6.2f} MB/s")


if __name__ == "__main__":
    main()
