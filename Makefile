# `make demo` and `make test` are the whole set-up: each creates .venv on first use and
# reinstalls only when pyproject.toml is newer than the last install.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test readme clean campaign campaign-status

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m resnetlab.demo

# pytest exits 5 when it collects no test: that is a failure here, not a pass.
# OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin while other processes hold the cores
# made the suite up to 10x slower on a shared 2-core machine; passive waiting costs nothing here.
test: $(STAMP)
	@OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The reproduction campaign (results/campaign): start or resume every unfinished run of the current
# stage in the background, one process per run; campaign-status prints where each run stands.
campaign: $(STAMP)
	$(PY) -m resnetlab.reproduce.campaign start

campaign-status: $(STAMP)
	@$(PY) -m resnetlab.reproduce.campaign status

# Regenerate the generated parts of README.md (model table) from the code.
readme: $(STAMP)
	$(PY) -m resnetlab.docs README.md

clean:
	rm -rf $(VENV) build dist src/*.egg-info
