# bench/bench.mk: the benchmark (issue 5, item 5).  Included from the
# top-level Makefile; also works on its own:
#
#   make bench          every item, full length (about 5 minutes)
#   make bench-quick    BENCH_QUICK=1: item 4 over ~10 s, item 6 over 10,000 calls
#   make -f bench/bench.mk bench     without the top-level include
#
# The bench always uses Lua 5.4 (the sandbox needs it): it builds
# build/5.4/ecw/core.so and build/5.4/ecw-host through the top-level
# Makefile, and its own binaries under build/bench/.  Results go to stdout
# and to build/bench/results.{md,json}.  See docs/PERFORMANCE.md.

BENCH_LUA_VERSION := 5.4
BENCH_LUA_INC     ?= /usr/include/lua$(BENCH_LUA_VERSION)
BENCH_CC          ?= cc
BENCH_CFLAGS      ?= -O2 -g
BENCH_WARN        := -Wall -Wextra -pedantic -Wshadow -Wstrict-prototypes \
                     -Wmissing-prototypes -Wformat=2
BENCH_DIR         := build/bench
BENCH_BIN         := $(BENCH_DIR)/ecw-bench
BENCH_BASELINE    := $(BENCH_DIR)/baseline
BENCH_ARGS        ?=

.PHONY: bench bench-quick bench-build bench-ecw

bench: bench-build
	lua$(BENCH_LUA_VERSION) bench/run.lua $(BENCH_ARGS)

bench-quick: bench-build
	BENCH_QUICK=1 lua$(BENCH_LUA_VERSION) bench/run.lua $(BENCH_ARGS)

bench-build: bench-ecw $(BENCH_BIN) $(BENCH_BASELINE)

# core.so and ecw-host for Lua 5.4, whatever LUA_VERSION/SAN say.
bench-ecw:
	$(MAKE) --no-print-directory -f Makefile LUA_VERSION=$(BENCH_LUA_VERSION) SAN= all host

$(BENCH_BIN): bench/ecw_bench.c bench/baseline.c bench/baseline.h
	@mkdir -p $(BENCH_DIR)
	$(BENCH_CC) -std=gnu11 $(BENCH_CFLAGS) $(BENCH_WARN) -I$(BENCH_LUA_INC) \
	  -o $@ bench/ecw_bench.c bench/baseline.c \
	  -llua$(BENCH_LUA_VERSION) -lcurl -lpthread -ldl -lm -Wl,-E

$(BENCH_BASELINE): bench/baseline.c bench/baseline.h
	@mkdir -p $(BENCH_DIR)
	$(BENCH_CC) -std=gnu11 $(BENCH_CFLAGS) $(BENCH_WARN) -DBENCH_BASELINE_MAIN \
	  -o $@ bench/baseline.c -lcurl

# Included before the top-level Makefile's first target, `bench` would
# become the default goal: give that back.
ifneq ($(words $(MAKEFILE_LIST)),1)
ifeq ($(.DEFAULT_GOAL),bench)
.DEFAULT_GOAL :=
endif
endif
