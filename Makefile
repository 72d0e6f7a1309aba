# tinct — build, test, benchmark.
PY := /usr/bin/python3
APT_PACKAGES := libopenblas0 python3-torch python3-numpy chromium

.PHONY: build test deps minio bench bench-quick run clean cluster-demo fuzz

build:
	go build -o bin/tinct ./cmd/tinct

MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
MINIO := $(shell go env GOPATH)/bin/minio

# deps installs what the tests use: Debian packages (root; Debian 12) and a
# MinIO server for the S3 store's tests (built with go install: ~14 minutes
# cold on 2 cores, reused when present).
deps: minio
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then echo "deps: $(APT_PACKAGES) already installed"; \
	else apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); fi

# minio builds the MinIO server the S3 tests and make cluster-demo use.
minio:
	@if [ -x "$(MINIO)" ]; then echo "deps: $(MINIO) present"; \
	else echo "deps: building MinIO $(MINIO_VERSION) (several minutes)"; go install github.com/minio/minio@$(MINIO_VERSION); fi

# test: vet, the whole suite on the fastest backend, the model's tests again
# on the pure-Go GEMM, a cgo-free build, and the PyTorch reference's self-test.
test:
	go vet ./...
	CGO_ENABLED=0 go build -o /dev/null ./cmd/tinct
	$(PY) testdata/reference/unet.py > /dev/null
	TINCT_GEMM=go go test -count=1 ./model
	go test -count=1 ./...

# fuzz runs every fuzz target (func FuzzXxx: the parsers of untrusted bytes)
# for $(FUZZTIME) each, one after another (scripts/fuzz.sh); a failing input
# is saved under the package's testdata/fuzz/ and fails the target (make
# test runs only the seed corpora). With the default 5s, the 15 targets take
# about 1m40s on the 2-core VM with a warm build cache (75 s of fuzzing, the
# rest building and starting each package's instrumented test binary), and
# about 4m40s with an empty one.
FUZZTIME ?= 5s
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

run: build
	./bin/tinct bench train --size 64 --batch 8

# bench runs tinct and the PyTorch reference on the same rows in one run.
# OPENBLAS_CORETYPE is unset so that OpenBLAS may use AVX-512 (see README).
bench: build
	env -u OPENBLAS_CORETYPE $(PY) bench/compare.py --tinct ./bin/tinct --json bench/results.json

bench-quick: build
	env -u OPENBLAS_CORETYPE $(PY) bench/compare.py --tinct ./bin/tinct --quick

# cluster-demo runs a training cluster on this machine against a local MinIO
# (dataset and checkpoints in s3://), kills a worker, stops and resumes the
# coordinator (scripts/cluster-demo.sh; needs make minio). About 15 s on 2
# cores after the build. .ci/run runs it before the tests; it is not part of
# make test, which needs no server process of its own.
cluster-demo: minio
	scripts/cluster-demo.sh

clean:
	rm -rf bin
