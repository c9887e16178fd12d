#!/usr/bin/env python3
"""Golden token ids for tests/test_tokenizer.c, from the Hugging Face `tokenizers` library.

    python3 tests/reference/make_tokenizer_golden.py   (from the repo root)

Writes (committed, plain text):
  tests/golden/tokenizer_cases.txt    the hand-written edge cases, one JSON array a line:
                                      [parse_special, "text", model ("all" or one model)]
  tests/golden/tokenizer_llama3.txt   ids from data/llama3/tokenizer.json
  tests/golden/tokenizer_smollm2.txt  ids from the SmolLM2-135M-Instruct GGUF's tokenizer

Golden line format: "<set> <index> <id> <id> ...", sets in this order:
  shakespeare i   Tiny Shakespeare characters [2000 i, 2000 i + 2000) (Llama-3: every chunk;
                  SmolLM2: every 4th chunk, to keep the files small)
  gsm8k i         GSM8K test problem i: question + "\\n" + answer
  case i          edge case i of tokenizer_cases.txt
  chat i          the model's chat template (transformers' apply_chat_template with
                  add_generation_prompt) for CHATS[i] = (system or None, user)
  gpt2 <set> i    SmolLM2 only, see below

SmolLM2. The model's own tokenizer (HF hub tokenizer.json, and llama.cpp for
tokenizer.ggml.pre = "smollm") splits every digit off first (Digits(individual_digits=True)),
then applies the GPT-2 ByteLevel pattern. transformers' GGUF loader builds the vocab and merges
from the GGUF but drops the Digits step (plain ByteLevel), and that changes the ids where
whitespace meets a digit ("a  1": GPT-2 gives "a", " ", " 1"; digits first gives "a", "  ", "1").
We take the model's tokenizer (GGUF vocab/merges + Digits + ByteLevel) as the reference, and we
check both: every line counts for PRETOK_SMOLLM, and for PRETOK_GPT2 on the same vocab (exactly
transformers' GGUF tokenizer) the "gpt2 <set> i" lines give its ids wherever they differ.

Special tokens: `tokenizers` matches added tokens in any text; the C encoder does so only with
parse_special = 1. For cases with parse_special 0 we set encode_special_tokens = True, which makes
`tokenizers` treat special-token strings as plain text too.
"""
import json
import os
import sys

import tokenizers
from tokenizers import Tokenizer, pre_tokenizers
import transformers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "data")
GGUF = os.environ.get("SMOLLM2_GGUF", os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))  # make model
OUT = os.path.join(ROOT, "tests", "golden")

CASES = [
    # contractions, odd case
    "THEY'RE here", "they're", "They'Re", "I'M sure", "we'LL see", "you'VE", "he'D", "IT'S", "don'T",
    "'s", "'", "''", "rock 'n' roll", "l'homme", "o'clock", "'ſ long s", "it’s curly", "'S'T'RE'VE'M'LL'D",
    # numbers and digit runs
    "1", "12", "123", "1234", "12345678901234567890", "3.14159", "1,000,000", "$1,234.56", "-42", "1e10",
    "0x1F", "٣٤٥٦٧ arabic-indic", "①②③", "Ⅻ", "½ ¾", "x² y³", "1st 2nd 3rd", "a1b2c3", "  1", "a  1", "x\n\n1",
    "x 1", "year 2024: 365 days", "(555) 123-4567", "v1.2.3",
    # combining marks and non-Latin scripts
    "e\u0301 cafe\u0301", "n\u0308", "Z\u0324\u0354\u0367\u0311\u0313a\u0308l\u036e\u0312g\u0317o\u0319",
    "ก่อน", "नमस्ते दुनिया", "\u1100\u1161\u11a8", "Ελληνικά κείμενο", "Русский текст", "עברית", "العربية",
    "ﷺ", "ǅ titlecase", "ß ẞ", "İstanbul ı", "ﬁ ligature",
    # CJK
    "中文字符测试", "日本語のテキスト、カタカナ。", "한국어 텍스트", "Hello世界123", "全角　スペース",
    # emoji: ZWJ sequences, skin tones, flags, variation selectors
    "👨‍👩‍👧‍👦 family", "👍🏽", "🏳️‍🌈", "🇫🇷🇩🇪", "❤️", "👩🏿‍💻 coding", "😀😃😄", "a👍b",
    # control characters
    "\x00", "a\x01b", "\x7f", "\t\ttabs", "\x1b[31mred\x1b[0m", "\x0b\x0c", "\x85 NEL", "zero\u200bwidth",
    "line\u2028sep", "\ufeffBOM", "\x1c\x1d\x1e\x1f",
    # CRLF and newline runs
    "a\r\nb", "\r\n\r\n\r\n", "line1\r\n\r\nline2", "\r\r\n\n", "x \r\n y", "!\r\n", "a.\n\n\nb",
    # whitespace runs before newlines
    "a   \nb", "a \t \n\n  b", "   \n   ", "end   ", "  lead", "a\n \nb", "\n\n\n", " ", "  ", "\t", "\n",
    "", "word    \n    word",
    # non-breaking and other spaces
    "100\u00a0km", "a\u00a0\u00a0b", "\u00a0\n", "\u3000full-width", "thin\u2009space", "\u00a0 \u00a0",
    # punctuation and code
    "Hello, world!!!", "...", "?!?!", "(a)[b]{c}", "«quotes»", "“smart” ‘quotes’", "—dash—", "a.b.c", "x--y",
    "C++ & C#", "https://example.com/a?b=c&d=e", "email@example.com", "#hashtag @user", "<html><body>",
    "    def f(x):\n        return x**2\n", '{"json": [1, 2, 3]}', "!!!\n\n", " !\n", "'''docstring'''",
    # long runs
    "a" * 3000, " " * 300 + "x", "ab" * 800, "9" * 1000, "!" * 500,
    # special-token strings as plain text (parse_special 0)
    "<|eot_id|>", "<|begin_of_text|>Hello", "<|im_start|>user", "<|endoftext|>",
]
SPECIAL_CASES = {
    "llama3": ["<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
               "<|eot_id|><|eot_id|>x<|end_of_text|>"],
    "smollm2": ["<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
                "<|im_end|><|im_end|>x<|endoftext|>"],
}
CHATS = [(None, "What is 2+2?"), ("You are a pirate.", "Tell me about the sea.\nBriefly!"),
         (None, "  spaces around  ")]


