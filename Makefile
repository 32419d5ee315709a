# lifeboat — the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
DEMO ?= $(CURDIR)/target/demo
LB := $(CURDIR)/target/debug/lifeboat

.PHONY: all build demo deps test test-rust test-terraform bench bench-pg bench-s3 lint fmt clean-demo

all: build

build:
	$(CARGO) build --bin lifeboat

## demo: the main job on the embedded default — two local directories stand in for
## us-west-2 and us-east-2: keys, init, nightly backup, change, backup again, verified
## restore from us-east-2, diff, snapshot list, verify --read-data, a timed restore test,
## a DR drill (runbooks/region-outage.toml) and status against the objectives (exit 0).
demo: build
	@rm -rf "$(DEMO)" && mkdir -p "$(DEMO)/data"
	@echo "== keys: an identity (decrypts) and a writer key (backs up)"
	$(LB) keys generate --dir "$(DEMO)/keys"
	@$(LB) config example --dir "$(DEMO)" > "$(DEMO)/lifeboat.toml"
	@echo "== sample data: $(DEMO)/data"
	@mkdir -p "$(DEMO)/data/docs" "$(DEMO)/data/db" "$(DEMO)/data/cache"
	@for i in $$(seq 1 200); do printf 'record %s\n%.0s' $$i $$(seq 1 50) > "$(DEMO)/data/docs/note-$$i.txt"; done
	@head -c 24000000 /dev/urandom > "$(DEMO)/data/db/blob.bin"
	@printf 'skipped by exclude\n' > "$(DEMO)/data/cache/tmp.bin"
	@printf 'héllo wörld\n' > "$(DEMO)/data/docs/ünïcode name.txt"
	@ln -sf docs/note-1.txt "$(DEMO)/data/latest-note"
	@export LIFEBOAT_CONFIG="$(DEMO)/lifeboat.toml"; \
	echo "== init: the repository in both regions"; \
	$(LB) init | tee "$(DEMO)/init.txt"; \
	echo "== pin it: this host now trusts only this repository id, its secrets and writer 'default'"; \
	sed -n '/^# in \[keys\]:/,/^# a table of its own/{/^#/d;p;}' "$(DEMO)/init.txt" > "$(DEMO)/pins.txt"; \
	sed -i '/^\[keys\]$$/r $(DEMO)/pins.txt' "$(DEMO)/lifeboat.toml"; \
	sed -n '/^\[keys\.writers\]/,/^$$/p' "$(DEMO)/init.txt" >> "$(DEMO)/lifeboat.toml"; \
	grep -q '^repository_id = ' "$(DEMO)/lifeboat.toml" || { echo "could not pin the demo config"; exit 1; }; \
	echo "== nightly backup"; \
	$(LB) backup app-data; \
	echo "== the data changes during the day"; \
	for i in 1 2 3; do echo "changed $$i" >> "$(DEMO)/data/docs/note-$$i.txt"; done; \
	echo "new file" > "$(DEMO)/data/docs/new.txt"; \
	echo "== next nightly backup (only the change is stored)"; \
	$(LB) backup app-data; \
	echo "== restore the latest snapshot from us-east-2, verified"; \
	$(LB) restore app-data --from us-east-2 --to "$(DEMO)/restore"; \
	echo "== diff against the source (the cache/ directory is excluded by the plan)"; \
	diff -r --exclude=cache "$(DEMO)/data" "$(DEMO)/restore" && echo "identical"; \
	echo "== snapshots"; \
	$(LB) snapshots; \
	echo "== verify both regions, reading every pack"; \
	$(LB) verify --read-data; \
	echo "== restore test: restore into scratch space, verify, record the time against the RTO"; \
	$(LB) verify --restore --plan app-data; \
	echo "== DR drill: us-west-2 declared lost (simulated in-process), every plan restored from us-east-2, verified, RTO/RPO asserted"; \
	$(LB) drill run runbooks/region-outage.toml --approve-all --approver demo; \
	echo "== status: RPO age, restore evidence against the RTO, drill age, region health"; \
	$(LB) status; \
	echo "(status exit code 0: healthy — backups, restore test and drill all in date)"; \
	echo "HTML drill report: $$(ls -t "$(DEMO)"/cache/drill-reports/*.html | head -1)"

deps:
	@bash .ci/deps.sh

## test: install what the tests need, then run every test (all suites run even when one
## fails; the exit code is non-zero if any failed).
test: deps
	@rc=0; \
	$(MAKE) --no-print-directory test-rust || rc=1; \
	$(MAKE) --no-print-directory test-terraform || rc=1; \
	exit $$rc

test-rust:
	$(CARGO) test --workspace --no-fail-fast

test-terraform:
	bash terraform/check.sh

## bench: release build, peers side by side (restic), ratios; then the PostgreSQL case and
## the same backup/restore through a local S3 server against local directories.
bench:
	bash tests/bench/run.sh
	bash tests/bench/pg.sh
	bash tests/bench/s3.sh
	bash tests/bench/prune.sh

## bench-s3: only the S3 case (throughput through S3 as a fraction of local, peak RSS).
bench-s3:
	bash tests/bench/s3.sh

## bench-pg: only the PostgreSQL case (pgbench database; pg_dump | zstd and restic --stdin beside).
bench-pg:
	bash tests/bench/pg.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path tests/bench/s3mem/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path tests/bench/s3mem/Cargo.toml

clean-demo:
	rm -rf "$(DEMO)"
