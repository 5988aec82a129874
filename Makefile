# Two entry points; each creates the cached environment on first use
# (scripts/bootstrap.sh) and needs nothing installed by hand.
.PHONY: demo test test-fast lint docs

demo:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/python" experiments/digits_demo.py

# `make test` is what CI runs (.ci/run): the lint and the documentation's
# strict build first, then every test. Both test targets run on every core
# (pytest-xdist, at most 4 workers; one thread each, see tests/conftest.py).
# --dist loadfile: a module's tests run in one worker, in their order, as in
# a run without workers.
test: lint docs
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/python" -m pytest -q -n auto --maxprocesses 4 --dist loadfile

# The unit tier, for the development loop: what `make test` runs but the
# tests marked integration or system (see pyproject.toml).
test-fast:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/python" -m pytest -q -n auto --maxprocesses 4 --dist loadfile -m "not integration and not system"

# ruff, then mypy on the library (its settings: [tool.mypy] in pyproject.toml)
lint:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/ruff" check . && "$$venv/bin/ruff" format --check . && "$$venv/bin/mypy"

# The documentation (mkdocs.yml); --strict: a warning, such as a broken
# link or API reference, fails the build. The site is written to site/.
docs:
	@venv=$$(scripts/bootstrap.sh) && "$$venv/bin/mkdocs" build --strict --site-dir site