def chunks():
    text = open(os.path.join(DATA, "tinyshakespeare.txt"), encoding="utf-8").read()
    return [text[i:i + 2000] for i in range(0, len(text), 2000)]


def gsm8k():
    with open(os.path.join(DATA, "gsm8k_test.jsonl"), encoding="utf-8") as f:
        return [(lambda o: o["question"] + "\n" + o["answer"])(json.loads(line)) for line in f]


def encode(tok, text, special):
    tok.encode_special_tokens = not special
    return tok.encode(text, add_special_tokens=False).ids


def samples(model):
    step = 1 if model == "llama3" else 4
    out = [("shakespeare", i, t, 0) for i, t in enumerate(chunks()) if i % step == 0]
    out += [("gsm8k", i, t, 0) for i, t in enumerate(gsm8k())]
    cases = [(0, c) for c in CASES] + [(1, c) for c in SPECIAL_CASES[model]]
    out += [("case", i, c, s) for i, (s, c) in enumerate(cases)]
    return out, cases


def line(name, i, ids):
    return " ".join([name, str(i)] + [str(x) for x in ids]) + "\n"


def chat_ids(hf_tok, tok):
    """The model's chat template rendered by transformers, encoded by our reference `tok`."""
    res = []
    for system, user in CHATS:
        msgs = ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": user}]
        text = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        res.append(encode(tok, text, True))
    return res


def write(model, tok, hf_tok, header, alt=None):
    lines, n_alt_diff = [], 0
    alt_lines = []
    smp, cases = samples(model)
    for name, i, text, special in smp:
        ids = encode(tok, text, special)
        lines.append(line(name, i, ids))
        if alt is not None:
            alt_ids = encode(alt, text, special)
            if alt_ids != ids:
                alt_lines.append(line("gpt2 " + name, i, alt_ids))
                n_alt_diff += 1
    for i, ids in enumerate(chat_ids(hf_tok, tok)):
        lines.append(line("chat", i, ids))
    path = os.path.join(OUT, f"tokenizer_{model}.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(header)
        f.writelines(lines + alt_lines)
    print(f"{path}: {len(lines)} samples, {sum(len(l.split()) - 2 for l in lines)} ids, {os.path.getsize(path)} bytes"
          + (f", {n_alt_diff} differ under transformers' GGUF tokenizer (plain GPT-2 pattern)" if alt else ""))
    return cases


def main():
    os.makedirs(OUT, exist_ok=True)
    versions = f"tokenizers {tokenizers.__version__}, transformers {transformers.__version__}"
    # Llama-3: the tokenizer.json itself.
    ll = Tokenizer.from_file(os.path.join(DATA, "llama3", "tokenizer.json"))
    ll_hf = AutoTokenizer.from_pretrained(os.path.join(DATA, "llama3"))
    cases = write("llama3", ll, ll_hf, f"# Llama-3 tokenizer.json ids ({versions}); "
                  "see tests/reference/make_tokenizer_golden.py\n")
    # SmolLM2: transformers builds the tokenizer from the GGUF; the model's own tokenizer adds Digits.
    d, fname = os.path.split(GGUF)
    sm_hf = AutoTokenizer.from_pretrained(d, gguf_file=fname)
    gguf_tok = Tokenizer.from_str(sm_hf.backend_tokenizer.to_str())      # transformers' (plain ByteLevel)
    true_tok = Tokenizer.from_str(sm_hf.backend_tokenizer.to_str())
    true_tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    sm_cases = write("smollm2", true_tok, sm_hf, f"# SmolLM2-135M-Instruct GGUF tokenizer ids, Digits + ByteLevel "
                     f"({versions}); see tests/reference/make_tokenizer_golden.py\n", alt=gguf_tok)
    # One case list for both models: case i of tokenizer_<model>.txt is the i-th line whose
    # model is "all" or <model>.
    assert cases[:len(CASES)] == sm_cases[:len(CASES)]
    with open(os.path.join(OUT, "tokenizer_cases.txt"), "w", encoding="utf-8") as f:
        f.write("# [parse_special, text, model] per line; case i of tokenizer_<model>.txt is the i-th line\n"
                "# whose model is \"all\" or <model>. Made by tests/reference/make_tokenizer_golden.py\n")
        for c in CASES:
            f.write(json.dumps([0, c, "all"]) + "\n")
        for m in ("llama3", "smollm2"):
            for c in SPECIAL_CASES[m]:
                f.write(json.dumps([1, c, m]) + "\n")


if __name__ == "__main__":
    sys.exit(main())
