// kvconfig_file.c: KVTuner config files (docs/DESIGN.md §3), per layer
//
//     0:                 # layer index
//       nbits_key: 8
//       nbits_value: 4
//
// or per KV head (layer -> head -> the same pair), in YAML or the same structure as JSON. A
// layer may add `rotate: true` (its q, k, v Hadamard-rotated; quant/kvrotate.h), beside its
// pair or its heads.
// YAML here is the subset these files use: block mappings by indentation, `key: value` with
// integer or string scalars, comments, blank lines, CRLF, an optional leading `---`. Both
// syntaxes become one small tree (CfgNode), checked against the model's shape by one function.
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "kvconfig.h"
#include "../util/json.h"
#include "../util/util.h"

typedef struct CfgNode {
    char *key;                 // mapping key (NULL at the root)
    char *value;               // scalar text, or NULL for a mapping
    int line;                  // source line (YAML), 0 for JSON
    struct CfgNode *kids;      // mapping entries, in file order
    int n, cap;
} CfgNode;

static CfgNode *add_kid(CfgNode *parent, const char *key, int line) {
    if (parent->n == parent->cap) {
        parent->cap = parent->cap ? 2 * parent->cap : 8;
        parent->kids = xrealloc(parent->kids, sizeof(CfgNode) * (size_t)parent->cap);
    }
    CfgNode *k = &parent->kids[parent->n++];
    memset(k, 0, sizeof *k);
    k->key = xstrdup(key);
    k->line = line;
    return k;
}

// A config's mappings are small (a key per layer, per head, per field), so a linear search
// for a repeated key is enough; the cap keeps a hostile file from making it quadratic.
enum { MAX_KEYS = 4096 };

// Before `key` joins parent: fatal if the mapping already has it, or has MAX_KEYS keys
// (line 0: a JSON file, no line numbers).
static void check_new_key(const CfgNode *parent, const char *key, const char *path, int line) {
    char at[32] = "";
    if (line) snprintf(at, sizeof at, " line %d:", line);
    if (parent->n >= MAX_KEYS) fatal("%s:%s more than %d keys in one mapping", path, at, MAX_KEYS);
    for (int i = 0; i < parent->n; i++)
        if (strcmp(parent->kids[i].key, key) == 0) fatal("%s:%s duplicate key '%s'", path, at, printable(key));
}

static void free_node(CfgNode *n) {
    for (int i = 0; i < n->n; i++) free_node(&n->kids[i]);
    free(n->kids); free(n->key); free(n->value);
}

// ---- YAML subset ---------------------------------------------------------------------------

// Strip surrounding quotes of a scalar or key, in place.
static char *unquote(char *s) {
    size_t n = strlen(s);
    if (n >= 2 && (s[0] == '"' || s[0] == '\'') && s[n - 1] == s[0]) { s[n - 1] = 0; return s + 1; }
    return s;
}

static void parse_yaml(CfgNode *root, char *text, const char *path) {
    enum { MAX_DEPTH = 16 };
    CfgNode *stack[MAX_DEPTH];   // open mappings, with their indentation and their kids' indentation
    int indent_of[MAX_DEPTH], kid_indent[MAX_DEPTH], depth = 0;
    stack[0] = root; indent_of[0] = -1; kid_indent[0] = -1;
    int line_no = 0, seen_content = 0;
    for (char *line = text, *next; line; line = next) {
        line_no++;
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r') line[--len] = 0;
        for (char *h = line; (h = strchr(h, '#')); h++)                   // comments
            if (h == line || isspace((unsigned char)h[-1])) { *h = 0; break; }
        len = strlen(line);
        while (len && isspace((unsigned char)line[len - 1])) line[--len] = 0;
        int indent = 0;
        while (line[indent] == ' ') indent++;
        if (line[indent] == '\t') fatal("%s: line %d: tab in indentation (use spaces)", path, line_no);
        if (!line[indent]) continue;                                       // blank
        char *s = line + indent;
        if (!seen_content && indent == 0 && strcmp(s, "---") == 0) continue;
        seen_content = 1;
        if (s[0] == '-' && (s[1] == ' ' || !s[1])) fatal("%s: line %d: YAML sequences are not part of the config format", path, line_no);
        char *colon = strstr(s, ": ");
        if (!colon && s[strlen(s) - 1] == ':') colon = s + strlen(s) - 1;
        if (!colon || colon == s) fatal("%s: line %d: malformed YAML: expected 'key:' or 'key: value'", path, line_no);
        *colon = 0;
        char *key = unquote(s), *value = colon[1] ? colon + 2 : colon + 1;
        while (*value == ' ') value++;
        while (depth > 0 && indent <= indent_of[depth]) depth--;          // close deeper mappings
        CfgNode *parent = stack[depth];
        if (kid_indent[depth] == -1) kid_indent[depth] = indent;
        else if (indent != kid_indent[depth]) fatal("%s: line %d: malformed YAML: inconsistent indentation", path, line_no);
        check_new_key(parent, key, path, line_no);
        CfgNode *node = add_kid(parent, key, line_no);
        if (*value) {
            if (*value == '{' || *value == '[' || *value == '&' || *value == '*' || *value == '|' || *value == '>')
                fatal("%s: line %d: YAML flow/anchor/block scalars are not part of the config format", path, line_no);
            node->value = xstrdup(unquote(value));
        } else {
            if (depth + 1 >= MAX_DEPTH) fatal("%s: line %d: nested too deeply", path, line_no);
            depth++;
            stack[depth] = node; indent_of[depth] = indent; kid_indent[depth] = -1;
        }
    }
}

