#!/usr/bin/env python3
# make_kinds.py: writes the derived text files of data/kinds/ (data/README.md) from files in
# this repository, byte for byte the same on every run. Run from the repository root:
#   python3 data/kinds/make_kinds.py
# The C sources and the design document are taken at a fixed commit (git show), so later
# edits to them do not change the calibration text.
import json, subprocess

COMMIT = "57e70d8"   # the repository state the code and document snapshots come from
SOURCES = ["model/forward.c", "kernels/kernels.c", "tokenizer/bpe.c", "util/json.c"]

def gsm8k(first, last):
    with open("data/gsm8k_test.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return rows[first:last]

def write(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)

def git_show(path):
    return subprocess.run(["git", "show", f"{COMMIT}:{path}"], check=True, capture_output=True).stdout.decode()

# math: GSM8K test problems 300-399, question and worked answer as plain text
write("data/kinds/gsm8k_worked.txt",
      "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in gsm8k(300, 400)))

# chat: GSM8K test problems 400-499 as SmolLM2 conversations (its ChatML template with the
# default system message, tokenizer/tokenizer.c), the worked answer as the assistant's turn
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
write("data/kinds/chatml_gsm8k.txt",
      "".join(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{r['question']}<|im_end|>\n"
              f"<|im_start|>assistant\n{r['answer']}<|im_end|>\n" for r in gsm8k(400, 500)))

# code: four of the project's C sources
write("data/kinds/c_source.txt", "".join(f"// ---- {p}\n{git_show(p)}\n" for p in SOURCES))

# technical documentation: the project's design document (Markdown)
write("data/kinds/design_doc.txt", git_show("docs/DESIGN.md"))
