// evaltext.c: passkey prompts and GSM8K texts (evaltext.h).
#include "evaltext.h"
#include "../util/json.h"
#include "../util/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- passkey ----------------------------------------------------------------------------

static const char *PK_INTRO =
    "There is an important pass key hidden inside a lot of irrelevant text. Find it and remember it. "
    "I will ask you for the pass key at the end.\n\n";
static const char *PK_QUESTION = "\n\nWhat is the pass key? The pass key is";

static int encode(const Tokenizer *t, const char *s, int **ids) {
    return tokenizer_encode(t, s, strlen(s), 0, ids);
}

// 1 if token id ends a line (its last byte is '\n').
static int ends_line(const Tokenizer *t, int id) {
    return t->token_len[id] > 0 && t->token[id][t->token_len[id] - 1] == '\n';
}

void build_passkey_prompt(PasskeyPrompt *p, const Tokenizer *t, const int *hay, int n_hay, int key,
                          double depth, int max_len) {
    memset(p, 0, sizeof *p);
    if (key < 10000 || key > 99999) fatal("passkey: key %d is not 5 digits", key);
    if (!(depth >= 0.0 && depth <= 1.0)) fatal("passkey: depth %g not in [0, 1]", depth);
    snprintf(p->key_text, sizeof p->key_text, "%d", key);
    char needle[128], answer[16];
    snprintf(needle, sizeof needle, "The pass key is %d. Remember it. %d is the pass key.\n", key, key);
    snprintf(answer, sizeof answer, " %d", key);
    int *intro, *nd, *q;
    int n_intro = encode(t, PK_INTRO, &intro), n_nd = encode(t, needle, &nd), n_q = encode(t, PK_QUESTION, &q);
    p->n_key = encode(t, answer, &p->key_ids);
    int h = max_len - n_intro - n_nd - n_q;            // haystack tokens that fit
    if (h > n_hay) h = n_hay;
    if (h < 16) fatal("passkey: %d tokens leave no room for the haystack", max_len);
    while (h > 1 && !ends_line(t, hay[h - 1])) h--;    // end the haystack at a line end
    if (h <= 1) fatal("passkey: haystack has no line break");
    // the needle starts the line nearest to depth * h
    int want = (int)(depth * h + 0.5), a = -1;
    for (int d = 0; d <= h && a < 0; d++) {
        if (want - d >= 0 && (want - d == 0 || ends_line(t, hay[want - d - 1]))) a = want - d;
        else if (want + d <= h && ends_line(t, hay[want + d - 1])) a = want + d;
    }
    p->n = n_intro + h + n_nd + n_q;
    p->ids = xmalloc((size_t)p->n * sizeof(int));
    int k = 0;
    memcpy(p->ids + k, intro, (size_t)n_intro * sizeof(int)); k += n_intro;
    memcpy(p->ids + k, hay, (size_t)a * sizeof(int)); k += a;
    p->needle_at = k; p->needle_len = n_nd;
    memcpy(p->ids + k, nd, (size_t)n_nd * sizeof(int)); k += n_nd;
    memcpy(p->ids + k, hay + a, (size_t)(h - a) * sizeof(int)); k += h - a;
    memcpy(p->ids + k, q, (size_t)n_q * sizeof(int));
    free(intro); free(nd); free(q);
}

void free_passkey_prompt(PasskeyPrompt *p) {
    free(p->ids);
    free(p->key_ids);
    memset(p, 0, sizeof *p);
}

// ---- GSM8K -------------------------------------------------------------------------------

char *gsm8k_strip_calc(const char *s) {
    char *out = xmalloc(strlen(s) + 1), *o = out;
    while (*s) {
        const char *end = strncmp(s, "<<", 2) == 0 ? strstr(s + 2, ">>") : NULL;
        if (end) { s = end + 2; continue; }
        *o++ = *s++;
    }
    *o = 0;
    return out;
}

