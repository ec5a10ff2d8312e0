# Two commands a reader needs: `make book` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0

.PHONY: book test unit notebooks student clean model bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# A pinned CPU torch first: an unpinned one pulls several GB of CUDA wheels.
	$(BIN)/pip install $(TORCH_PIN)
	$(BIN)/pip install -e ".[book,dev]"
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3
	touch $@

.venv: $(VENV)/.installed

book: $(VENV)/.installed
	$(BIN)/jupyter-book build . -W --keep-going

test: $(VENV)/.installed
	$(BIN)/python -m pytest tests
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=900 -p no:randomly book

# Student notebooks (solutions removed) and the built site without solutions, under
# _build/student/ (see book/teachers.md). The site is cut from the book's build: book first.
student: book
	$(BIN)/python -m ivedu.student

model: $(VENV)/.installed
	$(BIN)/python -m ivedu.toy train --out ivedu/checkpoints/tiny

clean:
	rm -rf _build
