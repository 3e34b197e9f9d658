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

.PHONY: all test ci clean host demo
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

clean:
	rm -rf build
