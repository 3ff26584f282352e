# medimg: `make run` serves the app, `make test` runs the whole suite. Both install first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)

# No model or data set is ever fetched at run time.
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR := $(CURDIR)/var/ultralytics

.PHONY: install run test fuzz corpus lint format check-deploy clean bench

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# The viewers (frontend/, docs/viewer.md): Cornerstone3D into static/vendor/viewer/ and NiiVue
# (the 3D view) into static/vendor/brain3d/, npm packages from the locked package-lock.json,
# bundled by esbuild (no CDN at run time). Rebuilt when the lock file or the sources are newer
# than a bundle (one build writes both).
VIEWER_BUNDLE := static/vendor/viewer/viewer.js
BRAIN3D_BUNDLE := static/vendor/brain3d/brain3d.js

$(VIEWER_BUNDLE) $(BRAIN3D_BUNDLE) &: package.json package-lock.json frontend/build.mjs $(wildcard frontend/viewer/*.js) $(wildcard frontend/brain3d/*.js)
	npm ci --no-audit --no-fund
	npm run build

install: $(STAMP) $(VIEWER_BUNDLE) $(BRAIN3D_BUNDLE)

# The embedded mode: SQLite, no Redis, tasks in-process, whatever the shell has set.
run: install
	env -u DATABASE_URL -u REDIS_URL $(PY) manage.py migrate --noinput
	env -u DATABASE_URL -u REDIS_URL $(PY) manage.py create_demo_users
	env -u DATABASE_URL -u REDIS_URL $(PY) manage.py runserver 127.0.0.1:8000

# With DATABASE_URL and REDIS_URL set (CI sets them): PostgreSQL, Redis and a real Celery worker.
test: install
	$(PY) -m pytest -q

# Long attack runs (issue #8): Hypothesis fuzzing of the upload validator and DICOM reader, and
# schemathesis over every API operation and role. `make test` runs their smoke versions.
fuzz: install
	MEDIMG_FUZZ=1 FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-5000} SCHEMA_EXAMPLES=$${SCHEMA_EXAMPLES:-40} \
		$(PY) -m pytest -q -p no:cacheprovider medimg/tests/test_attacks_fuzz.py \
		medimg/tests/test_attacks_schema.py

# The whole real-file corpus (issue 13): every DICOM in ../shared/corpus/ and pydicom's and
# deid-data's test files through intake, processing, de-identification, restore and `redact`,
# then the table in docs/intake.md. `make test` runs a 15-file sample. About 20-30 minutes.
corpus: install
	MEDIMG_CORPUS=1 env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest -q -s -p no:cacheprovider \
		imaging/tests/test_corpus.py -k whole_corpus

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	env -u DATABASE_URL -u REDIS_URL $(VENV)/bin/mypy
	env -u DATABASE_URL -u REDIS_URL $(PY) manage.py makemigrations --check --dry-run

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Redaction benchmark against Microsoft Presidio (bench/redaction.py); about 2-4 minutes.
# Presidio lives in its own environment (.bench-venv), never the app's; Tesseract from Debian.
BENCH_VENV := .bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed-$(shell cat bench/requirements-presidio.txt | cksum | cut -d' ' -f1)
BENCH_APT := tesseract-ocr tesseract-ocr-eng

$(BENCH_STAMP): bench/requirements-presidio.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r bench/requirements-presidio.txt
	rm -f $(BENCH_VENV)/.installed-*
	touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	@missing=""; for p in $(BENCH_APT); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "bench: installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y $$missing; else sudo apt-get install -y $$missing; fi; \
	else echo "bench: Debian packages present: $(BENCH_APT)"; fi
	$(PY) -m bench.redaction $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache node_modules static/vendor/viewer static/vendor/brain3d
