# mproc — convenience wrapper around CMake.  See README.md.
#   make            build (build/)
#   make demo       build, then run the tour of the seed programs in C
#   make test       install missing packages, build with -Werror, run every test
#   make asan       the test suite under AddressSanitizer + UBSan (build-asan/)
#   make tsan       the test suite under ThreadSanitizer (build-tsan/)
#   make bench      benchmarks side by side with Python; writes docs/PERFORMANCE.md
#   make fuzz       libFuzzer on the frame decoder and the handshake (clang;
#                   FUZZ_SECONDS per target, default 60)
#   make install PREFIX=/usr/local

BUILD   ?= build
PREFIX  ?= /usr/local
JOBS    ?= 2
CMAKE   ?= cmake
QUICK   ?=

.PHONY: all build demo test asan tsan bench fuzz install clean deps

all: build

# A fresh machine may lack the packages the build needs: install them first
# (as root; otherwise deps.sh prints the command to run).
$(BUILD)/Makefile:
	@sh scripts/deps.sh test
	$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DCMAKE_INSTALL_PREFIX=$(PREFIX) -DMP_WERROR=ON

build: $(BUILD)/Makefile
	$(CMAKE) --build $(BUILD) -j $(JOBS)

deps:
	@sh scripts/deps.sh test

# Only what the tour runs (the examples and the library), not the tests and
# benchmarks.
demo: $(BUILD)/Makefile
	$(CMAKE) --build $(BUILD) -j $(JOBS) --target tour
	@sh examples/demo.sh $(BUILD)

test: deps build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

asan: deps
	$(CMAKE) -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMP_WERROR=ON \
	    -DMP_ASAN=ON -DMP_UBSAN=ON -DMP_BENCH=OFF -DMP_TEST_TIMEOUT_MULTIPLIER=3
	$(CMAKE) --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

tsan: deps
	$(CMAKE) -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DMP_WERROR=ON \
	    -DMP_TSAN=ON -DMP_BENCH=OFF -DMP_EXAMPLES=OFF -DMP_TEST_TIMEOUT_MULTIPLIER=5
	$(CMAKE) --build build-tsan -j $(JOBS)
	cd build-tsan && ctest --output-on-failure -j $(JOBS) -L tsan

bench:
	@sh scripts/deps.sh bench
	$(CMAKE) -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DMP_TESTS=OFF
	$(CMAKE) --build build-bench -j $(JOBS)
	@sh bench/run.sh build-bench $(if $(QUICK),quick,full)

FUZZ_SECONDS ?= 60
fuzz:
	@sh scripts/deps.sh fuzz
	$(CMAKE) -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
	    -DMP_WERROR=ON -DMP_ASAN=ON -DMP_UBSAN=ON -DMP_FUZZ=ON \
	    -DMP_TESTS=OFF -DMP_EXAMPLES=OFF -DMP_BENCH=OFF
	$(CMAKE) --build build-fuzz -j $(JOBS)
	@for t in fuzz_frames fuzz_handshake; do \
	    mkdir -p build-fuzz/corpus/$$t && \
	    echo "fuzz: $$t for $(FUZZ_SECONDS) s" && \
	    ASAN_OPTIONS=detect_leaks=1 build-fuzz/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) \
	        -print_final_stats=1 build-fuzz/corpus/$$t fuzz/corpus/$$t \
	        >build-fuzz/$$t.log 2>&1; rc=$$?; tail -8 build-fuzz/$$t.log; \
	    [ $$rc = 0 ] || { echo "fuzz: $$t failed: see build-fuzz/$$t.log"; exit 1; }; \
	done

install: build
	$(CMAKE) --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf build build-asan build-tsan build-bench build-fuzz
