// test_json.c: the JSON reader on valid documents, escapes, numbers and malformed input.
#include "testutil.h"
#include "../util/json.h"
#include "../util/util.h"

#include <stdlib.h>

#include <string.h>

static JsonValue *parse(const char *s, char *err) {
    return json_parse(s, strlen(s), err, 200);
}

START_TEST(test_values) {
    char err[200];
    JsonValue *v = parse(" {\"a\": [1, -2.5e1, true, false, null], \"b\": {\"c\": \"x\"}, \"n\": 9007199254740993} ", err);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(v->type, JSON_OBJECT);
    ck_assert_uint_eq(v->n, 3);
    const JsonValue *a = json_get(v, "a");
    ck_assert_int_eq(a->type, JSON_ARRAY);
    ck_assert_uint_eq(a->n, 5);
    ck_assert(a->items[0].number_is_int && a->items[0].integer == 1);
    ck_assert(!a->items[1].number_is_int);
    ck_assert_double_eq(a->items[1].number, -25.0);
    ck_assert_int_eq(a->items[2].type, JSON_BOOL);
    ck_assert_int_eq(a->items[2].boolean, 1);
    ck_assert_int_eq(a->items[4].type, JSON_NULL);
    ck_assert_str_eq(json_get(json_get(v, "b"), "c")->string, "x");
    ck_assert(json_get(v, "n")->integer == 9007199254740993LL);   // exact beyond double precision
    ck_assert_ptr_null(json_get(v, "missing"));
    json_free(v);
}
END_TEST

START_TEST(test_escapes) {
    char err[200];
    JsonValue *v = parse("\"a\\n\\t\\\"\\\\\\/\\u00e9\\u4e2d\\ud83d\\ude00\\u0000z\"", err);
    ck_assert_ptr_nonnull(v);
    const char want[] = "a\n\t\"\\/\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\0z";
    ck_assert_uint_eq(v->string_len, sizeof want - 1);
    ck_assert(memcmp(v->string, want, sizeof want - 1) == 0);
    json_free(v);
}
END_TEST

START_TEST(test_malformed) {
    const char *bad[] = {
        "", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{1:2}", "[1 2]", "\"abc", "tru", "01x",
        "-", "1.", "1e", "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"a\nb\"", "[1] 2", "nul",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[200] = "";
        JsonValue *v = parse(bad[i], err);
        ck_assert_msg(v == NULL, "accepted malformed JSON: %s", bad[i]);
        ck_assert_msg(strstr(err, "at byte") != NULL, "no position in error for %s: %s", bad[i], err);
    }
}
END_TEST

START_TEST(test_deep_nesting_rejected) {
    size_t n = 100000;
    char *s = malloc(n + 1);
    memset(s, '[', n);
    s[n] = 0;
    char err[200];
    ck_assert_ptr_null(json_parse(s, n, err, sizeof err));
    ck_assert(strstr(err, "nesting") != NULL);
    free(s);
}
END_TEST

START_TEST(test_llama3_tokenizer_json) {
    size_t len;
    char *text = read_file(DATA_DIR "/llama3/tokenizer.json", &len);
    char err[200];
    JsonValue *v = json_parse(text, len, err, sizeof err);
    ck_assert_msg(v != NULL, "%s", err);
    const JsonValue *model = json_get(v, "model");
    ck_assert_str_eq(json_get(model, "type")->string, "BPE");
    ck_assert_uint_eq(json_get(model, "vocab")->n, 128000);
    ck_assert_uint_eq(json_get(model, "merges")->n, 280147);
    json_free(v);
    free(text);
}
END_TEST

static Suite *json_suite(void) {
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("json");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, test_escapes);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_deep_nesting_rejected);
    tcase_add_test(tc, test_llama3_tokenizer_json);
    suite_add_tcase(s, tc);
    return s;
}

TEST_MAIN(json_suite)
