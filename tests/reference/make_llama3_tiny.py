#!/usr/bin/env python3
"""make_llama3_tiny.py: a small random-weight Llama-3-shaped Hugging Face checkpoint, and its
golden logits from transformers.

The model: LlamaForCausalLM, 2 layers, dim 64, 4 query heads / 2 KV heads (GQA), head_dim 16,
SwiGLU 128, rope_theta 500000, Llama-3.1 rope scaling (factor 8, low 1, high 4, original
context 64: so small that all three frequency bands -- kept, smoothed, divided by 8 -- occur at
head_dim 16 and the prompts run past position 64), untied lm_head, the real Llama-3 tokenizer
(data/llama3/tokenizer.json, vocab 128256).

Two jobs, so that CI needs no torch:

  --checkpoint DIR   (plain python3, no numpy/torch: what `make` runs, in CI too)
      writes DIR/config.json, two safetensors shards + model.safetensors.index.json, and the
      tokenizer files. The weights come from SHAKE-256 of "seed/tensor name", turned into
      floats by bit masks on one big integer (sign, mantissa and one exponent bit random, the
      rest fixed), so they are reproducible bit for bit on any machine and fast in pure Python.
      The dtypes are mixed on purpose -- embeddings and MLP F16, attention and lm_head BF16,
      norms F32 -- to run every dtype path of export's safetensors reader. If the golden folder
      holds checkpoint.sha256, the files written must match it (a drifted generator fails here,
      not as a mysterious logit mismatch).

  --golden OUT        (needs torch + transformers: a dev machine; the outputs are committed)
      loads the checkpoint with transformers in fp32 and writes the golden files of
      tests/golden/README.md to OUT (default tests/golden/llama3_tiny): as make_golden.py, the
      main reference rounds K/V to fp16 as the runner's cache does, NAME.fp32.txt is plain
      fp32. Plus inv_freq.txt
      (transformers' rope inverse frequencies for this config) and checkpoint.sha256. It also
      checks that the test can fail: turning the rope scaling off, or skipping the Q/K
      un-permutation, must move the logits far more than the 5e-3 bound.

Made with python 3.11, torch 2.15.0+cu132 (CPU), transformers 5.24.0, tokenizers 0.23.3.
Run from the repo root:
    python3 tests/reference/make_llama3_tiny.py --checkpoint models/llama3-tiny-hf
    python3 tests/reference/make_llama3_tiny.py --checkpoint models/llama3-tiny-hf --golden tests/golden/llama3_tiny
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import sys

SEED = 20250204                     # KVTuner's arXiv id, 2502.04420
TOKENIZER_DIR = "data/llama3"
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "hidden_act": "silu",
    "vocab_size": 128256,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "torch_dtype": "bfloat16",
}
N_GEN = 48
TOPK = 20

# ---- deterministic random weights without numpy ------------------------------------------
# Per dtype: (bytes per element, mask of the random bits, bit position of the exponent's low bit).
# Random: the sign, the exponent's lowest bit, the mantissa. Fixed: the rest of the exponent,
# so |w| lies in [2^e, 2^(e+2)) for an even biased exponent field.
DTYPES = {"F16": (2, 0x87FF, 10, 15), "BF16": (2, 0x80FF, 7, 127), "F32": (4, 0x80FFFFFF, 23, 127)}


def random_tensor(name, dtype, n, log2_lo, signed=True):
    """n elements with |w| in [2^log2_lo, 2^(log2_lo+2)); log2_lo must be odd (the biases are odd,
    the low exponent bit is the random one). Raw little-endian bytes."""
    size, mask, shift, bias = DTYPES[dtype]
    field = log2_lo + bias
    assert field % 2 == 0 and field > 0
    if not signed:
        mask &= ~(1 << (8 * size - 1))
    raw = hashlib.shake_256(f"kvtuner.c llama3-tiny {SEED} {name}".encode()).digest(size * n)
    fmt = "<H" if size == 2 else "<I"
    m = int.from_bytes(struct.pack(fmt, mask) * n, "little")
    f = int.from_bytes(struct.pack(fmt, field << shift) * n, "little")
    return ((int.from_bytes(raw, "little") & m) | f).to_bytes(size * n, "little")


def tensors():
    """(shard, name, dtype, shape, log2 of the smallest magnitude, signed) for every tensor.
    Magnitudes: matrices ~1/sqrt(fan_in)-ish so activations neither vanish nor explode; Q/K
    larger so attention is peaked and RoPE (and its scaling) matter to the logits."""
    c = CONFIG
    d, h, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    qd, kvd = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    out = [(1, "model.embed_tokens.weight", "F16", [v, d], -3, True)]
    for l in range(c["num_hidden_layers"]):
        s, p = 1 + l, f"model.layers.{l}."
        out += [(s, p + "input_layernorm.weight", "F32", [d], -1, False),
                (s, p + "self_attn.q_proj.weight", "BF16", [qd, d], -3, True),
                (s, p + "self_attn.k_proj.weight", "BF16", [kvd, d], -3, True),
                (s, p + "self_attn.v_proj.weight", "BF16", [kvd, d], -5, True),
                (s, p + "self_attn.o_proj.weight", "BF16", [d, qd], -5, True),
                (s, p + "post_attention_layernorm.weight", "F32", [d], -1, False),
                (s, p + "mlp.gate_proj.weight", "F16", [h, d], -3, True),
                (s, p + "mlp.up_proj.weight", "F16", [h, d], -3, True),
                (s, p + "mlp.down_proj.weight", "F16", [d, h], -5, True)]
    out += [(2, "model.norm.weight", "F32", [d], -1, False),
            (2, "lm_head.weight", "BF16", [v, d], -3, True)]
    return out


def write_safetensors(path, items):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, dtype, shape, data in items:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return off


FILES = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
         "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"]


def make_checkpoint(out):
    os.makedirs(out, exist_ok=True)
    shards = {1: [], 2: []}
    for shard, name, dtype, shape, lo, signed in tensors():
        n = 1
        for s in shape:
            n *= s
        shards[shard].append((name, dtype, shape, random_tensor(name, dtype, n, lo, signed)))
    weight_map, total = {}, 0
    for s, items in shards.items():
        fname = f"model-0000{s}-of-00002.safetensors"
        total += write_safetensors(os.path.join(out, fname), items)
        weight_map.update({name: fname for name, _, _, _ in items})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(TOKENIZER_DIR, name), os.path.join(out, name))
    with open(os.path.join(out, "config.json"), "w") as f:     # last: the Makefile's target
        json.dump(CONFIG, f, indent=2, sort_keys=True)
    print(f"wrote {out}: {total / 1e6:.1f} MB of weights in 2 shards")


def checksums(ckpt):
    lines = []
    for name in FILES:
        with open(os.path.join(ckpt, name), "rb") as f:
            lines.append(f"{hashlib.sha256(f.read()).hexdigest()}  {name}\n")
    return "".join(lines)


def verify_checkpoint(ckpt, golden):
    path = os.path.join(golden, "checkpoint.sha256")
    if not os.path.exists(path):
        return
    if checksums(ckpt) != open(path).read():
        os.remove(os.path.join(ckpt, "config.json"))          # so that make retries
        sys.exit(f"error: {ckpt}: the generated checkpoint differs from {path} "
                 "(the generator changed: regenerate the golden files with --golden)")
    print(f"{ckpt}: matches {path}")


# ---- golden logits (torch + transformers) ---------------------------------------------------
# As in make_golden.py: the runner keeps K/V in an fp16 cache, which alone moves this model's
# logits by ~3e-2, so the main reference rounds K (after RoPE) and V to fp16 where transformers'
# attention reads them; NAME.fp32.txt is the plain fp32 run.
CHAT_QUESTIONS = ["What is the capital of France?", "Why is the sky blue? Explain briefly.",
                  "Write a haiku about the sea.", "Name three primary colors.", "Tell me a joke."]
MIN_MARGIN = 0.01   # greedy top1-top2 gap every continuation step must keep (random weights tie often)


def kv_fp16_hook(enable):
    from transformers.models.llama import modeling_llama as ml
    if not hasattr(ml, "_kvt_orig_attn"):
        ml._kvt_orig_attn = ml.eager_attention_forward
    orig = ml._kvt_orig_attn

    def rounded(module, query, key, value, *a, **kw):
        return orig(module, query, key.half().float(), value.half().float(), *a, **kw)
    ml.eager_attention_forward = rounded if enable else orig


def make_golden(ckpt, out):
    import torch
    import transformers
    from transformers import AutoTokenizer, LlamaForCausalLM
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    assert not model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    os.makedirs(out, exist_ok=True)
    eos = set(CONFIG["eos_token_id"])

    inv = model.model.rotary_emb.inv_freq.tolist()
    with open(os.path.join(out, "inv_freq.txt"), "w") as f:
        f.write(f"# transformers {transformers.__version__} LlamaRotaryEmbedding.inv_freq for config.json of make_llama3_tiny.py\n")
        f.write(f"inv_freq {len(inv)} " + " ".join(f"{x:.9e}" for x in inv) + "\n")

    @torch.no_grad()
    def run_prompt(ids):
        o = model(torch.tensor([ids]), use_cache=True)
        pl, past = o.logits[0].float(), o.past_key_values
        l, gen, margins = pl[-1], [], []
        for _ in range(N_GEN):
            top2 = torch.topk(l, 2)
            nxt = int(top2.indices[0])
            gen.append(nxt)
            margins.append(float(top2.values[0] - top2.values[1]))
            if nxt in eos:
                break
            o = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            l, past = o.logits[0, -1].float(), o.past_key_values
        return pl, gen, margins

    def both(ids):
        kv_fp16_hook(False)
        r32 = run_prompt(ids)
        kv_fp16_hook(True)
        r16 = run_prompt(ids)
        kv_fp16_hook(False)
        return r16, r32

    def write_txt(path, title, ids, gen, margins, logits):
        top = torch.topk(logits, TOPK)
        with open(path, "w") as f:
            f.write(f"# kvtuner.c golden v1: llama3-tiny {title}. transformers {transformers.__version__}, torch {torch.__version__}\n")
            f.write(f"prompt_ids {len(ids)} " + " ".join(map(str, ids)) + "\n")
            f.write(f"gen_ids {len(gen)} " + " ".join(map(str, gen)) + "\n")
            f.write(f"gen_margin {len(margins)} " + " ".join(f"{m:.4f}" for m in margins) + "\n")
            f.write(f"topk {len(ids)} {TOPK}\n")
            for p in range(len(ids)):
                f.write(f"{p} " + " ".join(f"{int(i)} {float(v):.9g}" for i, v in zip(top.indices[p], top.values[p])) + "\n")

    # The plain prompt runs past the original context (64) the scaling is about; the chat prompt
    # is the first question whose greedy continuation has no near tie (a deterministic choice).
    shakespeare = open("data/tinyshakespeare.txt", encoding="utf-8").read()[:330]
    chats = [tok.apply_chat_template([{"role": "system", "content": "You are a helpful assistant."},
                                      {"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
             for q in CHAT_QUESTIONS]
    results = []
    for name, texts in (("plain", ["<|begin_of_text|>" + shakespeare]), ("chat", chats)):
        for text in texts:
            ids = tok(text, add_special_tokens=False).input_ids
            assert ids[0] == 128000, f"{name}: prompt must start with <|begin_of_text|>"
            r16, r32 = both(ids)
            print(f"{name}: {len(ids)} prompt ids, gen {len(r16[1])}, min margin {min(r16[2]):.4f}")
            if min(r16[2]) >= MIN_MARGIN and min(r32[2]) >= MIN_MARGIN:
                break
        else:
            sys.exit(f"error: no {name} prompt without a near tie")
        (l16, g16, m16), (l32, g32, m32) = r16, r32
        agree = next((i for i, (a, b) in enumerate(zip(g16, g32)) if a != b), min(len(g16), len(g32)))
        print(f"    positions 0..{len(ids) + len(g16) - 1}; fp16 KV vs fp32: max|dlogit| {(l16 - l32).abs().max().item():.3e}, "
              f"continuation {agree}/{len(g32)}; last logits std {l16[-1].std():.3f}")
        with open(os.path.join(out, name + ".prompt"), "wb") as f:
            f.write(text.encode("utf-8"))
        l16[-1].numpy().astype("<f4").tofile(os.path.join(out, name + ".logits"))
        write_txt(os.path.join(out, name + ".txt"), f"{name}, fp32 with K/V rounded to fp16", ids, g16, m16, l16)
        write_txt(os.path.join(out, name + ".fp32.txt"), f"{name}, fp32", ids, g32, m32, l32)
        results.append((name, ids, l32))
    with open(os.path.join(out, "index.txt"), "w") as f:
        f.write("".join(n + "\n" for n, _, _ in results))
    with open(os.path.join(out, "checkpoint.sha256"), "w") as f:
        f.write(checksums(ckpt))

    # The test must be able to fail: each mistake export/run could make moves the logits by
    # far more than the 5e-3 bound.
    @torch.no_grad()
    def worst(tag):
        d = max((model(torch.tensor([ids])).logits[0] - la).abs().max().item() for _, ids, la in results)
        print(f"  {tag}: max|dlogit| {d:.3f}")
        assert d > 0.1, f"{tag} does not move the logits: the golden test could not catch it"

    print("discrimination (each must be >> 5e-3):")
    rot = model.model.rotary_emb
    saved = rot.inv_freq.clone()
    hd = CONFIG["head_dim"]
    rot.inv_freq.copy_(1.0 / (CONFIG["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)))
    worst("rope scaling ignored")
    rot.inv_freq.copy_(saved)
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                w = proj.weight
                n_head = w.shape[0] // hd
                proj.weight.copy_(w.reshape(n_head, 2, hd // 2, -1).transpose(1, 2).reshape(w.shape).clone())
    worst("Q/K rows left in the wrong RoPE order")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="models/llama3-tiny-hf", help="checkpoint folder to write")
    ap.add_argument("--golden", help="also write golden files here (needs torch + transformers)")
    ap.add_argument("--golden-dir", default="tests/golden/llama3_tiny", help="where checkpoint.sha256 is checked")
    args = ap.parse_args()
    make_checkpoint(args.checkpoint)
    if args.golden:
        make_golden(args.checkpoint, args.golden)
    else:
        verify_checkpoint(args.checkpoint, args.golden_dir)


if __name__ == "__main__":
    main()
