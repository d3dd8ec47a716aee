# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   := runs/demo

# The cross toolchain, emulator, debugger and flashing tools, from Debian.
DEBIAN_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm gdb-multiarch openocd stlink-tools

.PHONY: setup toolchain demo default-model test clean

setup: toolchain $(STAMP)

toolchain:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "qute needs these Debian packages:$$missing"; echo "run: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools>=77' wheel
	$(PY) -m pip install --quiet -e '.[test,sweep]'
	touch $@

demo: setup
	$(VENV)/bin/qute train --dataset digits --method qute -K 3 -o $(DEMO) --force
	$(VENV)/bin/qute eval $(DEMO)
	$(VENV)/bin/qute quantize $(DEMO)
	$(VENV)/bin/qute calibrate $(DEMO)
	$(VENV)/bin/qute build --board nucleo-f746 $(DEMO) -o $(DEMO)/build-f746
	$(VENV)/bin/qute run --board nucleo-f746 $(DEMO)/build-f746
	$(VENV)/bin/qute monitor $(DEMO) --board nucleo-f746 --stream id,corrupt:contrast:5 --samples 150

# Replaces the embedded default model (firmware/default: what `qute build` builds with no model)
# with a freshly trained and quantized `make demo` model and its digits test images.
default-model: demo
	$(PY) -c "from qute.build import write_default; print('wrote', write_default('$(DEMO)'))"

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs build dist *.egg-info
