# cbrick build. `make` builds libcbrick.so, the cbrick CLI and every plugin;
# `make test` runs the Criterion suite; `make install PREFIX=...` installs the SDK.
PREFIX ?= /usr/local
BUILD ?= build
CC ?= cc
PKGS := jansson openblas libpng libjpeg

# Missing Debian packages are installed before anything reads pkg-config.
ifeq ($(filter clean format,$(MAKECMDGOALS)),)
DEPS_STATUS := $(shell tools/install-deps.sh --if-missing >&2; echo $$?)
ifneq ($(DEPS_STATUS),0)
$(error could not install the build dependencies; run tools/install-deps.sh as root)
endif
endif
OPT ?= -O2
# SAN=-fsanitize=address,undefined builds and links everything instrumented.
SAN ?=
CFLAGS ?= $(OPT) -g
override CFLAGS += $(SAN) -std=gnu11 -Wall -Wextra -Werror=implicit-function-declaration \
	-fPIC -fvisibility=hidden -Icore/include \
	$(shell pkg-config --cflags $(PKGS) 2>/dev/null) -MMD -MP
LIBS := $(SAN) $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldl -lm -lpthread

LIB_SRC := $(wildcard core/*.c core/kernels/*.c registry/*.c)
CLI_SRC := $(wildcard core/cli/*.c)
PLUGIN_SRC := $(wildcard plugins/*.c backbones/*.c)
# A folder plugins/NAME/ or backbones/NAME/ builds into one NAME.so from all its .c files.
PLUGIN_DIRS := $(patsubst %/,%,$(sort $(dir $(wildcard plugins/*/*.c backbones/*/*.c))))
TEST_SRC := $(wildcard tests/*.c)
TEST_PLUGIN_SRC := $(wildcard tests/plugins/*.c)

LIB := $(BUILD)/lib/libcbrick.so
CLI := $(BUILD)/bin/cbrick
PLUGIN_DIR := $(BUILD)/lib/cbrick/plugins
PLUGINS := $(patsubst %.c,$(PLUGIN_DIR)/%.so,$(notdir $(PLUGIN_SRC))) \
	$(patsubst %,$(PLUGIN_DIR)/%.so,$(notdir $(PLUGIN_DIRS)))
TESTS := $(BUILD)/tests/cbrick-tests
TEST_PLUGINS := $(patsubst tests/plugins/%.c,$(BUILD)/tests/plugins/%.so,$(TEST_PLUGIN_SRC))
LIB_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRC))
CLI_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(CLI_SRC))
TEST_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(TEST_SRC))

.PHONY: all test test-sdk test-asan deps install lint format clean fixtures check-torch demo \
	check-baseline
all: $(LIB) $(CLI) $(PLUGINS)

# The main job: build ResNetV1c-50-D8 from its shipped config and run it.
DEMO_CONFIG ?= configs/resnet/resnet50_v1c_d8.json
demo: all
	@mkdir -p $(BUILD)/demo
	$(CLI) run $(DEMO_CONFIG) --image tests/data/images/scene.png --resize 512x512 \
		--output $(BUILD)/demo/features.safetensors --viz $(BUILD)/demo

deps:
	tools/install-deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $^ $(LIBS)

$(CLI): $(CLI_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -o $@ $(CLI_OBJ) -L$(BUILD)/lib -lcbrick $(LIBS) -Wl,-rpath,'$$ORIGIN/../lib'

$(PLUGIN_DIR)/%.so: $(BUILD)/obj/plugins/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $< -L$(BUILD)/lib -lcbrick $(LIBS) -Wl,-rpath,'$$ORIGIN/../..'

$(PLUGIN_DIR)/%.so: $(BUILD)/obj/backbones/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $< -L$(BUILD)/lib -lcbrick $(LIBS) -Wl,-rpath,'$$ORIGIN/../..'

define plugin_dir_rule
$(PLUGIN_DIR)/$(notdir $(1)).so: $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard $(1)/*.c)) $(LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) -shared -o $$@ $$(filter %.o,$$^) -L$(BUILD)/lib -lcbrick $$(LIBS) -Wl,-rpath,'$$$$ORIGIN/../..'
endef
$(foreach d,$(PLUGIN_DIRS),$(eval $(call plugin_dir_rule,$(d))))

# Test plugins are built the way an out-of-tree author would: against the
# public headers only, without linking libcbrick.
$(BUILD)/tests/plugins/%.so: tests/plugins/%.c $(wildcard core/include/*.h core/include/cbrick/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -o $@ $< $(SAN)

$(TESTS): $(TEST_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -o $@ $(TEST_OBJ) -L$(BUILD)/lib -lcbrick -lcriterion $(LIBS) \
		-Wl,-rpath,'$$ORIGIN/../lib'

test: all $(TESTS) $(TEST_PLUGINS)
	CBRICK_BUILD=$(BUILD) $(TESTS) --jobs 2
	tests/cli.sh $(BUILD)
	tests/sdk.sh $(BUILD)

# libFuzzer targets (clang) over the library sources, each run for FUZZ_SECONDS.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CFLAGS := -g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -Icore/include \
	$(shell pkg-config --cflags $(PKGS) 2>/dev/null)
.PHONY: fuzz
$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(LIB_SRC) $(wildcard core/*.h core/kernels/*.h registry/*.h core/include/cbrick/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $< $(LIB_SRC) -o $@ $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldl -lm -lpthread
fuzz: $(addprefix $(BUILD)/fuzz/,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD)/fuzz/corpus/$$t tests/fuzz/corpus/$${t#fuzz_}; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  $(BUILD)/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -timeout=10 \
	    -rss_limit_mb=2048 -artifact_prefix=$(BUILD)/fuzz/$$t- $(BUILD)/fuzz/corpus/$$t \
	    tests/fuzz/corpus/$${t#fuzz_} || exit 1; \
	done

# Installs the SDK into a temporary prefix and builds the examples against it.
test-sdk: all
	tests/sdk.sh $(BUILD)

# The whole suite under AddressSanitizer and UndefinedBehaviorSanitizer.
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
test-asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="$(ASAN_FLAGS)" test

install: all
	install -d $(DESTDIR)$(PREFIX)/lib/cbrick/plugins $(DESTDIR)$(PREFIX)/bin \
		$(DESTDIR)$(PREFIX)/include/cbrick $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(PLUGINS) $(DESTDIR)$(PREFIX)/lib/cbrick/plugins/
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 core/include/cbrick.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 core/include/cbrick/*.h $(DESTDIR)$(PREFIX)/include/cbrick/
	sed -e 's|@PREFIX@|$(PREFIX)|' tools/cbrick.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/cbrick.pc

# Full-width comparison with PyTorch and torchvision (needs python3-torch; not part of `test`).
check-torch: all
	/usr/bin/python3 tools/check_torch.py $(BUILD)

# The build on emulated older processors: plain x86-64 and AVX2 (needs qemu-user).
check-baseline: all
	tools/check_baseline.sh $(BUILD)

# Regenerates the golden fixtures with PyTorch (needs python3-torch).
fixtures:
	/usr/bin/python3 tools/fixtures/generate.py tests/fixtures

lint:
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability \
		--inline-suppr --std=c11 -Icore/include --library=tools/lint/cppcheck.cfg \
		--suppress=missingIncludeSystem core registry plugins backbones tests examples
	clang-tidy --quiet $(LIB_SRC) $(CLI_SRC) $(PLUGIN_SRC) $(wildcard plugins/*/*.c backbones/*/*.c) \
		-- -std=gnu11 -Icore/include $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
	clang-format --dry-run --Werror $(FORMAT_SRC)

FORMAT_SRC = $(shell find core registry plugins backbones tests examples -name '*.[ch]')

format:
	clang-format -i $(FORMAT_SRC)

clean:
	rm -rf $(BUILD) build-asan

-include $(shell find $(BUILD)/obj $(BUILD)/tests -name '*.d' 2>/dev/null)
.SECONDARY:
