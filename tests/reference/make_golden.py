#!/usr/bin/env python3
"""make_golden.py: the correctness oracle for kvtuner.c (docs/DESIGN.md §5).

Hugging Face `transformers` loads the very GGUF that `export` converts
(SmolLM2-135M-Instruct.Q4_1.gguf), dequantizes every tensor to fp32 (Q4_1/Q8_0 -> f32 with
the `gguf` package's dequantizer), un-permutes Q/K from GGUF's interleaved RoPE layout to its
own rotate_half layout, and runs the model in fp32 on the CPU. Its logits and greedy
continuations are what tests/test_golden.c holds the C runner to.

Made with (pin these when regenerating; other versions may shift logits in the last digits):
    python 3.11, torch 2.15.0+cu132 (CPU only), transformers 5.24.0, accelerate 1.15.0,
    gguf 0.19.0, tokenizers 0.23.3, numpy 2.4.6
Run from the repo root:
    python3 tests/reference/make_golden.py [--gguf PATH] [--out tests/golden/smollm2] [--measure-f16]
(--measure-f16 also rounds the weights to f16 and prints how far that moves the logits: the
figure behind test_golden.c's f16 bound.) ~15 CPU-minutes.

Two references per prompt. kvtuner.c keeps K and V in an fp16 cache (its baseline,
docs/DESIGN.md §3), and that rounding alone moves SmolLM2's logits by 1e-2..4e-2 -- more than the 5e-3
the runner must meet, and chaotic (tests/golden/README.md). So the main reference is
transformers with the same rounding: K (after RoPE) and V pass through fp16 inside its
attention, everything else fp32. The plain fp32 run is kept too (top-20 and continuation), and
the C test holds the runner to both.

Output (format in tests/golden/README.md), per prompt NAME:
    NAME.prompt      the prompt text, raw UTF-8 bytes
    NAME.txt         fp16-KV reference: prompt ids, greedy continuation ids (+ top1-top2
                     margins), top-20 (id, logit) at every prompt position
    NAME.logits      fp16-KV reference: float32 little-endian [vocab], last prompt position
    NAME.fp32.txt    plain fp32 reference, same layout as NAME.txt
and index.txt listing the prompt names. Besides writing, the script checks its own premises
(un-permutation, tokenizer, coherence) and prints the figures that justify the C test's bounds.
"""
import argparse
import os
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
def run_prompt(model, ids, eos):
    """Logits at every prompt position, then N_GEN greedy tokens (transformers' own KV cache;
    the fp16 rounding, when on, is applied to the whole K/V at every step, so it is the same
    as rounding once on append). Stops after emitting EOS (kept). Returns the prompt logits,
    the continuation and its top1-top2 margins."""
    out = model(torch.tensor([ids]), use_cache=True)
    prompt_logits, past = out.logits[0].float(), out.past_key_values
    l, gen, margins = prompt_logits[-1], [], []
    for _ in range(N_GEN):
        top2 = torch.topk(l, 2)
        nxt = int(top2.indices[0])
        gen.append(nxt)
        margins.append(float(top2.values[0] - top2.values[1]))
        if nxt == eos:
            break
        out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        l, past = out.logits[0, -1].float(), out.past_key_values
    return prompt_logits, gen, margins


def kv_fp16_hook(enable):
    """Round K (after RoPE) and V to fp16 where attention reads them, as kvtuner.c's fp16 cache
    stores them; on for the main reference, off for the plain fp32 one. (transformers 5.x
    looks eager_attention_forward up as a module global at call time.)"""
    from transformers.models.llama import modeling_llama as ml
    if not hasattr(ml, "_kvt_orig_attn"):
        ml._kvt_orig_attn = ml.eager_attention_forward
    orig = ml._kvt_orig_attn

    def rounded(module, query, key, value, *a, **kw):
        return orig(module, query, key.half().float(), value.half().float(), *a, **kw)
    ml.eager_attention_forward = rounded if enable else orig


def prompts(tok):
    shakespeare = open("data/tinyshakespeare.txt", encoding="utf-8").read()[:320]
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
                                   add_generation_prompt=True, tokenize=False)
    return [
        ("capital", "The capital of France is"),
        ("chatml", chat),
        ("shakespeare", shakespeare),
        ("recipe", "Here is a simple recipe for pancakes. You will need flour, milk, eggs and"),
    ]


