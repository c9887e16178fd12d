#!/usr/bin/env python3
"""make_corpus.py: the seed corpus of the fuzz harnesses (tests/fuzz/corpus/NAME/), a few
small valid files per format. Run from the repository root after `make` (it calls
export/export); the output is committed, so this only runs again when a format changes.

  tokenizer_json  Llama-3's tokenizer.json cut down to its 256 byte tokens, the first 200
                  merges among them and 10 special tokens; its printable ASCII bytes and 40
                  merges (a vocabulary without some bytes) with SmolLM2's pre-tokenizer
                  (Digits + ByteLevel) and ChatML specials
  tiktoken        that vocabulary as Meta's tokenizer.model
  modelbin        `export --random micro --tokenizer` each of the three (f32, f16, bf16)
  tokblob         the tokenizer sections of those model.bin files
  gguf            llama-architecture GGUFs of the micro dims: every GGUF value type in the
                  metadata, tensors in F32, F16, BF16, Q8_0, Q4_0 and Q4_1, the cut-down
                  ASCII tokenizer with token types (smollm and llama-bpe pre-tokenizers)
  safetensors     small files in F32, F16 and BF16 with __metadata__
  kvconfig        two KVTuner presets for Llama-3-8B (per layer, per head) and small configs
                  in every accepted YAML and JSON form
  prompt          texts: English, digits, code, several scripts, emoji, control characters,
                  special-token strings
  quantize        option byte + float32 groups (quant/quantize.c)
"""
import base64
import json
import os
import random
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
DATA = next(d for d in (os.path.join(ROOT, "data"), os.path.join(ROOT, "..", "shared", "data"))
            if os.path.isdir(d))
EXPORT = os.path.join(ROOT, "export", "export")
rng = random.Random(17)


