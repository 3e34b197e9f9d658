# fuzz/fuzz.mk: libFuzzer harnesses for the C code that reads network data
# or builds URLs.  Include it from the top-level Makefile (at the end, or
# anywhere: it leaves the default goal alone), or use it on its own:
#   make -f fuzz/fuzz.mk fuzz-smoke
# Paths are relative to the repository root.  Everything builds into
# build/fuzz/.  See fuzz/README.md.
#
#   make fuzz-build            every harness, build/fuzz/fuzz_<name>
#   make fuzz-smoke            each harness FUZZ_SMOKE_SECONDS (20), as CI
#   make fuzz                  each harness FUZZ_SECONDS (600)
#   make fuzz-regress          seeds and saved reproducers, each run once
#   make fuzz-coverage         llvm-cov report of what the corpora reach
#   make fuzz-smoke-url        one harness (also fuzz-run-<name>,
#                              fuzz-regress-<name>); -j2 runs two at once

FUZZ_SAVED_GOAL := $(.DEFAULT_GOAL)

FUZZ_CC            ?= clang
FUZZ_DIR           ?= build/fuzz
FUZZ_SAN           ?= address,undefined
FUZZ_CFLAGS        ?= -g -O1 -fno-omit-frame-pointer
FUZZ_LUA_INC       ?= /usr/include/lua5.4
FUZZ_LIBS          ?= -lcurl -lcrypto -ljson-c -lpthread -ldl
FUZZ_SMOKE_SECONDS ?= 20
FUZZ_SECONDS       ?= 600
FUZZ_ARGS          ?=

FUZZ_NAMES := oauth_parse discovery_parse headers url_target url_base url \
              scopes json retry_after

FUZZ_ALL_CFLAGS = -std=c11 $(FUZZ_CFLAGS) -Wall -Wextra \
                  -fsanitize=$(FUZZ_SAN) -fno-sanitize-recover=all
