# Thin wrapper over CMake for the README's two commands (and a few more).
#   make demo   install what is missing, build, run the pipeline on the samples, show alerts
#   make test   install what is missing, sanitizer build, run the whole ctest suite
#   make bench  optimised build, synthetic stream, events/s table (see docs/performance.md)
#   make fuzz   libFuzzer targets (clang) in build-fuzz/; make fuzz-long runs each one for
#               FUZZ_TIME seconds (docs/fuzzing.md)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

# fuzz-long: seconds per target, and which targets (default: every fuzz/fuzz_*.c).
FUZZ_TIME ?= 600
FUZZ_TARGETS ?= $(basename $(notdir $(wildcard fuzz/fuzz_*.c)))

.PHONY: all deps build release demo test bench fuzz fuzz-long format clean

all: build

deps:
	@bash scripts/install-deps.sh

# Sanitizer build (ASan + UBSan): the one the tests run.
build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=Debug -DKX_SANITIZE=ON >/dev/null
	@cmake --build build -j$(JOBS)

# Optimised build: the demo and the benchmark.
release: deps
	@cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DKX_SANITIZE=OFF >/dev/null
	@cmake --build build-release -j$(JOBS)

# The demo needs only the daemon and the broker/producer helpers.
demo: deps
	@cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DKX_SANITIZE=OFF >/dev/null
	@cmake --build build-release -j$(JOBS) --target klaxon kx-broker kx-produce
	@bash scripts/demo.sh build-release

# ctest in build/ also runs each fuzz target briefly, so build-fuzz/ is built first.
test: build fuzz
	@cd build && ctest --output-on-failure -j$(JOBS) --timeout 300

# libFuzzer needs clang; the libraries are rebuilt with its coverage instrumentation and
# ASan+UBSan in their own build dir, next to the gcc one the tests use.
fuzz: deps
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DKX_FUZZ=ON \
		>/dev/null
	@cmake --build build-fuzz -j$(JOBS)

# Each target in turn, keeping its corpus in build-fuzz/corpus/ so long runs build on each
# other. All targets run even when one fails; the exit status says whether any did.
fuzz-long: fuzz
	@fail=0; for t in $(FUZZ_TARGETS); do \
		bash fuzz/run.sh --keep build-fuzz $$t $(FUZZ_TIME) || fail=1; \
	done; exit $$fail

bench: release
	@bash bench/run.sh build-release

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-release build-fuzz
