# claude-zephyr build.
#
#   make            build/claude-zephyr (warnings are errors)
#   make test       build, then run unit + integration tests against build/
#   make asan       the same binaries with AddressSanitizer + UBSan in build/asan/
#   make test-asan  the whole suite against build/asan/
#   make check      lint, test, a brief fuzz run, test-asan (what CI runs)
#   make lint       the module walls (scripts/check-walls.py), the format
#                   check, cppcheck and clang-tidy (.clang-tidy); any finding
#                   fails it
#   make format     clang-format every C and C++ file
#   make format-changed  clang-format only the lines changed since HEAD
#   make fuzz       libFuzzer targets (clang) in build/fuzz/
#   make fuzz-ci    build them and run each for a few seconds over its seeds
#   make install    PREFIX=/usr/local DESTDIR=
#
# B is the output directory; SAN=1 selects the sanitizer flags; V=0 hides
# the command lines (./run.sh builds that way; V=1 ./run.sh shows them).

B       ?= build
V       ?= 1
ifeq ($(V),0)
.SILENT:
endif
SAN     ?= 0
PREFIX  ?= /usr/local
DESTDIR ?=

CC  ?= cc
CXX ?= c++
PKGS := libuv libcurl libcjson ncursesw zlib openssl libnghttp2
# libcurl is not linked: src/curlso.c loads it on first use, so only its
# headers come from pkg-config.  hiredis (cluster.c) is linked; its headers are
# included as <hiredis/...>, so its -D_XOPEN_SOURCE cflag stays out.
LINK_PKGS := libuv libcjson ncursesw zlib openssl libnghttp2 hiredis
# OPENSSL_STATIC=1 links libssl.a and libcrypto.a in, with section GC:
# before src/mem.c gave the loader's pages back, idle RSS with an https
# endpoint 8.6 -> 7.6 MB, http:// only 5.1 -> 4.7 MB (no loader pages for
# libcrypto's 5,500 exported symbols, less of its code mapped); the default
# build now idles at 7.4 / 3.9 MB.  Every OpenSSL security update would need
# a rebuild: off by default; docs/DESIGN.md ("Idle memory") has the figures.
OPENSSL_STATIC ?= 0
ifeq ($(OPENSSL_STATIC),1)
LINK_PKGS := $(filter-out openssl,$(LINK_PKGS))
STATIC_LIBS := -Wl,-Bstatic -lssl -lcrypto -Wl,-Bdynamic -Wl,--gc-sections
endif
# ncurses (only --dashboard calls it) is linked statically where its static
# libraries are installed (Debian's libncurses-dev has them): 0.3 MB less
# idle RSS in every configuration than mapping libncursesw.so and
# libtinfo.so.  NCURSES_STATIC=0 links the shared ones.
NCURSES_STATIC ?= $(if $(and $(wildcard $(shell $(CC) -print-file-name=libncursesw.a)),$(wildcard $(shell $(CC) -print-file-name=libtinfo.a))),1,0)
ifeq ($(NCURSES_STATIC),1)
LINK_PKGS := $(filter-out ncursesw,$(LINK_PKGS))
STATIC_LIBS += -Wl,-Bstatic -lncursesw -ltinfo -Wl,-Bdynamic
endif

WARN := -Wall -Wextra -Wshadow -Wformat=2 -Werror
CWARN := $(WARN) -Wstrict-prototypes -Wmissing-prototypes
OPT := -O2 -g
ifeq ($(SAN),1)
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(LINK_PKGS) 2>/dev/null)

CPPFLAGS += -D_GNU_SOURCE -Isrc -I$(LLHTTP_DIR) $(PKG_CFLAGS)
CFLAGS   += -std=c11 $(OPT) $(CWARN) -MMD -MP
CXXFLAGS += -std=c++17 $(OPT) $(WARN) -MMD -MP
# toml++ is the only C++: its runtime linked in costs ~0.8 MB less resident
# memory than mapping libstdc++.so.  Not under sanitizers: libubsan maps
# libstdc++.so anyway, and two copies of the runtime would be worse.
# -z now: every symbol bound at start, so this program's loader tables are
# never read again and src/mem.c can give their pages back.
LDFLAGS  += $(OPT) -Wl,--as-needed -Wl,-z,now
ifeq ($(SAN),0)
LDFLAGS  += -static-libstdc++ -static-libgcc
endif
LDLIBS   += $(PKG_LIBS) $(STATIC_LIBS) -ldl -lm -lpthread

# llhttp's generated C sources come from Debian's node-llhttp package.
LLHTTP_DIR := build/llhttp
LLHTTP_SRC := $(LLHTTP_DIR)/llhttp.c $(LLHTTP_DIR)/api.c $(LLHTTP_DIR)/http.c

