# Two entry points; each creates the cached environment on first use
# (scripts/bootstrap.sh) and needs nothing installed by hand.
.PHONY: demo test test-fast lint

demo:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/python" experiments/digits_demo.py

# Both run on every core (pytest-xdist, at most 4 workers; one thread each,
# see tests/conftest.py). --dist loadfile: a module's tests run in one
# worker, in their order, as in a run without workers.
test:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/python" -m pytest -q -n auto --maxprocesses 4 --dist loadfile

# The unit tier, for the development loop: what `make test` runs but the
# tests marked integration or system (see pyproject.toml).
test-fast:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/python" -m pytest -q -n auto --maxprocesses 4 --dist loadfile -m "not integration and not system"

lint:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/ruff" check . && "$$venv/bin/ruff" format --check .
