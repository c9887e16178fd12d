// json.c: a recursive-descent JSON parser (RFC 8259) building a JsonValue tree.
// Strict: no trailing commas, no comments, bounded nesting depth; errors name the byte offset.
#include "json.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 256

typedef struct {
    const char *s;
    size_t len, pos;
    char *err;
    size_t errlen;
    int failed;
} Parser;

static void fail(Parser *p, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = 1;
    if (!p->err || !p->errlen) return;
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "%s at byte %zu", msg, p->pos);
}

static void skip_ws(Parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int literal(Parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return 0;
    p->pos += n;
    return 1;
}

static int hex4(Parser *p, unsigned *out) {
    if (p->len - p->pos < 4) return 0;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    p->pos += 4;
    *out = v;
    return 1;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f)); return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f)); return 4;
}

// Parses a string starting at the opening quote. The decoded text is never longer than
// the escaped source, so one allocation of the source length suffices.
static char *parse_string(Parser *p, size_t *out_len) {
    p->pos++;                                       // opening quote
    size_t start = p->pos;
    while (p->pos < p->len && p->s[p->pos] != '"') {
        if (p->s[p->pos] == '\\') p->pos++;
        p->pos++;
    }
    if (p->pos >= p->len) { fail(p, "unterminated string"); return NULL; }
    size_t end = p->pos;
    char *o = xmalloc(end - start + 1);
    size_t n = 0;
    p->pos = start;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos++];
        if (c < 0x20) { fail(p, "control character in string"); free(o); return NULL; }
        if (c != '\\') { o[n++] = (char)c; continue; }
        char e = p->s[p->pos++];
        switch (e) {
        case '"': o[n++] = '"'; break;
        case '\\': o[n++] = '\\'; break;
        case '/': o[n++] = '/'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (!hex4(p, &cp)) { fail(p, "bad \\u escape"); free(o); return NULL; }
            if (cp >= 0xd800 && cp < 0xdc00) {      // high surrogate: needs its low half
                unsigned lo;
                if (p->pos + 2 > end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    fail(p, "unpaired surrogate"); free(o); return NULL;
                }
                p->pos += 2;
                if (!hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                    fail(p, "unpaired surrogate"); free(o); return NULL;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                fail(p, "unpaired surrogate"); free(o); return NULL;
            }
            n += put_utf8(o + n, cp);
            break;
        }
        default: fail(p, "bad escape"); free(o); return NULL;
        }
    }
    p->pos = end + 1;                               // closing quote
    o[n] = 0;
    *out_len = n;
    return o;
}

static int parse_number(Parser *p, JsonValue *v) {
    size_t start = p->pos;
    int is_int = 1;
    if (p->pos < p->len && p->s[p->pos] == '-') p->pos++;
    if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') { fail(p, "bad number"); return 0; }
    if (p->s[p->pos] == '0') p->pos++;
    else while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    if (p->pos < p->len && p->s[p->pos] == '.') {
        is_int = 0;
        p->pos++;
        size_t d = p->pos;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
        if (p->pos == d) { fail(p, "bad number"); return 0; }
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        is_int = 0;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        size_t d = p->pos;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
        if (p->pos == d) { fail(p, "bad number"); return 0; }
    }
    char buf[64];
    size_t n = p->pos - start;
    if (n >= sizeof buf) {                          // absurdly long literal: parse a copy
        char *copy = xmalloc(n + 1);
        memcpy(copy, p->s + start, n);
        copy[n] = 0;
        v->number = strtod(copy, NULL);
        free(copy);
        is_int = 0;
    } else {
        memcpy(buf, p->s + start, n);
        buf[n] = 0;
        v->number = strtod(buf, NULL);
        if (is_int) {
            errno = 0;
            long long ll = strtoll(buf, NULL, 10);
            if (errno == ERANGE) is_int = 0;
            else v->integer = ll;
        }
    }
    v->type = JSON_NUMBER;
    v->number_is_int = is_int;
    return 1;
}

static int parse_value(Parser *p, JsonValue *v, int depth);

// Arrays and objects grow their item list by doubling.
static int parse_container(Parser *p, JsonValue *v, int depth, int is_object) {
    char close = is_object ? '}' : ']';
    v->type = is_object ? JSON_OBJECT : JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return 1; }
    size_t cap = 0;
    for (;;) {
        if (v->n == cap) {
            cap = cap ? cap * 2 : 4;
            v->items = xrealloc(v->items, cap * sizeof(JsonValue));
            if (is_object) v->keys = xrealloc(v->keys, cap * sizeof(char *));
        }
        JsonValue *item = &v->items[v->n];
        memset(item, 0, sizeof *item);
        skip_ws(p);
        if (is_object) {
            v->keys[v->n] = NULL;
            if (p->pos >= p->len || p->s[p->pos] != '"') { v->n++; fail(p, "expected a string key"); return 0; }
            size_t klen;
            v->keys[v->n] = parse_string(p, &klen);
            v->n++;
            if (!v->keys[v->n - 1]) return 0;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') { fail(p, "expected ':'"); return 0; }
            p->pos++;
        } else {
            v->n++;
        }
        if (!parse_value(p, item, depth + 1)) return 0;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; return 1; }
        fail(p, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
        return 0;
    }
}

static int parse_value(Parser *p, JsonValue *v, int depth) {
    if (depth > JSON_MAX_DEPTH) { fail(p, "nesting deeper than %d", JSON_MAX_DEPTH); return 0; }
    skip_ws(p);
    if (p->pos >= p->len) { fail(p, "unexpected end of input"); return 0; }
    char c = p->s[p->pos];
    if (c == '{' || c == '[') return parse_container(p, v, depth, c == '{');
    if (c == '"') {
        v->type = JSON_STRING;
        v->string = parse_string(p, &v->string_len);
        return v->string != NULL;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
    if (literal(p, "true")) { v->type = JSON_BOOL; v->boolean = 1; return 1; }
    if (literal(p, "false")) { v->type = JSON_BOOL; v->boolean = 0; return 1; }
    if (literal(p, "null")) { v->type = JSON_NULL; return 1; }
    if (c > 0x20 && c < 0x7f) fail(p, "unexpected character '%c'", c);
    else fail(p, "unexpected byte 0x%02x", (unsigned char)c);
    return 0;
}

static void free_children(JsonValue *v) {
    if (v->type == JSON_STRING) free(v->string);
    if (v->type == JSON_ARRAY || v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->n; i++) {
            free_children(&v->items[i]);
            if (v->keys) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
}

JsonValue *json_parse(const char *text, size_t len, char *err, size_t errlen) {
    Parser p = { text, len, 0, err, errlen, 0 };
    JsonValue *v = xcalloc(1, sizeof *v);
    if (parse_value(&p, v, 0)) {
        skip_ws(&p);
        if (p.pos != p.len) fail(&p, "trailing characters after the JSON value");
    }
    if (p.failed) {
        free_children(v);
        free(v);
        return NULL;
    }
    return v;
}

void json_free(JsonValue *v) {
    if (!v) return;
    free_children(v);
    free(v);
}

const JsonValue *json_get(const JsonValue *v, const char *key) {
    if (!v || v->type != JSON_OBJECT) return NULL;
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], key) == 0) return &v->items[i];
    return NULL;
}
