# Two entry points; each creates the cached environment on first use
# (scripts/bootstrap.sh) and needs nothing installed by hand.
.PHONY: demo test lint

demo:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/python" experiments/digits_demo.py

test:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/python" -m pytest -q

lint:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/ruff" check . && "$$venv/bin/ruff" format --check .
