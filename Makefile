# Thin wrapper over CMake. `make` builds build/aios, `make test` runs every
# test through CTest, `make run` runs the demonstration, `make asan` builds
# with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/, `make
# fuzz` builds the libFuzzer targets with clang into build-fuzz/ and runs
# each for FUZZ_S seconds, keeping new corpus entries (tests/fuzz/).
# `make GPU=vulkan` / `make GPU=cuda` build the same into build-vulkan/ or
# build-cuda/ against a llama.cpp variant with that backend (docs/gpu.md);
# `make gpu-test` builds the Vulkan variant and runs the GPU tests on Mesa's
# lavapipe (a CPU implementation of Vulkan).
GPU        ?=
ifeq ($(GPU),)
BUILD      ?= build
GPU_DEPS   :=
else ifeq ($(GPU),vulkan)
BUILD      ?= build-vulkan
GPU_DEPS   := libvulkan-dev glslc spirv-headers mesa-vulkan-drivers vulkan-tools
else ifeq ($(GPU),cuda)
BUILD      ?= build-cuda
GPU_DEPS   :=
else
$(error GPU must be vulkan or cuda (or empty for the CPU build), not '$(GPU)')
endif
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
BUILD_TYPE ?= RelWithDebInfo

FUZZ_S       ?= 600
FUZZ_TARGETS ?= chat query schema config path calc mcp remote agent headers responses hub embeddings json retrieve
FUZZ_JOBS    ?= 1

.PHONY: all deps llama configure test run asan asan-test bench-guard clean fuzz fuzz-build ui-test gpu-test

all: configure
	@cmake --build $(BUILD) -j $(JOBS)

deps:
	@scripts/deps.sh $(GPU_DEPS)

configure: deps
	@prefix="$$(scripts/llama.sh $(if $(GPU),--gpu $(GPU)))" && \
	  cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DLLAMA_PREFIX="$$prefix" $(CMAKE_ARGS) >/dev/null

# every test but timings (label bench: bench-guard, on a quiet machine)
test: all
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600 -LE bench

bench-guard: all
	@cd $(BUILD) && ctest --output-on-failure -L bench --timeout 600

# the GPU tests (ctest label gpu) on the first Vulkan device, lavapipe where
# there is no GPU; GPU_TEST_DEVICE picks another (vulkaninfo --summary)
GPU_TEST_DEVICE ?= 0
gpu-test:
	@$(MAKE) --no-print-directory configure GPU=vulkan
	@cmake --build build-vulkan -j $(JOBS) --target aios gpu-tests
	@cd build-vulkan && GGML_VK_VISIBLE_DEVICES=$(GPU_TEST_DEVICE) \
	  ctest --output-on-failure -L gpu --timeout 900

run: all
	@$(BUILD)/aios demo

# the dashboard in headless Chromium (Debian's chromium is installed first):
# agents appear with their numbers, kill and logs work; screenshot in
# $(BUILD)/dashboard.png
ui-test: all
	@scripts/deps.sh chromium
	@python3 tests/ui/ui_test.py $(BUILD)/aios $(BUILD)/dashboard.png

asan:
	@$(MAKE) --no-print-directory all BUILD=build-asan BUILD_TYPE=Debug CMAKE_ARGS=-DAIOS_SANITIZE=ON

asan-test: asan
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS) --timeout 900 -LE bench

# Each target runs FUZZ_S seconds on a scratch corpus seeded from
# tests/fuzz/corpus/<t>; then the inputs that reach new code (edges, not
# hit counts, to keep the corpus small) are merged back into
# tests/fuzz/corpus/<t> (libFuzzer -merge=1). FUZZ_JOBS targets run at
# once. A crash stops `make fuzz` and leaves crash-* in build-fuzz/fuzz-out/<t>.
fuzz-build: deps
	@prefix="$$(scripts/llama.sh)" && \
	  CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DAIOS_FUZZ=ON -DLLAMA_PREFIX="$$prefix" >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target fuzzers

fuzz: fuzz-build
	@printf '%s\n' $(FUZZ_TARGETS) | xargs -P $(FUZZ_JOBS) -I{} sh -c '\
	  t={}; out=build-fuzz/fuzz-out/$$t; mkdir -p $$out/scratch && \
	  cd $$out && AIOS_LOG=error ../../tests/fuzz/fuzz_$$t -max_total_time=$(FUZZ_S) \
	    -print_final_stats=1 -rss_limit_mb=4096 -timeout=30 \
	    $$(case $$t in config|path|calc|headers) ;; *) echo -dict=../../../tests/fuzz/json.dict;; esac) scratch ../../../tests/fuzz/corpus/$$t \
	    > log.txt 2>&1 || { tail -40 log.txt; echo "fuzz: $$t CRASHED (build-fuzz/fuzz-out/$$t)"; exit 255; }; \
	  ../../tests/fuzz/fuzz_$$t -merge=1 -use_counters=0 ../../../tests/fuzz/corpus/$$t scratch > merge.txt 2>&1; \
	  echo "fuzz: $$t: $$(grep DONE log.txt | tail -1 | grep -o "cov: [0-9]* ft: [0-9]*") $$(grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added" log.txt | tr -s " " | tr "\n" " ")"'

clean:
	rm -rf build build-asan build-fuzz build-vulkan build-cuda
