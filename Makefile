# Thin wrapper over CMake. `make` builds build/aios, `make test` runs every
# test through CTest, `make run` runs the demonstration, `make asan` builds
# with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/.
BUILD      ?= build
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
BUILD_TYPE ?= RelWithDebInfo

.PHONY: all deps llama configure test run asan asan-test bench clean ui-test

all: configure
	@cmake --build $(BUILD) -j $(JOBS)

deps:
	@scripts/deps.sh

configure: deps
	@prefix="$$(scripts/llama.sh)" && \
	  cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DLLAMA_PREFIX="$$prefix" $(CMAKE_ARGS) >/dev/null

test: all
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

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
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS) --timeout 900

clean:
	rm -rf build build-asan