// ---- JSON -------------------------------------------------------------------------------------

static void from_json(CfgNode *node, const JsonValue *v, const char *path) {
    if (v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->n; i++) {
            check_new_key(node, v->keys[i], path, 0);
            from_json(add_kid(node, v->keys[i], 0), &v->items[i], path);
        }
        return;
    }
    char buf[64];
    if (v->type == JSON_NUMBER && v->number_is_int) snprintf(buf, sizeof buf, "%lld", (long long)v->integer);
    else if (v->type == JSON_NUMBER) snprintf(buf, sizeof buf, "%g", v->number);
    else if (v->type == JSON_BOOL) snprintf(buf, sizeof buf, "%s", v->boolean ? "true" : "false");
    else snprintf(buf, sizeof buf, "(a JSON %s)", v->type == JSON_STRING ? "string" : v->type == JSON_ARRAY ? "array" : "null");
    node->value = xstrdup(buf);
}

// ---- checking against the model ---------------------------------------------------------------

// Strict non-negative integer; -1 if s is anything else.
static long parse_index(const char *s) {
    if (!*s || strlen(s) > 9) return -1;
    for (const char *p = s; *p; p++) if (!isdigit((unsigned char)*p)) return -1;
    return strtol(s, NULL, 10);
}

// Where a node is, for messages: "layer 3" or "layer 3 kv head 1", plus the line if known.
static void where(char *buf, size_t n, int layer, int head, int line) {
    int k = snprintf(buf, n, "layer %d", layer);
    if (head >= 0) k += snprintf(buf + k, n - (size_t)k, " kv head %d", head);
    if (line > 0) snprintf(buf + k, n - (size_t)k, " (line %d)", line);
}

// A {nbits_key, nbits_value} mapping into *b.
static void read_pair(const CfgNode *node, KVBits *b, const char *path, int layer, int head) {
    char at[96];
    where(at, sizeof at, layer, head, node->line);
    if (node->value) fatal("%s: %s: expected a mapping with nbits_key and nbits_value, got '%s'", path, at, printable(node->value));
    int got[2] = { 0, 0 };
    for (int i = 0; i < node->n; i++) {
        const CfgNode *k = &node->kids[i];
        if (head < 0 && strcmp(k->key, "rotate") == 0) continue;        // the layer's, read by apply_tree
        int which = strcmp(k->key, "nbits_key") == 0 ? 0 : strcmp(k->key, "nbits_value") == 0 ? 1 : -1;
        if (which < 0) fatal("%s: %s: unknown key '%s' (expected nbits_key, nbits_value%s)", path, at, printable(k->key),
                             head < 0 ? ", rotate" : "");
        if (!k->value) fatal("%s: %s: %s must be a number, not a mapping", path, at, k->key);
        long bits = parse_index(k->value);
        if (bits != 2 && bits != 4 && bits != 8 && bits != 16)
            fatal("%s: %s: %s is '%s', not one of 2, 4, 8, 16", path, at, k->key, printable(k->value));
        if (which == 0) b->k_bits = (int)bits; else b->v_bits = (int)bits;
        got[which] = 1;
    }
    if (!got[0] || !got[1]) fatal("%s: %s: missing %s", path, at, got[0] ? "nbits_value" : "nbits_key");
}