def write(kind, name, data):
    os.makedirs(os.path.join(OUT, kind), exist_ok=True)
    with open(os.path.join(OUT, kind, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def gpt2_bytes_to_unicode():
    """GPT-2's byte -> printable code point map (tokenizer/bpe.c: byte_to_unicode)."""
    out = {}
    for b in range(256):
        if b <= 32: cp = 256 + b
        elif 127 <= b <= 160: cp = 289 + b - 127
        elif b == 173: cp = 323
        else: cp = b
        out[b] = chr(cp)
    return out


# ---- tokenizers ---------------------------------------------------------------------------

def mini_vocab(ascii_only=False, n_merges=200):
    """Llama-3's byte tokens (all 256, or the printable ASCII ones: a vocabulary that lacks
    bytes), its first n_merges merges among them, in Llama-3's id order."""
    full = json.load(open(os.path.join(DATA, "llama3", "tokenizer.json"), encoding="utf-8"))
    vocab, merges = full["model"]["vocab"], full["model"]["merges"]
    b2u = gpt2_bytes_to_unicode()
    kept = set(b2u[b] for b in range(256) if not ascii_only or 32 <= b < 127)
    kept_merges = []
    for m in merges:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in kept and b in kept and a + b in vocab:
            kept.add(a + b)
            kept_merges.append([a, b])
            if len(kept_merges) == n_merges:
                break
    order = sorted(kept, key=lambda s: vocab[s])
    return full, {s: i for i, s in enumerate(order)}, kept_merges


def tokenizer_json(full, vocab, merges, style):
    t = json.loads(json.dumps(full))          # deep copy: keep every other field as it is
    n = len(vocab)
    if style == "llama3":
        names = [a["content"] for a in full["added_tokens"][:10]]
    else:
        names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>"]
        t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
        t["model"]["ignore_merges"] = False
    t["added_tokens"] = [{"id": n + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, s in enumerate(names)]
    t["model"]["vocab"] = vocab
    t["model"]["merges"] = merges if style == "llama3" else [" ".join(m) for m in merges]
    t.pop("post_processor", None)
    return json.dumps(t, ensure_ascii=False, indent=1)


def tiktoken_model(vocab):
    u2b = {v: k for k, v in gpt2_bytes_to_unicode().items()}
    lines = []
    for s, rank in sorted(vocab.items(), key=lambda kv: kv[1]):
        raw = bytes(u2b[c] for c in s)
        lines.append("%s %d\n" % (base64.b64encode(raw).decode(), rank))
    return "".join(lines)


# ---- GGUF ---------------------------------------------------------------------------------

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
SCALAR = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i", T_F32: "<f",
          T_BOOL: "<?", T_U64: "<Q", T_I64: "<q", T_F64: "<d"}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gvalue(t, v):
    if t == T_STR:
        return gstr(v)
    if t == T_ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gvalue(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def f16(x): return struct.pack("<e", x)
def bf16(x): return struct.pack("<f", x)[2:]


def quantize(kind, xs):
    """ggml block formats (32 values per block), as export/gguf.c reads them."""
    out = b""
    for i in range(0, len(xs), 32):
        blk = xs[i:i + 32]
        if kind == "Q8_0":
            d = max(abs(x) for x in blk) / 127 or 1.0
            out += f16(d) + bytes(((round(x / d)) & 0xff) for x in blk)
        elif kind == "Q4_0":
            d = max(abs(x) for x in blk) / 8 or 1.0
            q = [min(15, max(0, round(x / d) + 8)) for x in blk]
            out += f16(d) + bytes(q[j] | q[j + 16] << 4 for j in range(16))
        else:                                                     # Q4_1
            lo, hi = min(blk), max(blk)
            d = (hi - lo) / 15 or 1.0
            q = [min(15, max(0, round((x - lo) / d))) for x in blk]
            out += f16(d) + f16(lo) + bytes(q[j] | q[j + 16] << 4 for j in range(16))
    return out


GGML = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 8, "BF16": 30}


def tensor_bytes(kind, n):
    xs = [rng.gauss(0, 0.2) for _ in range(n)]
    if kind == "F32": return b"".join(struct.pack("<f", x) for x in xs)
    if kind == "F16": return b"".join(f16(x) for x in xs)
    if kind == "BF16": return b"".join(bf16(x) for x in xs)
    return quantize(kind, xs)


def gguf(vocab, merges, specials, pre, types_by_tensor, extra_types=True):
    dim, hidden, heads, kv_heads, n_vocab = 32, 64, 2, 1, len(vocab) + len(specials)
    b2u = gpt2_bytes_to_unicode()
    tokens = sorted(vocab, key=vocab.get) + specials
    ttype = [1] * len(vocab) + [3] * len(specials)
    kv = [
        ("general.architecture", T_STR, "llama"),
        ("general.name", T_STR, "micro"),
        ("llama.block_count", T_U32, 1),
        ("llama.context_length", T_U32, 64),
        ("llama.embedding_length", T_U32, dim),
        ("llama.feed_forward_length", T_U32, hidden),
        ("llama.attention.head_count", T_U32, heads),
        ("llama.attention.head_count_kv", T_U32, kv_heads),
        ("llama.rope.freq_base", T_F32, 10000.0),
        ("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5),
        ("llama.rope.dimension_count", T_U32, dim // heads),
        ("llama.vocab_size", T_U32, n_vocab),
        ("general.file_type", T_U32, 3),
        ("tokenizer.ggml.model", T_STR, "gpt2"),
        ("tokenizer.ggml.pre", T_STR, pre),
        ("tokenizer.ggml.tokens", T_ARR, (T_STR, tokens)),
        ("tokenizer.ggml.token_type", T_ARR, (T_I32, ttype)),
        ("tokenizer.ggml.merges", T_ARR, (T_STR, [" ".join(m) for m in merges])),
        ("tokenizer.ggml.bos_token_id", T_U32, len(vocab)),
        ("tokenizer.ggml.eos_token_id", T_U32, len(vocab) + 1),
        ("tokenizer.ggml.add_bos_token", T_BOOL, pre == "llama-bpe"),
        ("tokenizer.chat_template", T_STR, "{% for m in messages %}{{ m['content'] }}{% endfor %}"),
        ("general.quantization_version", T_U32, 2),
    ]
    if extra_types:      # every value type, nested arrays too
        kv += [("fuzz.u8", T_U8, 200), ("fuzz.i8", T_I8, -100), ("fuzz.u16", T_U16, 60000),
               ("fuzz.i16", T_I16, -30000), ("fuzz.i32", T_I32, -7), ("fuzz.u64", T_U64, 2 ** 63 + 5),
               ("fuzz.i64", T_I64, -2 ** 40), ("fuzz.f64", T_F64, 2.5e-300),
               ("fuzz.nested", T_ARR, (T_ARR, [(T_U16, [1, 2, 3]), (T_F64, [0.5]), (T_STR, ["a", ""])])),
               ("fuzz.bools", T_ARR, (T_BOOL, [True, False]))]
    del b2u
    shapes = [("token_embd.weight", [dim, n_vocab]), ("blk.0.attn_norm.weight", [dim]),
              ("blk.0.attn_q.weight", [dim, dim]), ("blk.0.attn_k.weight", [dim, dim // heads * kv_heads]),
              ("blk.0.attn_v.weight", [dim, dim // heads * kv_heads]), ("blk.0.attn_output.weight", [dim, dim]),
              ("blk.0.ffn_norm.weight", [dim]), ("blk.0.ffn_gate.weight", [dim, hidden]),
              ("blk.0.ffn_down.weight", [hidden, dim]), ("blk.0.ffn_up.weight", [dim, hidden]),
              ("output_norm.weight", [dim]), ("output.weight", [dim, n_vocab])]
    head = b"GGUF" + struct.pack("<IQQ", 3, len(shapes), len(kv))
    head += b"".join(gstr(k) + struct.pack("<I", t) + gvalue(t, v) for k, t, v in kv)
    data, infos = b"", b""
    for name, ne in shapes:
        kind = "F32" if len(ne) == 1 else types_by_tensor.get(name.split(".")[-2], "F16")
        n = 1
        for d in ne: n *= d
        infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        infos += struct.pack("<IQ", GGML[kind], len(data))
        data += tensor_bytes(kind, n)
        data += b"\0" * (-len(data) % 32)
    out = head + infos
    out += b"\0" * (-len(out) % 32)
    return out + data


# ---- safetensors --------------------------------------------------------------------------

def safetensors(tensors, metadata=None):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = 1
        for d in shape: n *= d
        raw = tensor_bytes({"F32": "F32", "F16": "F16", "BF16": "BF16"}[dtype], n)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


# ---- KV configs ---------------------------------------------------------------------------

def kv_yaml(layers, heads=None, crlf=False, extras=False):
    lines = ["---", "# KVTuner bits"] if extras else []
    for l in range(layers):
        if heads:
            lines.append("%d:" % l)
            for h in range(heads):
                lines += ["  %d:" % h, "    nbits_key: %d" % rng.choice([2, 4, 8, 16]),
                          "    nbits_value: %d" % rng.choice([2, 4, 8, 16])]
        else:
            key = ("'%d'" % l) if extras and l % 2 else str(l)
            lines += ["%s:  # layer" % key if extras else "%s:" % key, "  nbits_key: %d" % rng.choice([2, 4, 8]),
                      '  nbits_value: "%d"' % rng.choice([2, 4, 8]) if extras else "  nbits_value: %d" % 4, ""]
    return ("\r\n" if crlf else "\n").join(lines) + "\n"


def kv_json(layers, heads=None):
    cfg = {}
    for l in range(layers):
        pair = lambda: {"nbits_key": rng.choice([2, 4, 8, 16]), "nbits_value": rng.choice([2, 4, 8, 16])}
        cfg[str(l)] = {str(h): pair() for h in range(heads)} if heads else pair()
    return json.dumps(cfg, indent=2) + "\n"


def main():
    full, vocab, merges = mini_vocab()
    _, avocab, amerges = mini_vocab(ascii_only=True, n_merges=40)
    write("tokenizer_json", "llama3-mini.json", tokenizer_json(full, vocab, merges, "llama3"))
    write("tokenizer_json", "smollm2-ascii.json", tokenizer_json(full, avocab, amerges, "smollm2"))
    write("tiktoken", "llama3-mini.model", tiktoken_model(vocab))
    write("tiktoken", "two-tokens.model", "IQ== 0\nIg== 1\n")

    tmp = os.path.join(ROOT, "build", "fuzz-seeds")
    os.makedirs(tmp, exist_ok=True)
    srcs = [("llama3-mini.json", "tokenizer_json", "f16"), ("smollm2-ascii.json", "tokenizer_json", "f32"),
            ("two-tokens.model", "tiktoken", "bf16")]
    for name, kind, dtype in srcs:
        out = os.path.join(tmp, name.split(".")[0] + "-" + kind + ".bin")
        subprocess.run([EXPORT, "--random", "micro", "--tokenizer", os.path.join(OUT, kind, name), out,
                        "--dtype", dtype], check=True, stdout=subprocess.DEVNULL)
        blob = open(out, "rb").read()
        write("modelbin", os.path.basename(out), blob)
        tok_off, tok_size = struct.unpack_from("<QQ", blob, 80)
        write("tokblob", os.path.basename(out)[:-4] + ".tok", blob[tok_off:tok_off + tok_size])

    specials_l3 = [a["content"] for a in full["added_tokens"][:10]]
    write("gguf", "llama3-ascii.gguf", gguf(avocab, amerges, specials_l3, "llama-bpe",
          {"token_embd": "Q4_1", "attn_q": "Q8_0", "attn_k": "Q4_0", "attn_v": "F16", "attn_output": "BF16",
           "ffn_gate": "Q8_0", "ffn_down": "F32", "ffn_up": "Q4_1", "output": "Q8_0"}))
    write("gguf", "smollm2-ascii.gguf", gguf(avocab, amerges, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "smollm",
          {"token_embd": "Q8_0", "attn_q": "Q4_1", "attn_k": "Q4_1", "attn_v": "Q4_1", "attn_output": "Q4_1",
           "ffn_gate": "Q4_0", "ffn_down": "BF16", "ffn_up": "F16", "output": "F32"}, extra_types=False))

    write("safetensors", "mixed.safetensors", safetensors(
        [("model.embed_tokens.weight", "F16", [16, 8]), ("model.norm.weight", "F32", [8]),
         ("lm_head.weight", "BF16", [16, 8]), ("scalar", "F32", []), ("empty", "F16", [0, 4])],
        metadata={"format": "pt"}))
    write("safetensors", "one.safetensors", safetensors([("w", "BF16", [2, 3, 4])]))

    presets = os.path.join(DATA, "kvtuner_presets")
    for name in ("meta-llama_Meta-Llama-3-8B-Instruct_k8_v4._per_head.yaml",
                 "Meta-Llama-3.1-8B-Instruct_kivi_KVTuner4_1.yaml"):
        write("kvconfig", name, open(os.path.join(presets, name), "rb").read())
    write("kvconfig", "small-layers.yaml", kv_yaml(4))
    write("kvconfig", "small-heads.yaml", kv_yaml(4, heads=2))
    write("kvconfig", "small-extras-crlf.yaml", kv_yaml(4, crlf=True, extras=True))
    write("kvconfig", "smollm2-layers.yaml", kv_yaml(30))
    write("kvconfig", "small-layers.json", kv_json(4))
    write("kvconfig", "small-heads.json", kv_json(4, heads=2))

    prompts = {
        "english.txt": "The capital of France is Paris. It's 2025; they're here, we've 3 cats.\n",
        "digits.txt": "12345 + 678 = 13023, pi ~ 3.14159265358979, 1,000,000 and 0x1F.",
        "code.txt": "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\n\tif x != None:\r\n        pass\n",
        "scripts.txt": "Ça été déjà vu. Привет, мир! 日本語のテキスト。 한국어 텍스트. ١٢٣ عربي, हिन्दी।",
        "emoji.txt": "I \u2764\ufe0f this \U0001F600\U0001F44D\U0001F3FD and \U0001F1EB\U0001F1F7 flags \u00a0\u2003x",
        "special.txt": "<|im_start|>user\nHi<|im_end|><|begin_of_text|><|eot_id|><|im_start",
        "controls.txt": "a\x04b\x1d c\x7f \U00040000 \U000b0000 end",
        "spaces.txt": "   leading\n\n\n  trailing   \t\t\r\n",
    }
    for name, text in prompts.items():
        write("prompt", name, text)

    def group(opt, xs): return bytes([opt]) + b"".join(struct.pack("<f", x) for x in xs)
    write("quantize", "random-4bit.bin", group(1, [rng.gauss(0, 1) for _ in range(32)]))
    write("quantize", "wide-8bit-sym.bin", group(2 | 4, [rng.uniform(-3e4, 3e4) for _ in range(64)]))
    write("quantize", "constant-2bit.bin", group(0, [3.25] * 16))
    write("quantize", "offset-8bit.bin", group(2, [1000 + rng.uniform(0, 1e-3) for _ in range(32)]))
    write("quantize", "nan.bin", group(1, [1.0, float("nan"), 2.0, 3.0]))


if __name__ == "__main__":
    sys.exit(main())
