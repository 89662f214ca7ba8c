# Thin wrapper over CMake for the README's two commands (and a few more).
#   make demo   install what is missing, build, run the pipeline on the samples, show alerts
#   make test   install what is missing, sanitizer build, run the whole ctest suite
#   make bench  optimised build, synthetic stream, events/s table (see docs/performance.md)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build release demo test bench format clean

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

test: build
	@cd build && ctest --output-on-failure -j$(JOBS) --timeout 300

bench: release
	@bash bench/run.sh build-release

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-release
