#!/usr/bin/env python3
"""Write tests/golden/rope_freqs.txt: RoPE inverse frequencies computed by Hugging Face
transformers (modeling_rope_utils, fp32 on the CPU), with and without Llama-3.1 scaling.
tests/test_kernels.c checks kernels/kernels.c:rope_freqs against them.

Run from the repo root:  python3 tests/reference/make_rope_golden.py
File format, per case: a line
  case HEAD_DIM THETA SCALING FACTOR LOW_FREQ_FACTOR HIGH_FREQ_FACTOR ORIG_CTX
(SCALING 0 = none, 1 = llama3), then one line of HEAD_DIM/2 frequencies (%.9e)."""
import transformers
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

CASES = [  # head_dim, theta, scaling, factor, low, high, orig_ctx
    (64, 100000.0, 0, 0, 0, 0, 0),            # SmolLM2-135M
    (128, 500000.0, 0, 0, 0, 0, 0),           # Llama-3-8B
    (128, 500000.0, 1, 8.0, 1.0, 4.0, 8192),  # Llama-3.1-8B
    (64, 500000.0, 1, 32.0, 1.0, 4.0, 8192),  # Llama-3.2-1B style
    (64, 10000.0, 1, 8.0, 1.0, 4.0, 2048),    # small orig ctx: every band is populated
    (32, 500000.0, 1, 4.0, 2.0, 8.0, 1024),   # non-default low/high factors
]


def inv_freq(head_dim, theta, scaling, factor, low, high, orig):
    """The inv_freq buffer of transformers' own LlamaRotaryEmbedding for this config."""
    n_heads = 4
    if scaling:
        rp = {"rope_type": "llama3", "rope_theta": theta, "factor": factor, "low_freq_factor": low,
              "high_freq_factor": high, "original_max_position_embeddings": orig}
    else:
        rp = {"rope_type": "default", "rope_theta": theta}
    cfg = LlamaConfig(hidden_size=head_dim * n_heads, num_attention_heads=n_heads, head_dim=head_dim,
                      max_position_embeddings=max(orig, 8192) * 4, rope_parameters=rp)
    return LlamaRotaryEmbedding(cfg).inv_freq.tolist()


with open("tests/golden/rope_freqs.txt", "w") as out:
    out.write(f"# transformers {transformers.__version__}; made by tests/reference/make_rope_golden.py\n")
    for c in CASES:
        out.write("case %d %.1f %d %g %g %g %d\n" % c)
        out.write(" ".join("%.9e" % v for v in inv_freq(*c)) + "\n")
print("wrote tests/golden/rope_freqs.txt")
