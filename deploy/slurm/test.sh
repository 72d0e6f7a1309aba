#!/usr/bin/env bash
# deploy/slurm/test.sh: deploy/slurm/train.sbatch on a real Slurm (Debian's
# slurmctld, slurmd and munge, 22.05) running on this machine (make
# slurm-test). As root, it:
#
#  1. installs slurmctld, slurmd, slurm-client and munge with apt-get where
#     they are missing, and builds bin/tinct;
#  2. writes a one-node configuration for this machine in a temporary folder
#     (its own munge key and socket, free ports, two fake GPUs: character
#     devices made with mknod, so that --gpus-per-task=1 and
#     CUDA_VISIBLE_DEVICES work as on a GPU node), and starts munged,
#     slurmctld and slurmd;
#  3. submits train.sbatch unchanged but for sbatch options (one node, two
#     tasks: two workers, computing on the CPU with TINCT_CPU=1), a tiny
#     model and 40 photos of data/sample, and
#     - scancels one worker step mid-run: the job goes on, the script starts
#       a new worker step and the ring re-forms with it;
#     - sends SIGTERM to the batch shell (scancel --batch --signal=TERM, what
#       --signal=B:TERM@120 does before the time limit): the coordinator
#       checkpoints, the job requeues itself, and its next run resumes from
#       that checkpoint (Slurm holds a requeued job for its credentials'
#       lifetime, cred_expire: 120 s by default, 10 s here);
#     - requeues it with scontrol requeue, as a preemption with
#       PreemptMode=REQUEUE does (Slurm sends SIGTERM to every step): the
#       coordinator checkpoints and the third run resumes from it and
#       finishes;
#     and asserts that the job COMPLETED, that every step 1..N was committed
#     exactly once over the three runs, that each run resumed from the
#     checkpoint its interruption saved, that the final checkpoint is step
#     N, that each worker step had a GPU of its own and that the secret and
#     key are readable by the user only;
#  4. submits a second job and scancels it: it must end CANCELLED, not
#     requeued by its own trap;
#  5. stops every daemon it started (and cancels its jobs) on exit.
#
# Environment: EPOCHS (default 200), SLURM_TEST_KEEP=1 keeps the folder.
# About 50 s on 2 cores (docs/cluster.md, "Slurm").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EPOCHS=${EPOCHS:-200}
T0=$SECONDS
say() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - T0)); }
die() {
	printf 'slurm-test: FAILED: %s\n' "$*" >&2
	exit 1
}
[[ $(id -u) == 0 ]] || die "run as root (it starts slurmctld, slurmd and munged)"

say "Slurm and munge from Debian"
need=()
for p in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
	command -v "${p%%:*}" >/dev/null 2>&1 || need+=("${p#*:}")
done
if ((${#need[@]})); then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
slurmctld -V

say "build bin/tinct"
(cd "$ROOT" && go build -o bin/tinct ./cmd/tinct)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tinct-slurm-test.XXXXXX")
chmod 755 "$WORK"
PIDS=()
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n ${SLURM_CONF:-} ]] && [[ -e $WORK/slurmctld.log ]]; then
		# cancel our jobs and let slurmd end their steps before it stops
		scancel --quiet -u root 2>/dev/null || true
		for _ in $(seq 60); do
			[[ -z $(squeue -h 2>/dev/null) ]] && break
			sleep 0.5
		done
	fi
	local i
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill "${PIDS[i]}" 2>/dev/null || true
		wait "${PIDS[i]}" 2>/dev/null || true
	done
	if [[ $rc -ne 0 ]]; then
		for f in "$WORK"/job/job-*.out "$WORK"/slurmctld.log "$WORK"/slurmd.log; do
			[[ -e $f ]] && { echo "--- tail of $f" >&2; tail -n 25 "$f" >&2; }
		done
	fi
	if [[ $rc -ne 0 || ${SLURM_TEST_KEEP:-} == 1 ]]; then
		echo "slurm-test: logs in $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "slurm-test: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }

