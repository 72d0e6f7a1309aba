# tinct — build, test, benchmark.
PY := /usr/bin/python3
APT_PACKAGES := libopenblas0 python3-torch python3-numpy chromium g++

.PHONY: build install test deps minio bench bench-quick bench-scaling run clean cluster-demo image image-minio deploy-test fuzz

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

# test: vet, the whole suite on the default compute backend (auto: oneDNN's
# primitives where libdnnl loads, which make deps installs), the model's
# tests again on the go backend, with its GEMM on oneDNN and in pure Go
# (PyTorch cross-check and gradient checks included), a cgo-free build, and
# the PyTorch reference's self-test.
test:
	go vet ./...
	CGO_ENABLED=0 go build -o /dev/null ./cmd/tinct
	$(PY) testdata/reference/unet.py > /dev/null
	TINCT_BACKEND=go TINCT_GEMM=go go test -count=1 ./model
	TINCT_BACKEND=go go test -count=1 ./model
	go test -count=1 ./...

# run is the README's run command: train on the bundled photos.
run:
	go run ./cmd/tinct train --config configs/sample.yaml

# install puts tinct in $(go env GOPATH)/bin (add that folder to PATH).
install:
	go install ./cmd/tinct

# fuzz runs every fuzz target (func FuzzXxx: the parsers of untrusted bytes)
# for $(FUZZTIME) each, one after another (scripts/fuzz.sh); a failing input
# is saved under the package's testdata/fuzz/ and fails the target (make
# test runs only the seed corpora). With the default 5s, the 18 targets take
# about 1m40s on the 2-core VM with a warm build cache (75 s of fuzzing, the
# rest building and starting each package's instrumented test binary), and
# about 4m40s with an empty one.
FUZZTIME ?= 5s
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

# bench runs tinct (once per compute backend: go, onednn) and the PyTorch
# reference on the same rows in one run.
# OPENBLAS_CORETYPE is unset so that OpenBLAS may use AVX-512 (see README).
bench: build
	env -u OPENBLAS_CORETYPE $(PY) bench/compare.py --tinct ./bin/tinct --json bench/results.json

bench-quick: build
	env -u OPENBLAS_CORETYPE $(PY) bench/compare.py --tinct ./bin/tinct --quick --rounds 1

# bench-scaling: training step time against image size (32²–256²) and batch
# (1–64), per compute backend (bench/scaling.sh, bench/scaling.json).
bench-scaling: build
	bench/scaling.sh

# cluster-demo runs a training cluster on this machine against a local MinIO
# (dataset and checkpoints in s3://), kills a worker, stops and resumes the
# coordinator (scripts/cluster-demo.sh; needs make minio). About 15 s on 2
# cores after the build. .ci/run runs it before the tests; it is not part of
# make test, which needs no server process of its own.
cluster-demo: minio
	scripts/cluster-demo.sh

clean:
	rm -rf bin

# image builds the tinct container image (deploy/Dockerfile) from a
# CGO_ENABLED=0 build. BASE is the base image; when it is the default and
# not present (no registry here), deploy/base-image.sh makes it from
# Debian's packages first (debootstrap, ~1 minute; needs root).
IMAGE ?= tinct:latest
BASE_LOCAL := tinct-base:bookworm
BASE ?= $(BASE_LOCAL)
image:
	@if [ "$(BASE)" = "$(BASE_LOCAL)" ] && ! docker image inspect $(BASE_LOCAL) >/dev/null 2>&1; then deploy/base-image.sh $(BASE_LOCAL); fi
	rm -rf bin/image && mkdir -p bin/image
	CGO_ENABLED=0 go build -trimpath -o bin/image/tinct ./cmd/tinct
	docker build -q -f deploy/Dockerfile --build-arg BASE=$(BASE) -t $(IMAGE) bin/image
	@docker image inspect -f '$(IMAGE): {{.Size}} bytes' $(IMAGE)

# image-minio puts the MinIO server the tests use (make minio) in an image
# for the compose cluster.
image-minio: minio
	@if [ "$(BASE)" = "$(BASE_LOCAL)" ] && ! docker image inspect $(BASE_LOCAL) >/dev/null 2>&1; then deploy/base-image.sh $(BASE_LOCAL); fi
	rm -rf bin/image-minio && mkdir -p bin/image-minio && cp $(MINIO) bin/image-minio/minio
	docker build -q -f deploy/minio.Dockerfile --build-arg BASE=$(BASE) -t tinct-minio:latest bin/image-minio

# deploy-test runs the compose cluster's fault test on this Docker engine
# (deploy/test.sh: kill, partition, coordinator restart, scale-out, web app).
deploy-test: image image-minio
	deploy/test.sh
