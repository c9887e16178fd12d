#!/usr/bin/env python3
"""Check tokenizer/unicode_tables.c against the regex engine of the Hugging Face `tokenizers`
library (Oniguruma): for every code point, does it match \\p{L}, \\p{N}, \\s there and in our
tables? Prints the disagreements (there should be none) and exits 1 if any.

    python3 tests/reference/check_unicode_classes.py
"""
import re
import sys
from tokenizers import Regex, pre_tokenizers

src = open("tokenizer/unicode_tables.c").read()


def table(name):
    body = re.search(r"const uint32_t %s\[\]\[2\] = \{[^\n]*\n(.*?)\};" % name, src, re.S).group(1)
    s = set()
    for a, b in re.findall(r"\{0x([0-9a-f]+),0x([0-9a-f]+)\}", body):
        s.update(range(int(a, 16), int(b, 16) + 1))
    return s


# All code points except surrogates (not valid in UTF-8 text).
cps = [c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]
text = "".join(map(chr, cps))
bad = 0
for name, pat in [("unicode_letter", r"\p{L}"), ("unicode_number", r"\p{N}"), ("unicode_space", r"\s")]:
    # "removed": the matches vanish, what is left are the code points outside the class.
    split = pre_tokenizers.Split(Regex(pat), behavior="removed")
    outside = set(ord(ch) for piece, _ in split.pre_tokenize_str(text) for ch in piece)
    ref = set(cps) - outside
    ours = table(name)
    diff = sorted(ref ^ ours)
    print(f"{pat}: tokenizers {len(ref)} code points, tables {len(ours)}, disagreements {len(diff)}",
          [hex(c) for c in diff[:20]])
    bad += len(diff)
sys.exit(1 if bad else 0)