// The layer's `rotate: true|false`, if it has one: 1, 0, or -1 when absent.
static int read_rotate(const CfgNode *layer_node, const char *path, int layer) {
    for (int i = 0; i < layer_node->n; i++) {
        const CfgNode *k = &layer_node->kids[i];
        if (strcmp(k->key, "rotate")) continue;
        char at[96];
        where(at, sizeof at, layer, -1, k->line);
        if (k->value && strcmp(k->value, "true") == 0) return 1;
        if (k->value && strcmp(k->value, "false") == 0) return 0;
        fatal("%s: %s: rotate is '%s', not true or false", path, at, k->value ? printable(k->value) : "a mapping");
    }
    return -1;
}

static void apply_tree(KVSpec *s, const CfgNode *root, const char *path) {
    int L = s->n_layers, H = s->n_kv_heads;
    char *seen = xcalloc((size_t)L * (size_t)H, 1);
    if (root->value || root->n == 0) fatal("%s: empty config: expected a mapping from layer index to bits", path);
    for (int i = 0; i < root->n; i++) {
        const CfgNode *ln = &root->kids[i];
        long layer = parse_index(ln->key);
        if (layer < 0) fatal("%s: unknown key '%s' at the top level (expected a layer index)", path, printable(ln->key));
        if (layer >= L) fatal("%s: layer %ld present but the model has %d layers (0..%d)", path, layer, L, L - 1);
        int per_head = 0;
        for (int j = 0; j < ln->n; j++) per_head |= parse_index(ln->kids[j].key) >= 0;
        if (ln->value) per_head = 0;
        if (read_rotate(ln, path, (int)layer) == 1) build_kvspec_rotate(s)[layer] = 1;
        if (!per_head) {
            KVBits b;
            read_pair(ln, &b, path, (int)layer, -1);
            for (int h = 0; h < H; h++) { s->bits[layer * H + h] = b; seen[layer * H + h] = 1; }
            continue;
        }
        for (int j = 0; j < ln->n; j++) {
            const CfgNode *hn = &ln->kids[j];
            if (strcmp(hn->key, "rotate") == 0) continue;
            long head = parse_index(hn->key);
            char at[96];
            where(at, sizeof at, (int)layer, -1, hn->line);
            if (head < 0) fatal("%s: %s: unknown key '%s' (expected a kv head index)", path, at, printable(hn->key));
            if (head >= H) fatal("%s: %s: kv head %ld present but the model has %d kv heads (0..%d)", path, at, head, H, H - 1);
            read_pair(hn, &s->bits[layer * H + head], path, (int)layer, (int)head);
            seen[layer * H + head] = 1;
        }
        for (int h = 0; h < H; h++)
            if (!seen[layer * H + h]) fatal("%s: layer %ld: missing kv head %d (the model has %d kv heads)", path, layer, h, H);
    }
    for (int l = 0; l < L; l++)
        if (!seen[l * H]) fatal("%s: missing layer %d (the model has %d layers, 0..%d)", path, l, L, L - 1);
    free(seen);
}

void load_kvconfig(KVSpec *s, const char *path) {
    size_t len;
    char *text = read_file(path, &len);
    load_kvconfig_text(s, path, text, len);
    free(text);
}

void load_kvconfig_text(KVSpec *s, const char *path, const char *bytes, size_t len) {
    if (memchr(bytes, 0, len)) fatal("%s: NUL byte in a text config", path);
    char *text = xmalloc(len + 1);     // the YAML reader cuts lines in place
    memcpy(text, bytes, len);
    text[len] = 0;
    CfgNode root = {0};
    const char *p = text;
    while (isspace((unsigned char)*p)) p++;
    if (*p == '{') {
        char err[256];
        JsonValue *v = json_parse(text, len, err, sizeof err);
        if (!v) fatal("%s: malformed JSON: %s", path, err);
        from_json(&root, v, path);
        json_free(v);
    } else {
        parse_yaml(&root, text, path);
    }
    apply_tree(s, &root, path);
    free_node(&root);
    free(text);
}