say "a one-node Slurm for this machine in $WORK"
H=$(hostname -s)
CPUS=$(nproc)
mkdir -p "$WORK/state" "$WORK/spool" "$WORK/job" "$WORK/data"
mungekey -c -b 1024 -k "$WORK/munge.key" 2>/dev/null || head -c 1024 /dev/urandom >"$WORK/munge.key"
chmod 600 "$WORK/munge.key"
mknod "$WORK/gpu0" c 1 3 && mknod "$WORK/gpu1" c 1 3 || die "mknod (fake GPU devices) failed"
cat >"$WORK/slurm.conf" <<EOF
ClusterName=tinct-test
SlurmctldHost=$H(127.0.0.1)
CommunicationParameters=NoInAddrAny
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$WORK/munge.sock,cred_expire=10
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=2,bf_interval=2
KillWait=10
GresTypes=gpu
NodeName=$H NodeAddr=127.0.0.1 CPUs=$CPUS Gres=gpu:2 State=UNKNOWN
PartitionName=test Nodes=$H Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
EOF
echo "NodeName=$H Name=gpu File=$WORK/gpu[0-1]" >"$WORK/gres.conf"
export SLURM_CONF=$WORK/slurm.conf

munged -F -f --key-file="$WORK/munge.key" --socket="$WORK/munge.sock" --pid-file="$WORK/munged.pid" \
	--seed-file="$WORK/munge.seed" >>"$WORK/munged.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [[ -S $WORK/munge.sock ]] && break || sleep 0.1; done
munge -S "$WORK/munge.sock" -n | unmunge -S "$WORK/munge.sock" >/dev/null || die "munge does not work"
slurmctld -D -i -f "$SLURM_CONF" >>"$WORK/slurmctld.log" 2>&1 &
PIDS+=($!)
slurmd -D -f "$SLURM_CONF" >>"$WORK/slurmd.log" 2>&1 &
PIDS+=($!)
for i in $(seq 60); do
	[[ $(sinfo -h -o %t 2>/dev/null) == idle ]] && break
	((i < 60)) || die "the node did not come up idle: $(sinfo 2>&1)"
	sleep 0.5
done
sinfo
scontrol show node "$H" | grep -E 'Gres=|CPUTot'

