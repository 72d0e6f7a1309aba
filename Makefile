# tinct — build, test, benchmark.
PY := /usr/bin/python3
APT_PACKAGES := libopenblas0 python3-torch python3-numpy chromium g++

.PHONY: build install test deps minio cuda-compilers bench bench-quick bench-scaling run clean cluster-demo image image-minio deploy-test fuzz

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

# cuda-compilers compiles the kernels with NVIDIA's real NVRTC for sm_80 and
# sm_90 and checks the result with ptxas, no GPU needed (cuda/nvrtc_test.go:
# every kernel in the CUBIN, each .entry's parameter types as Launch packs
# them, no spills, at most 64 registers and 48 KB of static shared memory
# a kernel; and that these checks catch kernels broken on purpose).
# scripts/cuda-toolchain.sh fetches NVRTC 12.4 and ptxas from Debian's
# non-free section into CUDA_CACHE once (about 105 MB; nothing is
# installed). The tests skip without the compilers, so a skip fails here.
CUDA_CACHE ?= $(or $(TINCT_CUDA_CACHE),$(HOME)/.cache/tinct-cuda)
cuda-compilers:
	scripts/cuda-toolchain.sh "$(CUDA_CACHE)"
	@set -a && . "$(CUDA_CACHE)/env" && set +a && out=$$(mktemp) && rc=0 && \
	{ go test -count=1 -v -run TestRealNVRTC ./cuda/ >"$$out" 2>&1 || rc=$$?; } && cat "$$out" && \
	for t in TestRealNVRTC TestRealNVRTCCatchesBrokenKernels; do \
		grep -q -- "^--- PASS: $$t " "$$out" || { echo "cuda-compilers: $$t did not pass" >&2; rc=1; }; \
	done; rm -f "$$out"; exit $$rc

# test: vet, the whole suite on the default compute backend (auto: oneDNN's
# primitives where libdnnl loads, which make deps installs), then the shared
# suite on the other two backends: tinct's own kernels (go, its GEMM on
# oneDNN and in pure Go) and the CUDA backend with its kernels compiled by
# g++ (cuda-shim, small networks). The shared suite is the op-by-op check
# (nn/opcheck runs all three backends in every leg), the model's tests (the
# PyTorch cross-check, the gradient checks, the sampler, bitwise-repeatable
# training), bitwise resume, a two-worker cluster, the pipeline (steps in
# flight, snapshots) against one step at a time, SIGINT and colorize
# (docs/correctness.md). Also a cgo-free build and the PyTorch reference's
# self-test.
# go test ./... also holds the control core to the standard library (control/imports_test.go).
SHARED_RUN := TestExactResume|TestClusterEquivalence|TestLocalRingMatchesMaster|TestTrainSignal|TestColorizeDemoModel|TestPipelineMatchesStepwise|TestClusterPipelineEquivalence
test:
	go vet ./...
	CGO_ENABLED=0 go build -o /dev/null ./cmd/tinct
	$(PY) testdata/reference/unet.py > /dev/null
	TINCT_BACKEND=go TINCT_GEMM=go go test -count=1 ./model
	TINCT_BACKEND=go go test -count=1 ./model
	TINCT_BACKEND=go go test -count=1 -run '$(SHARED_RUN)' ./coordinator ./cmd/tinct
	TINCT_BACKEND=cuda-shim go test -count=1 ./model ./worker
	TINCT_BACKEND=cuda-shim go test -count=1 -run '$(SHARED_RUN)' ./coordinator ./cmd/tinct
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
# reference on the same rows in one run, then the cluster's own cost per
# step (make bench-cluster).
# OPENBLAS_CORETYPE is unset so that OpenBLAS may use AVX-512 (docs/internals.md).
bench: build
	env -u OPENBLAS_CORETYPE $(PY) bench/compare.py --tinct ./bin/tinct --json bench/results.json
	$(MAKE) bench-cluster

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
# Debian's packages first (debootstrap: 2–4 minutes; needs root and apt's Debian mirror).
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

# gpu-check-dry is CI's dry run of scripts/gpu-check.sh, no GPU needed: a
# CGO_ENABLED=0 bin/tinct runs every --gpu command of the GPU check against
# fake NVIDIA libraries that check and record every call
# (cuda/testdata/fake*.c), then a run whose launches fail (it must stop,
# fail soft, write its summary) and one whose GPU hangs (its budget holds).
.PHONY: gpu-check-dry
gpu-check-dry:
	scripts/gpu-check-dry.sh