# The C core minus the Lua binding (ecw_core.c, async.c): fuzz/support.c
# stands in for what the harnesses need from it.
FUZZ_CORE_SRCS := $(filter-out csrc/ecw_core.c csrc/async.c,$(wildcard csrc/*.c))
FUZZ_CORE_OBJS := $(FUZZ_CORE_SRCS:csrc/%.c=$(FUZZ_DIR)/obj/csrc/%.o)
FUZZ_CORE_LIB  := $(FUZZ_DIR)/libecw-fuzz.a
FUZZ_HELPERS   := $(FUZZ_DIR)/obj/fuzz/support.o $(FUZZ_DIR)/obj/fuzz/target_oracle.o
FUZZ_BINS      := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)

.PHONY: fuzz fuzz-build fuzz-smoke fuzz-regress fuzz-list fuzz-clean fuzz-coverage

fuzz-build: $(FUZZ_BINS)

.SECONDARY: $(FUZZ_NAMES:%=$(FUZZ_DIR)/obj/fuzz/fuzz_%.o) $(FUZZ_HELPERS)

# Library code: coverage instrumentation without libFuzzer's main.
$(FUZZ_DIR)/obj/csrc/%.o: csrc/%.c $(wildcard csrc/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_ALL_CFLAGS) -fsanitize=fuzzer-no-link -fvisibility=hidden \
	  -I$(FUZZ_LUA_INC) -c $< -o $@

$(FUZZ_DIR)/obj/fuzz/%.o: fuzz/%.c fuzz/fuzz.h fuzz/target_oracle.h $(wildcard csrc/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_ALL_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_CORE_LIB): $(FUZZ_CORE_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/fuzz/fuzz_%.o $(FUZZ_HELPERS) $(FUZZ_CORE_LIB)
	$(FUZZ_CC) $(FUZZ_ALL_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_HELPERS) \
	  $(FUZZ_CORE_LIB) $(FUZZ_LIBS)

fuzz-smoke: $(FUZZ_NAMES:%=fuzz-smoke-%)
fuzz: $(FUZZ_NAMES:%=fuzz-run-%)
	@cat $(FUZZ_DIR)/summary.txt 2>/dev/null || true
fuzz-regress: $(FUZZ_NAMES:%=fuzz-regress-%)

fuzz-smoke-%: $(FUZZ_DIR)/fuzz_%
	@FUZZ_DIR=$(FUZZ_DIR) bash fuzz/run.sh $* $(FUZZ_SMOKE_SECONDS) $(FUZZ_ARGS)
fuzz-run-%: $(FUZZ_DIR)/fuzz_%
	@FUZZ_DIR=$(FUZZ_DIR) bash fuzz/run.sh $* $(FUZZ_SECONDS) $(FUZZ_ARGS)
fuzz-regress-%: $(FUZZ_DIR)/fuzz_%
	@FUZZ_DIR=$(FUZZ_DIR) bash fuzz/run.sh --regress $* 0 $(FUZZ_ARGS)

fuzz-list:
	@echo $(FUZZ_NAMES)

# Source coverage of what the corpora (seeds + build/fuzz/corpus) reach:
# uninstrumented by sanitizers, -O0, one llvm-cov report for the C files
# the harnesses aim at, and per-function lines for the fuzzed functions.
FUZZ_COV_DIR       ?= $(FUZZ_DIR)/cov
FUZZ_LLVM_PROFDATA ?= llvm-profdata
FUZZ_LLVM_COV      ?= llvm-cov
FUZZ_COV_FILES     := csrc/url.c csrc/util.c csrc/json.c csrc/oauth.c csrc/http.c csrc/guard.c
FUZZ_COV_FUNCS     := ecw_oauth_parse|oauth_error|valid_token_chars|ecw_discovery_parse|ecw_headers_each|ecw_url_|host_is_loopback|is_dot_segment|has_dot_segment|bad_url_chars|ecw_scopes_normalize|ecw_json_object|ecw_json_string|retry_after_ms|ecw_guard_after

$(FUZZ_COV_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/support.c fuzz/target_oracle.c $(FUZZ_CORE_SRCS) $(wildcard csrc/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=c11 -g -O0 -fprofile-instr-generate -fcoverage-mapping \
	  -fsanitize=fuzzer -I$(FUZZ_LUA_INC) -o $@ $< fuzz/support.c \
	  fuzz/target_oracle.c $(FUZZ_CORE_SRCS) $(FUZZ_LIBS)

fuzz-coverage: $(FUZZ_NAMES:%=$(FUZZ_COV_DIR)/fuzz_%)
	@rm -f $(FUZZ_COV_DIR)/*.profraw
	@for n in $(FUZZ_NAMES); do \
	  mkdir -p $(FUZZ_DIR)/corpus/$$n; \
	  FUZZ_ALLOW='*' LLVM_PROFILE_FILE=$(FUZZ_COV_DIR)/$$n.profraw $(FUZZ_COV_DIR)/fuzz_$$n \
	    -runs=0 $(FUZZ_DIR)/corpus/$$n fuzz/corpus/$$n >/dev/null 2>&1 || \
	    echo "coverage run of $$n failed"; \
	done
	@$(FUZZ_LLVM_PROFDATA) merge -sparse -o $(FUZZ_COV_DIR)/all.profdata $(FUZZ_COV_DIR)/*.profraw
	@$(FUZZ_LLVM_COV) report -instr-profile=$(FUZZ_COV_DIR)/all.profdata \
	  $(FUZZ_COV_DIR)/fuzz_$(firstword $(FUZZ_NAMES)) \
	  $(patsubst %,-object=$(FUZZ_COV_DIR)/fuzz_%,$(wordlist 2,99,$(FUZZ_NAMES))) \
	  $(FUZZ_COV_FILES) | tee $(FUZZ_COV_DIR)/report.txt
	@$(FUZZ_LLVM_COV) report -show-functions -instr-profile=$(FUZZ_COV_DIR)/all.profdata \
	  $(FUZZ_COV_DIR)/fuzz_$(firstword $(FUZZ_NAMES)) \
	  $(patsubst %,-object=$(FUZZ_COV_DIR)/fuzz_%,$(wordlist 2,99,$(FUZZ_NAMES))) \
	  $(FUZZ_COV_FILES) | grep -E '^(Name|-+$$|([a-z_]+\.c:)?($(FUZZ_COV_FUNCS)))' \
	  | tee $(FUZZ_COV_DIR)/functions.txt

fuzz-clean:
	rm -rf $(FUZZ_DIR)

# Keep the includer's default goal (or let its next target become it).
.DEFAULT_GOAL := $(FUZZ_SAVED_GOAL)
