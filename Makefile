# Two front-door targets: `make bench` (claims suite on the embedded default, ending
# with the leaderboard table) and `make test` (unit tests). Both create .venv if it
# is missing and install the package with its test extras first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.scopebench-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: test test-bench-scale bench bench-seeds bench-family outlier-study feature-scope perf perf-compare faults regression precision-effect leaderboard-png install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# --dist loadfile: one worker runs all of a module, so module-scoped fixtures (the planted
# pipeline of tests/test_planted_pipeline.py) are built once, not once per worker (2x faster).
test: $(STAMP)
	$(PY) -m pytest tests -q -n 2 --dist loadfile -m "not faults and not bench_scale"

# The unit tests that train SAEs or probes at or near the planted bench's scale (minutes each; .ci/run runs them after
# `make test`): the baselines' L0 calibration as the bench trains them, Table 3's gain in the planted truth, TopK's
# dense removal probes in the planted pipeline. --dist loadfile: each module's fixtures are built once.
test-bench-scale: $(STAMP)
	$(PY) -m pytest tests -q -n 2 --dist loadfile -m bench_scale

# Fault injection that kills whole (tiny) runs and resumes them: minutes, so not in `make test`.
# The fast damage cases of tests/faults/ run in `make test` too.
faults: $(STAMP)
	$(PY) -m pytest tests/faults -q -m faults

bench: $(STAMP)
	$(PY) -m pytest bench -q --ignore=bench/perf -k planted --sae-recipes batchtopk,topk

# The several-seed evidence (README, "Fidelity of the planted default"): the planted bench (the cases BENCH_K selects,
# on the planted sizes PLANTED_SIZES) with SEED_RECIPES at each SAE training seed of SEEDS, then every claim's margin
# per seed (and SEEDS_DIR/margins.md, the README's table). Fails when an asserted claim fails at any seed. Results go
# to SEEDS_DIR/seed-N (a temporary folder unless given).
SEEDS ?= 0 1 2
SEED_RECIPES ?= batchtopk
BENCH_K ?= planted
PLANTED_SIZES ?= s
bench-seeds: $(STAMP)
	d="$${SEEDS_DIR:-$$(mktemp -d)}"; status=0; for s in $(SEEDS); do \
		$(PY) -m pytest bench -q --ignore=bench/perf -k "$(BENCH_K)" --planted-sizes $(PLANTED_SIZES) \
			--sae-recipes $(SEED_RECIPES) --no-progress --seed $$s \
			--results-dir $$d/seed-$$s --cache-dir $$d/cache --plots-dir $$d/plots-$$s || status=1; \
	done; $(PY) bench/seed_margins.py --markdown $$d/margins.md $$(for s in $(SEEDS); do echo $$d/seed-$$s; done) \
		|| status=1; exit $$status

# Figure 8 on the planted family (README, "The planted family (Figure 8)"): BatchTopK's classification probes on
# planted, planted-b and planted-l at each seed of SEEDS, and the claim that the low-removal gap narrows with size.
bench-family:
	$(MAKE) bench-seeds BENCH_K="planted and figure8" PLANTED_SIZES=s,b,l SEED_RECIPES=batchtopk

# How the trainer's first steps shape BatchTopK's outlier code and the CDS partition on the planted default
# (README, "Fidelity of the planted default"): four trainer variants x SEEDS, one table.
outlier-study: $(STAMP)
	$(PY) bench/outlier_code_study.py --seeds $(SEEDS) --no-progress

# Where each baseline's features lie in the planted truth (global / local / mixed decoder rows) beside their CDS
# (README, "Three run modes, one suite"): why an SAE has a CDS partition on the planted default or not.
feature-scope: $(STAMP)
	$(PY) bench/feature_scope.py --no-progress

# Regression mode on the planted default against the committed baseline (bench/baseline): every quantity
# within its seed-spread tolerance, no claim verdict flipped. Results go to a temporary folder.
regression: $(STAMP)
	$(PY) -m pytest bench -q --ignore=bench/perf -k planted --sae-recipes batchtopk,topk --no-progress \
		--results-dir "$$(mktemp -d)" --baseline bench/baseline

# What a bf16 forward changes (README, "What bf16 does to the numbers"): the planted default benched at fp32 and
# at bf16 (same seed, BatchTopK; removal probes left out), every quantity side by side, then random-init models
# of the real families. A claim that bf16 breaks fails its bench run, which does not stop the comparison.
precision-effect: $(STAMP)
	d="$$(mktemp -d)"; for p in fp32 bf16; do \
		$(PY) -m pytest bench -q --ignore=bench/perf -k "planted and not removal" --sae-recipes batchtopk --no-progress \
			--precision $$p --results-dir $$d/res-$$p --cache-dir $$d/cache-$$p --plots-dir $$d/plots-$$p || true; \
	done; $(PY) bench/precision_effect.py results $$d/res-fp32 $$d/res-bf16
	$(PY) bench/precision_effect.py random-init

# The HTML leaderboard and a screenshot of it in headless Chromium, for people to look at.
leaderboard-png: $(STAMP)
	$(VENV)/bin/scopebench leaderboard --html leaderboard/leaderboard.html
	chromium --headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run \
		--user-data-dir="$$(mktemp -d)" --virtual-time-budget=5000 --hide-scrollbars --window-size=1400,1800 \
		--screenshot="$(CURDIR)/leaderboard/leaderboard.png" "file://$(CURDIR)/leaderboard/leaderboard.html"

perf: $(STAMP)
	$(PY) -m pytest bench/perf -q --benchmark-enable --benchmark-only

# Perf cases against this machine's earlier runs (pytest-benchmark storage in BENCHMARK_STORAGE): each run is
# saved, and the run fails when a case's median is more than PERF_SLOWDOWN slower than the last saved one.
BENCHMARK_STORAGE ?= .benchmarks
PERF_SLOWDOWN ?= 25%
perf-compare: $(STAMP)
	$(PY) -m pytest bench/perf -q --benchmark-enable --benchmark-only --benchmark-storage "$(BENCHMARK_STORAGE)" \
		--benchmark-autosave --benchmark-compare --benchmark-compare-fail "median:$(PERF_SLOWDOWN)"

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
