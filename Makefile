# Development build of ecw.core.  Installation goes through the rockspec
# (luarocks --lua-version=5.4 make --deps-mode=none); this Makefile adds the
# strict warning set, sanitizer builds and the test hosts.
#
#   make                      build/5.4/ecw/core.so
#   make LUA_VERSION=5.3      build/5.3/ecw/core.so
#   make SAN=address,undefined  a sanitizer build in build/5.4-address,undefined
#   make test                 every spec, as CI runs them

LUA_VERSION ?= 5.4
LUA_INC     ?= /usr/include/lua$(LUA_VERSION)
CC          ?= cc
SAN         ?=
BUILD       := build/$(LUA_VERSION)$(if $(SAN),-$(SAN))

WARN   = -Wall -Wextra -pedantic -Wcast-align -Wcast-qual -Wpointer-arith \
         -Wshadow -Wsign-compare -Wundef -Wwrite-strings \
         -Wmissing-prototypes -Wstrict-prototypes -Wformat=2
CFLAGS ?= -O2 -g
ALL_CFLAGS = -std=c11 $(CFLAGS) $(WARN) -fPIC -fvisibility=hidden \
             -I$(LUA_INC) $(if $(SAN),-fsanitize=$(SAN) -fno-omit-frame-pointer)
LIBS   = -lcurl -lcrypto -ljson-c -lpthread -ldl

SRCS = $(wildcard csrc/*.c)
OBJS = $(SRCS:csrc/%.c=$(BUILD)/obj/%.o)
SO   = $(BUILD)/ecw/core.so

.PHONY: all test ci clean host demo soak
all: $(SO)

$(BUILD)/obj/%.o: csrc/%.c $(wildcard csrc/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# Never link liblua: the host (lua5.x, mod_lua) provides the Lua API.
$(SO): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) -shared $(if $(SAN),-fsanitize=$(SAN)) -o $@ $(OBJS) $(LIBS)

HOST = $(BUILD)/ecw-host
host: $(HOST)
$(HOST): spec/host/host.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(CFLAGS) $(WARN) -I$(LUA_INC) $(if $(SAN),-fsanitize=$(SAN)) \
	  -o $@ $< -llua$(LUA_VERSION) -lcurl -lpthread -ldl -Wl,-E

test: all host
	bash .ci/run --no-install

demo: all
	lua$(LUA_VERSION) examples/demo.lua

# Fuzzing (issue 6): fuzz-build, fuzz-smoke (CI), fuzz (FUZZ_SECONDS each).
include fuzz/fuzz.mk

# Benchmarks (issue 5): make bench (about 6 minutes), make bench-quick.
include bench/bench.mk

# Soak (issue 6): 16 threads of fresh states with random faults; 10 minutes.
SOAK_SECONDS ?= 600
soak: all host
	lua5.4 spec/soak/soak.lua $(SOAK_SECONDS)

clean:
	rm -rf build

# ---- embedding proof (issue 4) -------------------------------------------
# Owned by the spec/embed_spec.lua author; targets only.  Each runs the spec
# under Lua 5.4 and 5.3 (EMBED_LUA="5.4" for one) after .ci/embed.sh built
# the plain, ThreadSanitizer and ASan+UBSan variants.  CI=true: a missing
# variant fails instead of being skipped.
#   make embed        CI sizes (what .ci/run runs)
#   make embed-full   the issue's sizes: 1000 calls / 16 threads, TSan 1000,
#                     ASan 1000, valgrind 200, RSS over 10,000 calls
#   make tsan | asan | valgrind   one of the full-size checks alone
.PHONY: embed-build embed embed-full tsan asan valgrind
embed-build:
	bash .ci/embed.sh --no-install

embed: embed-build
	@set -e; for v in $${EMBED_LUA:-5.4 5.3}; do \
	  CI=true busted --lua=lua$$v spec/embed_spec.lua; done

embed-full: embed-build
	@set -e; for v in $${EMBED_LUA:-5.4 5.3}; do \
	  CI=true ECW_EMBED_FULL=1 busted --lua=lua$$v spec/embed_spec.lua; done

tsan asan valgrind: embed-build
	@set -e; for v in $${EMBED_LUA:-5.4 5.3}; do \
	  CI=true ECW_EMBED_FULL=1 busted --lua=lua$$v --tags=$@ spec/embed_spec.lua; done