# sim runs the cluster simulator (docs/sim.md): the real control core in
# simulated time — its calibration against bench/scale.json, images/s and
# GPU busy for 8–256 workers at 1–100 Gbit/s under the pipelined protocol
# and the one before it, a worker dying every 10 minutes at N = 256, and
# what-if rows. About 8 s on 2 cores; flags: bin/tinct sim --help.
.PHONY: sim
sim: build
	./bin/tinct sim

# bench-cluster: a cluster step's wall time against a bare ring all-reduce
# of the same bytes, over real processes on 127.0.0.1 (tinct bench cluster:
# 2 and 4 workers, the full and the smallest network, 16² images, batch 2
# per worker; median of 3 runs, bench/cluster.json). About 70 s on 2 cores.
.PHONY: bench-cluster
bench-cluster: build
	./bin/tinct bench cluster --workers 2,4 --runs 3 --json bench/cluster.json

# slurm-test runs deploy/slurm/train.sbatch on a real Slurm on this machine
# (deploy/slurm/test.sh; root): Debian's slurmctld, slurmd and munge
# (installed where missing), a one-node configuration in a temporary folder,
# a job of a coordinator and two CPU workers through a scancelled worker
# step, a SIGTERM to the batch shell (checkpoint, requeue, resume) and an
# scontrol requeue; every step committed once. Every daemon it starts is
# stopped. 44-57 s on 2 cores (docs/cluster.md, "Slurm").
.PHONY: slurm-test
slurm-test:
	deploy/slurm/test.sh

# chaos (not in CI; a few minutes on 2 cores): one training run on a
# cluster of real processes (a coordinator and 4 workers, mutual TLS, rings
# of 3 and a spare) under CHAOS_FAULTS mixed faults — workers killed with
# SIGKILL and started again under the same name, workers stopped with
# SIGSTOP (some past the ring timeout), junk on every port (gRPC, all-reduce,
# memberlist TCP and UDP), coordinator SIGKILLs and restarts with
# resume=auto — then checks that every step was committed once in the final
# record and that the final state is bitwise equal to a fault-free run of
# the same seed (cmd/tinct/chaos_test.go; summary in bench/chaos.json,
# docs/cluster.md "Chaos test"). CHAOS_SEED picks the fault schedule.
CHAOS_FAULTS ?= 110
CHAOS_SEED ?= 1
.PHONY: chaos
chaos:
	CHAOS_FAULTS=$(CHAOS_FAULTS) CHAOS_SEED=$(CHAOS_SEED) go test -tags chaos -count=1 -v -timeout 40m -run TestChaos ./cmd/tinct

# k8s-validate checks every manifest of deploy/kubernetes (the base and the
# GPU overlay, through kubectl's kustomize) against a real kube-apiserver
# on this machine's loopback: server-side apply with dryRun=All and strict
# field validation, the overlay as an update of a running base, and copies
# of the base broken on purpose that must be rejected
# (deploy/kubernetes/validate.sh). Installs Debian's etcd-server where
# missing; kube-apiserver and kubectl v1.34.0 are built from the Go module
# proxy once (deploy/kubernetes/k8sbin, cached under
# ~/.cache/tinct/k8s-v1.34.0). .ci/run runs it.
.PHONY: k8s-validate k8s-bins k8s-test
k8s-validate:
	deploy/kubernetes/validate.sh

# k8s-bins builds (or finds cached) every Kubernetes program the tests use.
k8s-bins:
	deploy/kubernetes/k8sbin.sh kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy

# k8s-test runs deploy/kubernetes/base on a real one-node Kubernetes on this
# machine (deploy/kubernetes/test.sh; root): Debian's containerd, runc and
# CNI bridge plugin, the Kubernetes programs of k8s-bins, the tinct image
# imported into containerd, MinIO on the host behind a Service; a worker
# pod and the coordinator pod deleted mid-run, every step committed once,
# the web app colorizing through its Service. Everything it starts is
# stopped. .ci/run runs it after deploy-test; timings in
# deploy/kubernetes/README.md.
k8s-test: image minio
	deploy/kubernetes/test.sh