def write_txt(path, title, ids, gen, margins, logits):
    top = torch.topk(logits, TOPK)
    with open(path, "w") as f:
        f.write(f"# kvtuner.c golden v1: {title}. transformers {transformers.__version__}, torch {torch.__version__}\n")
        f.write(f"prompt_ids {len(ids)} " + " ".join(map(str, ids)) + "\n")
        f.write(f"gen_ids {len(gen)} " + " ".join(map(str, gen)) + "\n")
        f.write(f"gen_margin {len(margins)} " + " ".join(f"{m:.4f}" for m in margins) + "\n")
        f.write(f"topk {len(ids)} {TOPK}\n")
        for p in range(len(ids)):
            pairs = " ".join(f"{int(i)} {float(v):.9g}" for i, v in zip(top.indices[p], top.values[p]))
            f.write(f"{p} {pairs}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default="tests/golden/smollm2")
    ap.add_argument("--measure-f16", action="store_true", help="also measure f16 weights (the f16 bound)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)

    tok, model = load(args.gguf)
    check_unpermute(args.gguf, model)
    eos = tok.eos_token_id
    os.makedirs(args.out, exist_ok=True)

    names = []
    for name, text in prompts(tok):
        ids = tok(text, add_special_tokens=False).input_ids   # SmolLM2 adds no BOS
        assert ids == smollm_pretokenized_ids(tok, text), f"{name}: GPT-2 vs smollm pre-tokenizer disagree"
        with open(os.path.join(args.out, name + ".prompt"), "wb") as f:
            f.write(text.encode("utf-8"))
        ref = {}
        for kv16 in (False, True):
            kv_fp16_hook(kv16)
            ref[kv16] = run_prompt(model, ids, eos)
        kv_fp16_hook(False)
        (l32, g32, m32), (l16, g16, m16) = ref[False], ref[True]
        write_txt(os.path.join(args.out, name + ".txt"), f"{name}, fp32 with K/V rounded to fp16", ids, g16, m16, l16)
        write_txt(os.path.join(args.out, name + ".fp32.txt"), f"{name}, fp32", ids, g32, m32, l32)
        l16[-1].numpy().astype("<f4").tofile(os.path.join(args.out, name + ".logits"))
        names.append(name)
        agree = next((i for i, (a, b) in enumerate(zip(g16, g32)) if a != b), min(len(g16), len(g32)))
        print(f"{name}: {len(ids)} prompt ids, gen {len(g16)}, min margin {min(m16):.4f}; "
              f"fp16 KV vs fp32: max|dlogit| {(l16 - l32).abs().max().item():.3e}, continuation {agree}/{len(g32)}")
        print("   ", repr(tok.decode(g16)))
    with open(os.path.join(args.out, "index.txt"), "w") as f:
        f.write("".join(n + "\n" for n in names))

    if not args.measure_f16:
        return
    # f16 weights (and the fp16 cache), as the f16 export runs: sets test_golden.c's f16 bound.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())
    kv_fp16_hook(True)
    for name, text in prompts(tok):
        ids = tok(text, add_special_tokens=False).input_ids
        l, g, _ = run_prompt(model, ids, eos)
        ref = open(os.path.join(args.out, name + ".txt")).read().split("\n")
        ref_gen = [int(x) for x in ref[2].split()[2:]]
        top = [[float(x) for x in line.split()[2::2]] for line in ref[5:5 + len(ids)]]
        ids20 = [[int(x) for x in line.split()[1::2]] for line in ref[5:5 + len(ids)]]
        d = max(abs(l[p, i].item() - v) for p in range(len(ids)) for i, v in zip(ids20[p], top[p]))
        agree = next((i for i, (a, b) in enumerate(zip(g, ref_gen)) if a != b), min(len(g), len(ref_gen)))
        print(f"{name}: f16 weights + fp16 KV vs the fp16-KV reference: top-20 max|dlogit| {d:.3e}, continuation {agree}/{len(ref_gen)}")
    kv_fp16_hook(False)


if __name__ == "__main__":
    sys.exit(main())
