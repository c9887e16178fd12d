// json.h: a small JSON reader (RFC 8259) for config.json, tokenizer.json, safetensors
// headers and KV-config files. Parses the whole text into a tree of JsonValue.
#ifndef KVT_JSON_H
#define KVT_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct JsonValue JsonValue;
struct JsonValue {
    JsonType type;
    int boolean;            // JSON_BOOL
    double number;          // JSON_NUMBER
    int number_is_int;      // the literal had no fraction/exponent and fits in int64
    int64_t integer;        // JSON_NUMBER when number_is_int
    char *string;           // JSON_STRING: UTF-8, NUL-terminated (may contain \0 via \u0000: see string_len)
    size_t string_len;
    size_t n;               // JSON_ARRAY / JSON_OBJECT: number of items
    JsonValue *items;       // [n] array items or object values
    char **keys;            // [n] object keys (JSON_OBJECT only), in file order
};

// Parse text[0..len). Returns NULL on malformed input and writes a one-line reason
// (with byte offset) into err. The tree is freed with json_free.
JsonValue *json_parse(const char *text, size_t len, char *err, size_t errlen);
void json_free(JsonValue *v);

// Object lookup by key (first match); NULL if v is not an object or has no such key.
const JsonValue *json_get(const JsonValue *v, const char *key);

#endif