say "submit train.sbatch: 2 CPU workers, $EPOCHS epochs of a tiny model"
cp $(ls "$ROOT"/data/sample/*.jpg | head -n 40) "$WORK/data/"
cd "$WORK/job"
OUT=$WORK/job/job.out
JOB=$(TINCT=$ROOT/bin/tinct TINCT_CPU=1 TINCT_BIND=127.0.0.1 TINCT_FLAGS="-v" TINCT_JOB_DIR=$WORK/job/run TINCT_STORE=$WORK/job/ckpt TINCT_DATASET=$WORK/data \
	TINCT_COORDINATOR_FLAGS="--step-timeout 60s" \
	sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=10 --output="$OUT" \
	"$ROOT/deploy/slurm/train.sbatch" image_size=8 'model.widths=[4,8]' batch_size=4 epochs="$EPOCHS" \
	checkpoint_every=1 sample_every=0 val_images=4 test_images=4 seed=7)
echo "job $JOB"

# wait_out REGEX SECONDS [FROM]: waits for a line of the job's output
# matching REGEX after line FROM; prints it.
wait_out() {
	local re=$1 from=${3:-0} deadline=$((SECONDS + $2)) line
	while ((SECONDS < deadline)); do
		# all of it through grep: with pipefail, a grep -m 1 that stops
		# reading while tail still writes fails the pipeline (SIGPIPE)
		line=$(tail -n +"$((from + 1))" "$OUT" 2>/dev/null | grep -E -- "$re" || true)
		if [[ -n $line ]]; then
			echo "  ${line%%$'\n'*}" | cut -c 1-200
			return 0
		fi
		sleep 0.2
	done
	die "no line matching /$re/ in the job's output within $2 s"
}
lines() { wc -l <"$OUT"; }
# stop_step FROM: the step of the newest checkpoint saved up to the first
# "training interrupted" after line FROM (the interruption may save none of
# its own when its snapshot was already checkpointed at an epoch's end)
stop_step() {
	local at
	at=$(tail -n +"$(($1 + 1))" "$OUT" | grep -n -m 1 'training interrupted; checkpoint saved' | cut -d: -f1 || true)
	[[ -n $at ]] || die "no 'training interrupted' after line $1"
	head -n "$(($1 + at))" "$OUT" | grep -E 'msg="?checkpoint saved' | tail -n 1 | grep -Eo ' step=[0-9]+' | cut -d= -f2 || true
}
# resumed_step FROM: the step the first resume after line FROM started at
resumed_step() {
	tail -n +"$(($1 + 1))" "$OUT" | grep -E 'msg="?resumed' | head -n 1 | grep -Eo ' step=[0-9]+' | cut -d= -f2 || true
}
state() { scontrol show job "$JOB" | grep -Eo 'JobState=\S+' | cut -d= -f2; }

wait_out 'ring formed.*workers="?\[slurm-[^ ]+ slurm-[^ ]+\]' 60
wait_out 'epoch done"? epoch=3 ' 60

say "scancel one worker step: the job goes on with a new one"
N=$(lines)
STEP=$(squeue -h -s -j "$JOB" -o '%i %j' | awk '$2 == "worker1" {print $1}')
[[ -n $STEP ]] || die "no worker1 step: $(squeue -s -j "$JOB")"
scancel "$STEP"
echo "  scancel $STEP"
wait_out 'worker (lost|failed|dropped)' 30 "$N"
wait_out 'worker step 1 ended' 30 "$N"
wait_out 'ring formed.*workers="?\[slurm-[^ ]+ slurm-[^ ]+\]' 60 "$N"
wait_out 'epoch done' 60 "$(lines)"
[[ $(state) == RUNNING ]] || die "job $JOB is $(state) after the worker step was cancelled"

# checkpoint_and_resume N RUN WHAT: the stop (by WHAT) logged after line N
# saved a checkpoint, the job went back to PENDING, and its run RUN resumed
# from that checkpoint's step
checkpoint_and_resume() {
	local n=$1 run=$2 what=$3 stop resumed st i
	wait_out 'training interrupted; checkpoint saved' 60 "$n"
	stop=$(stop_step "$n")
	[[ -n $stop ]] || die "no checkpoint saved before the $what's stop"
	echo "  checkpoint at step $stop"
	for i in $(seq 120); do
		st=$(state)
		[[ $st == PENDING ]] && break
		((i < 120)) || die "job $JOB is $st, not requeued (PENDING)"
		sleep 0.25
	done
	scontrol show job "$JOB" | grep -Eo '(JobState|Reason|Restarts|EligibleTime)=\S+' | tr '\n' ' '
	echo
	wait_out "job $JOB \\(run $run\\)" 60 "$n"
	wait_out 'msg="?resumed' 60 "$n"
	resumed=$(resumed_step "$n")
	[[ $resumed == "$stop" ]] || die "resumed at step $resumed, but the $what's checkpoint is step $stop"
}

say "SIGTERM to the batch shell (--signal=B:TERM): checkpoint, requeue"
N=$(lines)
scancel --batch --signal=TERM "$JOB"
wait_out 'requeueing job' 60 "$N"
checkpoint_and_resume "$N" 1 SIGTERM

wait_out 'epoch done' 60 "$(lines)"

say "scontrol requeue (as a preemption does): every step gets SIGTERM"
N=$(lines)
scontrol requeue "$JOB"
checkpoint_and_resume "$N" 2 requeue

say "the requeued job finishes"
wait_out 'training finished"? step=' 300 "$N"
for i in $(seq 240); do
	s=$(state)
	[[ $s == COMPLETED ]] && break
	[[ $s == RUNNING || $s == COMPLETING ]] || die "job $JOB ended $s"
	((i < 240)) || die "job $JOB still $s"
	sleep 0.25
done
scontrol show job "$JOB" | grep -Eo '(JobState|Restarts|ExitCode)=\S+' | tr '\n' ' '
echo
TOTAL=$(grep -Eo 'training finished"? step=[0-9]+' "$OUT" | grep -Eo '[0-9]+$' | tail -n 1)
SPE=$(grep -Eo 'steps_per_epoch=[0-9]+' "$OUT" | head -n 1 | cut -d= -f2)
((TOTAL == EPOCHS * SPE)) || die "finished at step $TOTAL, want $EPOCHS×$SPE"
grep -Eo 'step committed"? step=[0-9]+' "$OUT" | grep -Eo '[0-9]+$' | sort -n | uniq -c >"$WORK/steps"
DUP=$(awk '$1 != 1' "$WORK/steps" | head -n 3)
[[ -z $DUP ]] || die "steps committed more than once: $DUP"
[[ $(wc -l <"$WORK/steps") == "$TOTAL" && $(head -n 1 "$WORK/steps" | awk '{print $2}') == 1 ]] ||
	die "committed $(wc -l <"$WORK/steps") distinct steps, want 1..$TOTAL"
echo "  steps 1..$TOTAL committed exactly once each over the three runs"
LAST=$(ls "$WORK/job/ckpt" | grep -E '^step-[0-9]+' | sort | tail -n 1)
[[ $LAST == step-$(printf %09d "$TOTAL")* ]] || die "newest checkpoint is $LAST, want step $TOTAL"
echo "  newest checkpoint $LAST"
# each worker step had one GPU of its own (CUDA_VISIBLE_DEVICES from
# --gpus-per-task=1; the fake devices), the coordinator's step none
G0=$(grep -Eo 'CUDA_VISIBLE_DEVICES=\S*' "$WORK/job/run/logs/worker0.log" | head -n 1)
G1=$(grep -Eo 'CUDA_VISIBLE_DEVICES=\S*' "$WORK/job/run/logs/worker1.log" | head -n 1)
[[ $G0 =~ ^CUDA_VISIBLE_DEVICES=[01]$ && $G1 =~ ^CUDA_VISIBLE_DEVICES=[01]$ && $G0 != "$G1" ]] ||
	die "worker steps' GPUs: worker0 $G0, worker1 $G1; want one each, different"
echo "  worker steps: $G0, $G1"
[[ $(stat -c %a "$WORK/job/run") == 700 && $(stat -c %a "$WORK/job/run/secret") == 600 && $(stat -c %a "$WORK/job/run/certs/tls/tls.key") == 600 ]] ||
	die "the job folder, secret or key is readable by others"
[[ ! -e $WORK/job/run/certs/ca.key ]] || die "the CA key was kept"
echo "  secret and key readable by the user only; no CA key left"

say "scancel of a job (a user's cancel) is not requeued"
cd "$WORK/job"
OUT=$WORK/job/job2.out
JOB=$(TINCT=$ROOT/bin/tinct TINCT_CPU=1 TINCT_BIND=127.0.0.1 TINCT_FLAGS="-v" TINCT_JOB_DIR=$WORK/job/run2 TINCT_STORE=$WORK/job/ckpt2 TINCT_DATASET=$WORK/data \
	sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=10 --output="$OUT" \
	"$ROOT/deploy/slurm/train.sbatch" image_size=8 'model.widths=[4,8]' batch_size=4 epochs="$EPOCHS" \
	checkpoint_every=1 sample_every=0 val_images=4 test_images=4 seed=7)
wait_out 'epoch done' 60
scancel "$JOB"
for i in $(seq 120); do
	s=$(state)
	[[ $s == CANCELLED ]] && break
	((i < 120)) || die "job $JOB is $s after scancel"
	sleep 0.25
done
# until it has left the queue (a requeued job would stay in it, PENDING)
for i in $(seq 120); do
	[[ -z $(squeue -h -j "$JOB" 2>/dev/null) ]] && break
	((i < 120)) || die "job $JOB still in the queue 30 s after scancel: $(squeue -h -j "$JOB" -o '%T %r')"
	sleep 0.25
done
scontrol show job "$JOB" | grep -Eo '(JobState|Restarts)=\S+' | tr '\n' ' '
echo
[[ $(state) == CANCELLED ]] || die "job $JOB is $(state) after scancel, want CANCELLED"
scontrol show job "$JOB" | grep -q 'Restarts=0' || die "job $JOB was requeued after scancel"

say "slurm-test: OK"