// Scan one number at s (s[0] a digit, or '-' before a digit). Returns its end.
static const char *scan_number(const char *s, char *out, int out_size) {
    int n = 0;
    if (*s == '-') { if (n < out_size - 1) out[n++] = '-'; s++; }
    for (; isdigit((unsigned char)*s) || (*s == ',' && isdigit((unsigned char)s[1])) ||
           (*s == '.' && isdigit((unsigned char)s[1])); s++)
        if (*s != ',' && n < out_size - 1) out[n++] = *s;
    out[n] = 0;
    char *dot = strchr(out, '.');
    if (dot) {                                   // "18.50" -> "18.5", "18.00" -> "18"
        char *e = out + strlen(out) - 1;
        while (e > dot && *e == '0') *e-- = 0;
        if (e == dot) *e = 0;
    }
    if (strcmp(out, "-0") == 0) strcpy(out, "0");
    return s;
}

static int is_number_start(const char *s) {
    return isdigit((unsigned char)s[0]) || (s[0] == '-' && isdigit((unsigned char)s[1]));
}

int gsm8k_final_number(const char *text, char *out, int out_size) {
    if (out_size < 2) return 0;
    const char *mark = strstr(text, "####");
    if (mark) {
        for (const char *s = mark + 4; *s && *s != '\n'; s++)
            if (is_number_start(s)) { scan_number(s, out, out_size); return 1; }
    }
    int found = 0;
    for (const char *s = text; *s;) {
        if (is_number_start(s) && (s == text || !isalnum((unsigned char)s[-1]))) {
            s = scan_number(s, out, out_size);
            found = 1;
        } else s++;
    }
    return found;
}

GsmProblem *load_gsm8k(const char *path, int *n) {
    size_t len;
    char *text = read_file(path, &len);
    int cap = 0, line_no = 0;
    GsmProblem *ps = NULL;
    *n = 0;
    for (char *line = text; line < text + len;) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        char *end = nl ? nl : text + len;
        line_no++;
        if (end > line) {
            char err[160];
            JsonValue *v = json_parse(line, (size_t)(end - line), err, sizeof err);
            const JsonValue *q = v ? json_get(v, "question") : NULL, *a = v ? json_get(v, "answer") : NULL;
            if (!q || !a || q->type != JSON_STRING || a->type != JSON_STRING)
                fatal("%s: line %d: %s", path, line_no, v ? "needs string fields question and answer" : err);
            if (*n == cap) { cap = cap ? 2 * cap : 256; ps = xrealloc(ps, (size_t)cap * sizeof *ps); }
            GsmProblem *p = &ps[(*n)++];
            p->question = xstrdup(q->string);
            p->answer = gsm8k_strip_calc(a->string);
            if (!strstr(p->answer, "####") || !gsm8k_final_number(p->answer, p->number, sizeof p->number))
                fatal("%s: line %d: answer has no final \"#### number\"", path, line_no);
            json_free(v);
        }
        line = end + 1;
    }
    free(text);
    if (*n == 0) fatal("%s: no problems", path);
    return ps;
}

void free_gsm8k(GsmProblem *p, int n) {
    for (int i = 0; i < n; i++) { free(p[i].question); free(p[i].answer); }
    free(p);
}

char *gsm8k_prompt(const GsmProblem *p) {
    size_t n = strlen(p->question) + 32;
    char *s = xmalloc(n);
    snprintf(s, n, "Question: %s\nAnswer:", p->question);
    return s;
}

char *gsm8k_shots(const GsmProblem *shots, int k) {
    size_t n = 1;
    for (int i = 0; i < k; i++) n += strlen(shots[i].question) + strlen(shots[i].answer) + 32;
    char *s = xmalloc(n), *o = s;
    *o = 0;
    for (int i = 0; i < k; i++)
        o += snprintf(o, n - (size_t)(o - s), "Question: %s\nAnswer: %s\n\n", shots[i].question, shots[i].answer);
    return s;
}

int gsm8k_done(const char *g) { return strstr(g, "\n\n") != NULL || strstr(g, "Question:") != NULL; }