SRC_C   := $(filter-out src/main.c,$(wildcard src/*.c))
SRC_CXX := $(wildcard src/*.cpp)
OBJ     := $(SRC_C:src/%.c=$(B)/obj/%.o) $(SRC_CXX:src/%.cpp=$(B)/obj/%.o) \
           $(B)/obj/llhttp/llhttp.o $(B)/obj/llhttp/api.o $(B)/obj/llhttp/http.o

# The demo and the fake upstream (src/fake/) are no part of libzephyr.a, so
# unit tests and fuzzers never link them: the product links them for --demo
# (app.c calls demo.h), build/fake-upstream links the fake alone.  They are
# objects, not an archive, because app.o (in the archive) needs demo.o and
# demo.o needs the archive.
FAKE_SRC := $(wildcard src/fake/*.c)
FAKE_OBJ := $(FAKE_SRC:src/%.c=$(B)/obj/%.o)

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all test asan test-asan check fuzz fuzz-ci install clean lint format format-changed bench
all: $(B)/claude-zephyr $(B)/fake-upstream $(UNIT_BIN)

$(LLHTTP_DIR)/llhttp.h $(LLHTTP_SRC):
	scripts/fetch-llhttp.sh $(LLHTTP_DIR)

$(B)/obj/%.o: src/%.c | $(LLHTTP_DIR)/llhttp.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# src/web.c embeds the dashboard page with .incbin: rebuild it when the page changes.
$(B)/obj/web.o: web/dashboard.html

$(B)/obj/%.o: src/%.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

# Third-party code is compiled as shipped, without our warning set.
$(B)/obj/llhttp/%.o: $(LLHTTP_DIR)/%.c $(LLHTTP_DIR)/llhttp.h
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(OPT) -I$(LLHTTP_DIR) -c $< -o $@

$(B)/libzephyr.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

# scripts/offpath-text.ld groups toml++, the C++ runtime and ncurses after
# .text, so their pages can be given back after a parse (src/mem.c).
$(B)/claude-zephyr: $(B)/obj/main.o $(FAKE_OBJ) $(B)/libzephyr.a scripts/offpath-text.ld
	$(CXX) $(LDFLAGS) -Wl,-T,scripts/offpath-text.ld -o $@ $(filter-out %.ld,$^) $(LDLIBS)

$(B)/obj/tests/%.o: tests/%.c | $(LLHTTP_DIR)/llhttp.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(B)/fake-upstream: $(B)/obj/tests/fake_upstream_main.o $(B)/obj/fake/fakeup.o $(B)/libzephyr.a
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tests/%: $(B)/obj/tests/unit/%.o $(B)/libzephyr.a
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

test: all
	tests/run.sh $(B)

asan:
	$(MAKE) B=build/asan SAN=1 all

test-asan: asan
	tests/run.sh build/asan

# Lint first (it is quick); the sanitizer run comes last, so that the
# suite's summary line ends the output.
check: lint
	$(MAKE) test
	$(MAKE) fuzz-ci
	$(MAKE) test-asan

fuzz-ci: fuzz
	tests/fuzz/run-ci.sh 5

FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,build/fuzz/fuzz_%,$(wildcard tests/fuzz/fuzz_*.c))
fuzz: $(LLHTTP_DIR)/llhttp.h
	$(MAKE) B=build/fuzz-lib CC=clang CXX=clang++ OPT="-O1 -g -fsanitize=fuzzer-no-link,address,undefined" build/fuzz-lib/libzephyr.a
	@mkdir -p build/fuzz
	for t in $(FUZZ_TARGETS); do n=$${t#build/fuzz/}; \
	  clang++ -g -O1 -fsanitize=fuzzer,address,undefined $(CPPFLAGS) -x c tests/fuzz/$$n.c -x none build/fuzz-lib/libzephyr.a $(LDLIBS) -o $$t || exit 1; done

bench: all
	bench/run.sh
	bench/https.sh

install: $(B)/claude-zephyr
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(B)/claude-zephyr $(DESTDIR)$(PREFIX)/bin/claude-zephyr
	install -m 755 monitor.sh $(DESTDIR)$(PREFIX)/bin/claude-zephyr-monitor
	if [ -f docs/claude-zephyr.1 ]; then install -m 644 docs/claude-zephyr.1 $(DESTDIR)$(PREFIX)/share/man/man1/; fi

# Every C and C++ file follows the committed .clang-format.
FORMAT_ALL    := $(wildcard src/*.c src/*.h src/*.cpp src/fake/*.c src/fake/*.h tests/*.c tests/unit/*.c tests/fuzz/*.c)
FORMAT_FILES  := $(FORMAT_ALL)

# clang-tidy runs two files at a time; the whole target takes about 15 s.
lint: | $(LLHTTP_DIR)/llhttp.h
	scripts/check-walls.py
	clang-format --dry-run --Werror $(FORMAT_FILES)
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr -Isrc src
	printf '%s\n' src/*.c src/fake/*.c | xargs -P2 -n4 sh -c 'exec clang-tidy --quiet "$$@" -- $(CPPFLAGS) -std=c11' lint-tidy
	@echo "lint: no finding"

format:
	clang-format -i $(FORMAT_FILES)

format-changed:
	git clang-format --force

clean:
	rm -rf build

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
