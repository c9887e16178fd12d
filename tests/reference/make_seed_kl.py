#!/usr/bin/env python3
"""make_seed_kl.py: the KV quantizer of KVTuner's seed code, run inside transformers, as a golden
reference for `run -m compare` (tests/test_seed_kl.c).

What it computes: the default model (SmolLM2-135M-Instruct from the Q4_1 GGUF, every weight matrix
rounded to fp16 as `models/smollm2-135m-instruct.bin` holds it; norms stay fp32, as the export
keeps them) runs teacher-forced over the first 512 tokens of tests/golden/seed_kl/text.txt twice:
with an fp16 KV cache (the runner's baseline) and with the seed's quantized cache. The mean over
the 511 scored positions of KL(p_fp16 || p_quant) (natural log) and the top-1 agreement are
computed exactly as model/eval.c does (log-softmax in double rounded to f32 on both sides; KL
summed in double and clamped at 0; argmax = first of equal maxima). Presets pertoken and kivi, at
KV8, K8V4 and KV4, each under two cache timings:

  seed    the seed's FlexibleQuantizedCache.update + FlexibleVanillaQuantizedCache, line for line
          (below), with the 512 tokens fed as one-token steps (a 1-token first call, then 511
          decode steps: the seed's prefill path with force_quant=False leaves a whole prompt
          unquantized for its own attention, so token-by-token is the only way the seed scores
          every position against a quantized cache).
  runner  kvtuner.c's cache (quant/kvcache.c append_stream, kernels/attention.c, docs/DESIGN.md
          §3.3): token t attends to every earlier token as the cache stores it and to its own
          K/V as computed (the seed's timing), and is then appended. pertoken (R = 0): tokens
          0..t-1 quantized. kivi: values slide one token at a time (tokens < t-32 quantized,
          the 32 before t fp16), keys fill and flush in per-channel blocks of 32 tokens (the
          blocks complete before t quantized). Each token is quantized once. This is the
          seed's update with its quirks below switched off, except that the seed flushes
          KIVI values together with keys.

Both timings use the seed's quantizer arithmetic: asymmetric min-max per group,
s = max(max - min, 1e-5) / (2^n - 1), z = round(min/s) - q_min, q = clip(round(x/s - z)),
x_hat = (q + z) * s, computed in float32 (the whole reference runs in fp32) except that the scale
is cast to fp16 when dequantizing, as the seed does at its default compute_dtype float16
(--numerics seed16; seed32 skips the cast; runner is kvtuner.c's arithmetic, which also rounds
the offset m = (z + q_min) s to fp16 and computes codes in float64). The input of the quantizer,
and every unquantized K/V the quantized run reads, is K (after RoPE) and V rounded to fp16, as in
the baseline.

Realizations. A quantized run is chaotic: one K/V element of one token that lands on the other
side of a rounding boundary (an fp16 rounding or a quantization code) changes the attention
output, so the next layers' K/V, so many more codes. Two implementations that differ only in
float summation order therefore quantize differently after a few layers, and their mean KL over
these 511 positions differ as two samples do. Measured here: scaling the attention scores by
1 + 2^-22 moves pertoken KV4's mean KL by up to 10% (six runs: 0.115..0.131, sd 4.6%). So each
row of kl.tsv is the mean over --runs realizations i = 0..runs-1 (scores scaled by
1 + i * 2^-22; i = 0 is the plain computation), with their sd, min and max beside it; the fp16
baseline is computed once (the baseline's own chaos is ~1e-2 in logits, a KL of ~2e-7 against
the runner's baseline).

The seed code followed (github.com/cmd2001/KVTuner at babe775378e3df4dad414bdc72654db7280a13dc):
  flexible_quant/flexible_quant/vanilla_quantizer.py
    L12-17   quant_asym / dequant_asym: q = round(x/s - z).clip(q_min, q_max); x_hat = (q + z) * s
    L38-47   VanillaQuantizedTensor.dequantize: view to the (transposed) shape, transpose back for axis 1
    L53-74   VanillaQuantizer.quantize: axis 1 transposes the last two dims; q_group_size -1 means
             the whole last dim; groups are tensor.reshape(-1, G) of the whole [B, H, T, D] (or
             [B, H, D, T]) tensor; asym scale/zeros as above
  flexible_quant/flexible_quant/flexible_quantized_cache.py
    L156-218 FlexibleQuantizedCache.update, uniform bits (not per-head/per-layer):
             L173-197 first call with force_quant False: quantize the incoming K/V, set the fp16
                      residual to an empty 1-D tensor, return the incoming K/V unquantized
             L198-205 later calls: return cat([dequant(quantized), residual, key_states]): the
                      current token attends to its own K/V unquantized
             L206-215 flush when the residual is 4-D and residual_len + 1 >= residual_length:
                      requantize the WHOLE returned tensor (old dequantized tokens included) for K
                      and V together, residual back to an empty 1-D tensor
             L216-218 otherwise append the token to the residual
    L445-464 FlexibleVanillaQuantizedCache._quantize: VanillaQuantizer(nbits, asym).quantize(x,
             q_group_size, axis)
  helper_scripts/sh_gen_presets.py L1, L5: the two presets, pertoken = residual_length 0,
             q_group_size -1, axis_key 0, axis_value 0; kivi = residual_length 32, q_group_size 32,
             axis_key 1 (per channel), axis_value 0 (per token); both force_quant False
  benckmarks/gaokao_bench_obj.py L49: asym defaults to True (asymmetric)

What "line for line" implies, three quirks of the seed that this reference keeps (see --variants
for what each is worth):
  1. pertoken, residual_length 0: after a flush the residual is an empty 1-D tensor, and the flush
     test (L207) asks for a 4-D one, so a flush happens every second step: token t (t >= 1) sees
     all earlier tokens dequantized when t is odd, and token t-1 still unquantized when t is even.
  2. requantization: each flush quantizes the whole returned tensor again, the already
     dequantized tokens included. Per token (axis 0) that is idempotent (the dequantized group's
     min and max sit exactly at codes q_min and q_max); per channel it is not, because:
  3. kivi keys, axis 1: reshape(-1, 32) of [1, 3, 64, T] with T = 33, 65, 97, ... at the flushes
     (token 0 is quantized alone by the first call, then each flush adds 32) makes groups of 32
     consecutive elements of the flattened (head, channel, token) order: they straddle channels
     and heads, and shift at every flush, so old keys are requantized in new groups 15 times over
     512 tokens. Token 0's key at the first call is one [64, 1] tensor: two groups of 32 channels.

Channel order: model.bin keeps Meta's interleaved RoPE order; transformers (and so this script,
and the seed) uses rotate-half order. A whole-head-vector group (pertoken) and a per-channel group
of tokens (kivi keys, the runner's cache) hold the same elements in either order, and values are never
permuted, so the "runner" rows do not depend on it. The seed's straddling key groups
(quirk 3) and its first-call key groups do: they follow the seed, i.e. transformers' order.

Output, in --out (default tests/golden/seed_kl/):
  text.txt      the text both sides read: the start of data/tinyshakespeare.txt up to the first
                paragraph break at or after character 1800 (551 tokens; the first 512 are scored)
  ids.txt       `ids N id_0 ..`: the first 512 token ids, from `./run MODEL -m tokenize -f text.txt`
  kl.tsv        '#' comment lines (versions, seed commit), then a header and 12 rows, tab-separated:
                preset spec timing kl top1 tokens kl_sd kl_min kl_max runs
                (kl, top1: the means over the realizations; kl_sd/min/max: their spread)
  variants.tsv  (--variants) the seed's quirks switched off one at a time, and the runner's own
                quantizer arithmetic (fp16 offset), same columns (one realization each by default)

Packages (the versions used): python 3.11, torch 2.15.0 (CPU), transformers 5.24.0,
accelerate 1.15.0 (transformers needs it to load a GGUF), gguf 0.19.0, numpy 2.4.6.
Run from the repo root, after `make` and `make model` (it runs ./run to tokenize):
    python3 tests/reference/make_seed_kl.py [--variants]
About 20 CPU-minutes with one thread (an hour on a busy 2-core machine): each realization is one
fp32 forward over 511 tokens with the attention computed query by query, 4 per row, 12 rows.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

SEED_REPO = "cmd2001/KVTuner"
SEED_COMMIT = "babe775378e3df4dad414bdc72654db7280a13dc"
PRESETS = ("pertoken", "kivi")
SPECS = {"kv8": (8, 8), "k8v4": (8, 4), "kv4": (4, 4)}
TEXT_CHARS = 1800          # text.txt: up to the first paragraph break at or after this character
N_TOKENS = 512

# preset -> the seed's cache config (helper_scripts/sh_gen_presets.py L1, L5)
SEED_PRESET = {
    "pertoken": dict(residual_length=0, q_group_size=-1, axis_key=0, axis_value=0),
    "kivi": dict(residual_length=32, q_group_size=32, axis_key=1, axis_value=0),
}


# ---- the seed's quantizer (vanilla_quantizer.py L12-17, L38-47, L53-74), asym ---------------

def seed_quantize(x, nbits, group, axis, numerics="seed16"):
    """VanillaQuantizer.quantize (asym) of a [B, H, T, D] tensor; returns what seed_dequantize needs.
    numerics: "seed16" the seed at its default compute_dtype float16 (flexible_quantized_cache.py
    L69, passed on at L459): codes from the float32 scale, and dequant_asym casts the scale to fp16
    (vanilla_quantizer.py L17), so x_hat = (q + z) * fp16(s); "seed32" the same without that cast;
    "runner" kvtuner.c's quantize_group (codes in float64 from the unrounded scale, s and
    m = (z + q_min) s stored as fp16, x_hat = u fp16(s) + fp16(m) in fp32)."""
    if axis == 1:
        x = x.transpose(-2, -1)
    shape = x.shape
    if group == -1:
        assert axis == 0
        group = shape[-1]
    rs = x.reshape(-1, group)
    q_max, q_min = 2 ** (nbits - 1) - 1, -2 ** (nbits - 1)
    if numerics == "runner":
        r = rs.double()
        mx, mn = r.max(dim=1).values, r.min(dim=1).values
        s = (mx - mn).clamp(min=1e-5) / (q_max - q_min)
        z = torch.round(mn / s) - q_min
        q = torch.round(r / s[:, None] - z[:, None]).clip(q_min, q_max)
        m = (z + q_min) * s
        s16, m16 = s.float().half().float(), m.float().half().float()
        return ("deq", (q - q_min).float() * s16[:, None] + m16[:, None], shape, axis)
    mx, mn = rs.max(dim=1).values, rs.min(dim=1).values
    scale = (mx - mn).clamp(min=1e-5).div(q_max - q_min)
    zeros = (mn / scale).round() - q_min
    q = torch.round(rs / scale.unsqueeze(1) - zeros.unsqueeze(1)).clip(q_min, q_max).to(torch.int8)
    if numerics == "seed16":
        scale = scale.half().float()
    else:
        assert numerics == "seed32", numerics
    return ("q", (q, scale, zeros), shape, axis)


def seed_dequantize(qt):
    kind, data, shape, axis = qt
    if kind == "q":
        q, scale, zeros = data
        d = (q + zeros.unsqueeze(1)) * scale.unsqueeze(1)
    else:
        d = data
    d = d.view(shape)
    if axis == 1:
        d = d.transpose(-2, -1)
    return d


# ---- the seed's cache: FlexibleQuantizedCache.update, uniform bits, force_quant False -------

class SeedCache:
    """One layer's cache, stepped one token at a time (flexible_quantized_cache.py L156-218).
    `once` (a variant, not the seed): quantize each token once, when it first enters the
    quantized part, grouping only the newly flushed tokens (so no requantization, quirk 2-3).
    `self_only` (a variant, not the seed): the flush test without the 4-D check, so that with
    residual 0 every step flushes (no quirk 1): token t sees exactly itself unquantized."""

    def __init__(self, kb, vb, cfg, numerics, once=False, self_only=False):
        self.kb, self.vb, self.numerics = kb, vb, numerics
        self.R, self.G = cfg["residual_length"], cfg["q_group_size"]
        self.ak, self.av = cfg["axis_key"], cfg["axis_value"]
        self.once, self.self_only = once, self_only
        self.qk = self.qv = None            # _quantized_key_cache / _quantized_value_cache
        self.dk = self.dv = None            # their dequantized tensors (a pure function of them)
        self.rk = self.rv = None            # key_cache / value_cache; None = the empty 1-D tensor

    def _q(self, x, bits, axis):
        return seed_quantize(x.contiguous(), bits, self.G, axis, self.numerics)

    def update(self, k, v):
        if self.qk is None:                                     # L192-197: first call
            self.qk, self.qv = self._q(k, self.kb, self.ak), self._q(v, self.vb, self.av)
            self.dk, self.dv = seed_dequantize(self.qk), seed_dequantize(self.qv)
            return k, v
        parts_k = [self.dk] + ([self.rk] if self.rk is not None else []) + [k]     # L199-205
        parts_v = [self.dv] + ([self.rv] if self.rv is not None else []) + [v]
        keys, values = torch.cat(parts_k, dim=-2), torch.cat(parts_v, dim=-2)
        filled = (self.rk is not None or self.self_only) and \
            (0 if self.rk is None else self.rk.shape[-2]) + 1 >= self.R             # L206-209
        if filled:                                                                  # L210-215
            if self.once:       # variant: only the new tokens, in groups of their own
                n_old = self.dk.shape[-2]
                nk = seed_dequantize(self._q(keys[..., n_old:, :], self.kb, self.ak))
                nv = seed_dequantize(self._q(values[..., n_old:, :], self.vb, self.av))
                self.dk, self.dv = torch.cat([self.dk, nk], dim=-2), torch.cat([self.dv, nv], dim=-2)
                self.qk, self.qv = True, True
            else:
                self.qk, self.qv = self._q(keys, self.kb, self.ak), self._q(values, self.vb, self.av)
                self.dk, self.dv = seed_dequantize(self.qk), seed_dequantize(self.qv)
            self.rk = self.rv = None
        else:                                                                       # L216-218
            self.rk = k if self.rk is None else torch.cat([self.rk, k], dim=-2)
            self.rv = v if self.rv is None else torch.cat([self.rv, v], dim=-2)
        return keys, values


# ---- the runner's cache (quant/kvcache.c, kernels/attention.c) ----------------------------

def runner_views(k, v, kb, vb, preset, numerics):
    """Yield, for t = 0..T-1, the K and V that token t attends over in kvtuner.c: tokens 0..t-1
    as the cache holds them before t is appended, then t itself unquantized. Every token is
    quantized once (its value is the same whenever it is read), so the dequantized tensors are
    computed up front; what changes with t is how many are quantized."""
    T = k.shape[-2]
    if preset == "pertoken":                   # R = 0, G = -1: quantize on append (append_stream)
        dk = seed_dequantize(seed_quantize(k, kb, -1, 0, numerics))
        dv = seed_dequantize(seed_quantize(v, vb, -1, 0, numerics))
        for t in range(T):
            yield (torch.cat([dk[..., :t, :], k[..., t:t + 1, :]], dim=-2),
                   torch.cat([dv[..., :t, :], v[..., t:t + 1, :]], dim=-2))
        return
    R = G = 32                                 # kivi: keys per channel, values per token
    nblk = T // R * R                          # keys of complete blocks of R tokens
    dk = seed_dequantize(seed_quantize(k[..., :nblk, :], kb, G, 1, numerics)) if nblk else k[..., :0, :]
    dv = seed_dequantize(seed_quantize(v, vb, G, 0, numerics))
    for t in range(T):
        nqk = t // R * R                       # block b is flushed when token bR+R-1 is appended
        nqv = max(0, t - R)                    # window slides: the R tokens before t are fp16
        kk = torch.cat([dk[..., :nqk, :], k[..., nqk:t + 1, :]], dim=-2)
        vv = torch.cat([dv[..., :nqv, :], v[..., nqv:t + 1, :]], dim=-2)
        yield kk, vv


# ---- attention inside transformers ---------------------------------------------------------

class Mode:
    quant = None       # None: the fp16 baseline; else dict(preset, kb, vb, timing, numerics, ...)


def attend_one(module, q_t, keys, values, scaling):
    """Eager attention of one query [B, Hq, 1, D] over keys/values [B, Hkv, n, D] (all causal).
    Realization i of a row multiplies the score scaling by 1 + i * 2^-22 (see main)."""
    from transformers.models.llama.modeling_llama import repeat_kv
    ks, vs = repeat_kv(keys, module.num_key_value_groups), repeat_kv(values, module.num_key_value_groups)
    w = torch.matmul(q_t, ks.transpose(2, 3)) * (scaling * (1.0 + Mode.quant.get("jitter", 0.0)))
    w = torch.nn.functional.softmax(w, dim=-1, dtype=torch.float32)
    return torch.matmul(w, vs)


def install_attention():
    from transformers.models.llama import modeling_llama as ml
    orig = ml.eager_attention_forward

    def attn(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
        # K (after RoPE) and V rounded to fp16, as the runner's cache stores them (its baseline)
        key, value = key.half().float(), value.half().float()
        if Mode.quant is None:
            return orig(module, query, key, value, attention_mask, scaling, dropout, **kw)
        m = Mode.quant
        T = key.shape[-2]
        if m["timing"] == "runner":
            views = runner_views(key, value, m["kb"], m["vb"], m["preset"], m["numerics"])
        else:
            cache = SeedCache(m["kb"], m["vb"], SEED_PRESET[m["preset"]], m["numerics"],
                              once=m.get("once", False), self_only=m.get("self_only", False))
            views = (cache.update(key[..., t:t + 1, :], value[..., t:t + 1, :]) for t in range(T))
        out = torch.empty_like(query)
        for t, (kk, vv) in enumerate(views):
            assert kk.shape[-2] == t + 1 and vv.shape[-2] == t + 1
            out[:, :, t:t + 1, :] = attend_one(module, query[:, :, t:t + 1, :], kk, vv, scaling)
        return out.transpose(1, 2).contiguous(), None

    ml.eager_attention_forward = attn


# ---- model, tokens, KL ---------------------------------------------------------------------

def load_model(gguf_path):
    d, f = os.path.split(os.path.abspath(gguf_path))
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    with torch.no_grad():               # the f16 export: matrices and embedding f16, norms f32
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())
    return model


def make_text(src, out_path):
    text = open(src, encoding="utf-8").read()
    end = text.index("\n\n", TEXT_CHARS) + 1
    with open(out_path, "w", encoding="utf-8", newline="") as f:
        f.write(text[:end])


def runner_ids(run, model_bin, text_path):
    out = subprocess.run([run, model_bin, "-m", "tokenize", "-f", text_path], check=True,
                         capture_output=True, text=True).stdout
    return [int(x) for x in out.strip().splitlines()[-1].split()]


@torch.no_grad()
def logprobs(model, ids):
    """Per scored position (0..n-2), log-softmax in double rounded to f32 (eval_log_softmax)."""
    lg = model(torch.tensor([ids[:-1]]), use_cache=False).logits[0].double()
    return (lg - torch.logsumexp(lg, dim=-1, keepdim=True)).float()


def kl_top1(lp_base, lp_kv):
    """eval_kl / eval_score_position: KL in double from the f32 log-probabilities, clamped at 0."""
    p = lp_base.double()
    kl = (p.exp() * (p - lp_kv.double())).sum(dim=-1).clamp(min=0.0)
    top1 = (lp_base.argmax(dim=-1) == lp_kv.argmax(dim=-1)).double()
    return kl.mean().item(), top1.mean().item()


JITTER = 2.0 ** -22        # realization i: attention scores scaled by 1 + i * JITTER


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--model-bin", default="models/smollm2-135m-instruct.bin")
    ap.add_argument("--run", default="./run")
    ap.add_argument("--text-src", default="data/tinyshakespeare.txt")
    ap.add_argument("--out", default="tests/golden/seed_kl")
    ap.add_argument("--numerics", default="seed16", choices=("seed16", "seed32", "runner"),
                    help="the quantizer's arithmetic (seed_quantize); default: the seed's, at its default "
                         "compute_dtype float16")
    ap.add_argument("--runs", type=int, default=4, help="realizations per row (kl.tsv gives their mean)")
    ap.add_argument("--variants", action="store_true",
                    help="also write variants.tsv: the seed's quirks one at a time, the runner's fp16 m")
    ap.add_argument("--variant-runs", type=int, default=1, help="realizations per variants.tsv row")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: the query-by-query attention is thousands of tiny ops, which "
                         "more threads slow down, by 10x on a shared 2-core machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    text_path = os.path.join(args.out, "text.txt")
    make_text(args.text_src, text_path)
    all_ids = runner_ids(args.run, args.model_bin, text_path)
    assert len(all_ids) >= N_TOKENS, f"{text_path}: {len(all_ids)} tokens < {N_TOKENS}"
    ids = all_ids[:N_TOKENS]
    with open(os.path.join(args.out, "ids.txt"), "w") as f:
        f.write(f"ids {len(ids)} " + " ".join(map(str, ids)) + "\n")
    print(f"text: {os.path.getsize(text_path)} bytes, {len(all_ids)} runner tokens, scoring {len(ids)}")

    model = load_model(args.gguf)
    try:                                # information: does transformers' tokenizer agree?
        from transformers import AutoTokenizer
        d, f = os.path.split(os.path.abspath(args.gguf))
        hf_ids = AutoTokenizer.from_pretrained(d, gguf_file=f)(open(text_path, encoding="utf-8").read(),
                                                              add_special_tokens=False).input_ids
        print(f"transformers' tokenizer: {'same ids' if hf_ids == all_ids else 'DIFFERENT ids'} "
              f"({len(hf_ids)} vs {len(all_ids)}; the runner's are used)")
    except Exception as e:  # noqa: BLE001 -- informational only
        print(f"transformers' tokenizer not compared: {e}")
    install_attention()

    Mode.quant = None
    base = logprobs(model, ids)
    nll = -base[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].double()
    print(f"fp16-KV baseline: ppl {nll.mean().exp().item():.6f} (run -m compare prints it as ppl_base)")

    def measure(preset, spec, runs, **kw):
        """The mean (and spread) over `runs` realizations: KL and top-1 of each."""
        kb, vb = SPECS[spec]
        kls, tops = [], []
        for i in range(runs):
            Mode.quant = dict(preset=preset, kb=kb, vb=vb, numerics=args.numerics, jitter=i * JITTER, **kw)
            kl, top1 = kl_top1(base, logprobs(model, ids))
            Mode.quant = None
            kls.append(kl)
            tops.append(top1)
        k = np.array(kls)
        return k.mean(), float(np.mean(tops)), (k.std(ddof=1) if runs > 1 else 0.0), k.min(), k.max()

    def write(path, rows, comment):
        with open(path, "w") as f:
            f.write(comment)
            f.write(f"# seed: {SEED_REPO} {SEED_COMMIT} (FlexibleVanillaQuantizedCache); quantizer "
                    f"arithmetic {args.numerics}\n")
            f.write(f"# python {sys.version.split()[0]}, torch {torch.__version__}, transformers "
                    f"{transformers.__version__}, numpy {np.__version__}, gguf {pkg_version('gguf')}, "
                    f"accelerate {pkg_version('accelerate')}\n")
            f.write("preset\tspec\ttiming\tkl\ttop1\ttokens\tkl_sd\tkl_min\tkl_max\truns\n")
            for preset, spec, timing, runs, (kl, top1, sd, lo, hi) in rows:
                f.write(f"{preset}\t{spec}\t{timing}\t{kl:.8g}\t{top1:.6f}\t{len(ids)}\t{sd:.4g}\t{lo:.8g}\t"
                        f"{hi:.8g}\t{runs}\n")

    rows = []
    for preset in PRESETS:
        for spec in SPECS:
            for timing in ("seed", "runner"):
                r = measure(preset, spec, args.runs, timing=timing)
                rows.append((preset, spec, timing, args.runs, r))
                print(f"{preset:8s} {spec:5s} {timing:6s} kl {r[0]:.6g} (sd {r[2]:.3g}, {r[3]:.6g}..{r[4]:.6g}) "
                      f"top1 {r[1]:.6f}", flush=True)
    write(os.path.join(args.out, "kl.tsv"), rows,
          f"# made by tests/reference/make_seed_kl.py: KL(fp16 KV || quantized KV), mean over {len(ids) - 1} "
          f"positions of text.txt's first {len(ids)} tokens (ids.txt)\n"
          f"# kl, top1: the mean over `runs` realizations (attention scores scaled by 1 + i * 2^-22, "
          f"i = 0..runs-1); kl_sd, kl_min, kl_max: their spread\n"
          f"# timing seed: the seed's FlexibleQuantizedCache.update; runner: kvtuner.c's cache (quant/kvcache.c)\n")

    if not args.variants:
        return
    vrows = []
    for preset in PRESETS:
        for spec in SPECS:
            vs = [("runner-fp16m", dict(timing="runner"), "runner"),
                  ("seed-once", dict(timing="seed", once=True), args.numerics)]
            if preset == "pertoken":
                vs.append(("seed-self-only", dict(timing="seed", self_only=True, once=True), args.numerics))
            for name, kw, num in vs:
                saved, args.numerics = args.numerics, num
                r = measure(preset, spec, args.variant_runs, **kw)
                args.numerics = saved
                vrows.append((preset, spec, name, args.variant_runs, r))
                print(f"{preset:8s} {spec:5s} {name:14s} kl {r[0]:.6g} (sd {r[2]:.3g}) top1 {r[1]:.6f}", flush=True)
    write(os.path.join(args.out, "variants.tsv"), vrows,
          "# made by tests/reference/make_seed_kl.py --variants (information; not asserted), as kl.tsv:\n"
          "#   runner-fp16m    runner timing, the runner's quantize_group arithmetic (fp16 s and m)\n"
          "#   seed-once       seed timing, each token quantized once, new tokens grouped alone\n"
          "#                   (no requantization, no straddling key groups: quirks 2-3 off)\n"
          "#   seed-self-only  pertoken: seed-once and every step flushes, so token t sees\n"
          "#                   exactly itself unquantized (quirk 1 off too)\n")


def pkg_version(name):
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    sys.exit(main())
