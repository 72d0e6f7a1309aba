package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/control"
	"github.com/tinct/tinct/coordinator"
	"github.com/tinct/tinct/dataset"
	"github.com/tinct/tinct/internal/atomicfile"
	"github.com/tinct/tinct/internal/health"
	"github.com/tinct/tinct/worker"
)

// nodeFlags are how a coordinator or worker proves it belongs to the
// cluster: the shared secret (never on the command line, where ps shows
// it) and the TLS material, or an explicit plaintext on loopback.
type nodeFlags struct {
	secretFile string
	tlsDir     string
	plaintext  bool
}

const secretHelp = `The cluster secret comes from the file --secret-file names, else from
$TINCT_CLUSTER_SECRET; never from the command line, where ps shows it. It
must be the same on the coordinator and every worker.

Traffic is mutual TLS under the cluster's CA: --tls-dir (default
$TINCT_TLS_DIR) names a folder holding ca.crt, tls.crt and tls.key, laid out
like a Kubernetes TLS secret; tinct cluster certs makes them.
--plaintext turns encryption off and is refused on any address that is not
a loopback one.`

func (n *nodeFlags) add(f *pflag.FlagSet) {
	f.StringVar(&n.secretFile, "secret-file", "", "file holding the cluster secret (default: $TINCT_CLUSTER_SECRET)")
	f.StringVar(&n.tlsDir, "tls-dir", os.Getenv("TINCT_TLS_DIR"), "folder with ca.crt, tls.crt and tls.key (tinct cluster certs makes them); default $TINCT_TLS_DIR")
	f.BoolVar(&n.plaintext, "plaintext", false, "no TLS: loopback addresses only (tests, one-machine demos)")
}

// load reads the secret and the TLS material.
func (n *nodeFlags) load() ([]byte, *cluster.Security, error) {
	secret, err := clusterSecret(n.secretFile)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case n.plaintext && n.tlsDir != "":
		return nil, nil, errors.New("--plaintext and --tls-dir: choose one")
	case n.plaintext:
		return secret, cluster.Plaintext(), nil
	case n.tlsDir == "":
		return nil, nil, errors.New("no TLS material: give --tls-dir DIR (or set TINCT_TLS_DIR; tinct cluster certs makes the files), or --plaintext on loopback addresses")
	}
	sec, err := cluster.LoadTLS(n.tlsDir)
	return secret, sec, err
}

// clusterSecret reads the secret file, else $TINCT_CLUSTER_SECRET.
func clusterSecret(file string) ([]byte, error) {
	var s string
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--secret-file: %w", err)
		}
		s = strings.TrimRight(string(b), "\r\n")
		if s == "" {
			return nil, fmt.Errorf("--secret-file %s is empty", file)
		}
	} else {
		s = os.Getenv("TINCT_CLUSTER_SECRET")
	}
	if s == "" {
		return nil, errors.New("no cluster secret: set TINCT_CLUSTER_SECRET or give --secret-file (the same secret on the coordinator and every worker)")
	}
	return []byte(s), nil
}

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Tools for a training cluster"}
	var (
		out      string
		hosts    []string
		days     int
		workTree bool
	)
	certs := &cobra.Command{
		Use:   "certs --out DIR --host NAME[,NAME...] ...",
		Short: "Make a cluster CA and a TLS certificate for each node",
		Long: `Writes a cluster CA (DIR/ca.crt and DIR/ca.key; an existing pair is reused,
so nodes can be added later) and, for each --host, a folder DIR/NAME with
ca.crt, tls.crt and tls.key (ECDSA P-256, valid --days): what --tls-dir of
tinct coordinator start and tinct worker join wants. A --host lists a
node's names, DNS names or IP addresses, comma-separated; the first names
the folder. Nodes check each other's certificates against the CA only, not
the names in them (the CA is the cluster's own: holding a certificate from
it is what makes a node a member), so one certificate may serve many
workers, e.g. every pod of a StatefulSet. Keep ca.key off the nodes; every
file is written 0600. DIR inside a git work tree is refused (one git add -A
would commit the CA's key) unless --in-work-tree is given.`,
		Example: `  tinct cluster certs --out ~/.tinct/certs --host coordinator,10.0.0.1 --host gpu1,10.0.0.2 --host gpu2,10.0.0.3
  tinct cluster certs --out ~/.tinct/certs --host 127.0.0.1      # one certificate for a cluster on this machine`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("--out DIR is required")
			}
			if tree := workTreeOf(out); tree != "" && !workTree {
				return fmt.Errorf("--out %s is inside the git work tree %s, where one git add -A would commit the CA's private key: write it outside (e.g. --out ~/.tinct/certs), or give --in-work-tree", out, tree)
			}
			var nodes [][]string
			for _, h := range hosts {
				nodes = append(nodes, strings.Split(h, ","))
			}
			dirs, err := cluster.MakeCerts(cluster.CertOptions{Out: out, Nodes: nodes, Valid: time.Duration(days) * 24 * time.Hour})
			if err != nil {
				return err
			}
			for _, d := range dirs {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", d)
			}
			return nil
		},
	}
	certs.Flags().StringVar(&out, "out", "", "folder to write the CA and the node folders into")
	certs.Flags().StringArrayVar(&hosts, "host", nil, "a node's names (DNS or IP), comma-separated; repeat for each node")
	certs.Flags().IntVar(&days, "days", 365, "validity of the certificates in days")
	certs.Flags().BoolVar(&workTree, "in-work-tree", false, "write into a git work tree all the same (a folder git ignores, or a key deleted at once)")
	cmd.AddCommand(certs)
	return cmd
}

// workTreeOf is the git work tree that holds dir (the nearest folder up
// with a .git entry), or "".
func workTreeOf(dir string) string {
	d, _ := filepath.Abs(dir)
	for ; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Lstat(filepath.Join(d, ".git")); err == nil {
			return d
		}
	}
	return ""
}

func newCoordinatorCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "coordinator", Short: "Run the coordinator of a training cluster"}
	var (
		file string
		node nodeFlags
		opt  coordinator.RemoteOptions
		run  clusterRun
	)
	start := &cobra.Command{
		Use:   "start [key=value ...]",
		Short: "Train with remote workers (tinct worker join)",
		Long: `Starts the coordinator of a training cluster: the same training as tinct train
(the same configuration keys, run directory, metrics, sample grids and
checkpoints), with the gradients computed by remote workers that join with
tinct worker join --coordinator HOST:PORT and the same secret. Workers open
the dataset path of the configuration themselves: a shared filesystem is
assumed, unless dataset is s3://bucket/prefix, which each worker fetches into
its own output_dir/datasets/ (give workers the TINCT_S3_* and AWS_*
variables). resume=true continues from the newest valid checkpoint (an error if there is
none), resume=auto if there is one; waiting workers rejoin by themselves.

` + secretHelp,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(file, args)
			if err != nil {
				return err
			}
			if opt.Secret, opt.Security, err = node.load(); err != nil {
				return err
			}
			if !slices.Contains(cluster.GossipProfiles, opt.GossipProfile) {
				return fmt.Errorf("--gossip-profile %q: want one of %v", opt.GossipProfile, cluster.GossipProfiles)
			}
			return trainCluster(cmd.Context(), cmd, cfg, opt, run)
		},
	}
	f := start.Flags()
	f.StringVar(&file, "config", "", "configuration file over the built-in defaults")
	f.StringVar(&opt.Listen, "listen", "127.0.0.1:7070", "gRPC address workers connect to")
	node.add(f)
	f.StringVar(&opt.GossipBind, "gossip", "", "memberlist bind address host:port (default: --listen's host, any port)")
	f.StringVar(&opt.Advertise, "advertise", "", "host (name or IP) workers reach the gossip at (default: --gossip's host, or this machine's address when that is 0.0.0.0)")
	f.StringVar(&run.health, "health", "", "serve /healthz and /readyz on this address (e.g. :8081; default: none)")
	f.StringVar(&opt.GossipProfile, "gossip-profile", "lan", "memberlist failure-detection timing: lan (a data-centre network), wan (slow or lossy links), local (loopback only: tests, one-machine demos)")
	f.IntVar(&run.minWorkers, "min-workers", 1, "workers needed to train; with fewer, wait up to --wait, then checkpoint and fail")
	f.DurationVar(&run.wait, "wait", control.DefaultWait, "how long to wait for --min-workers")
	f.DurationVar(&run.stepTimeout, "step-timeout", control.DefaultStepTimeout, "a worker that has not reported a step by then is dropped (it may rejoin)")
	f.DurationVar(&run.setupTimeout, "setup-timeout", control.DefaultSetupTimeout, "a worker that has not loaded the state by then is dropped (it may rejoin)")
	f.DurationVar(&run.backoff, "backoff", control.DefaultBackoff, "a worker that failed sits out this long, doubled for each failure in a row")
	f.IntVar(&run.maxFailures, "max-failures", control.DefaultMaxFailures, "failures in a row after which a worker is excluded from the run")
	f.DurationVar(&opt.RingTimeout, "ring-timeout", 60*time.Second, "the workers' all-reduce deadline")
	f.StringVar(&run.addressFile, "address-file", os.Getenv(coordinatorFileEnv), "once listening, write the address workers reach (HOST:PORT) to this file, for worker join --coordinator-file (default $"+coordinatorFileEnv+")")
	cmd.AddCommand(start)
	return cmd
}

// clusterRun is the coordinator's fault-handling settings.
type clusterRun struct {
	minWorkers, maxFailures                  int
	wait, stepTimeout, setupTimeout, backoff time.Duration
	health, addressFile                      string
}

func trainCluster(ctx context.Context, cmd *cobra.Command, cfg *config.Config, opt coordinator.RemoteOptions, run clusterRun) error {
	if opt.GossipBind == "" {
		host, _, err := net.SplitHostPort(opt.Listen)
		if err != nil {
			return fmt.Errorf("--listen %q: %w", opt.Listen, err)
		}
		opt.GossipBind = net.JoinHostPort(host, "0")
	}
	if err := opt.Security.Check(opt.Listen, opt.GossipBind); err != nil {
		return err
	}
	var listening atomic.Bool
	stopHealth, err := serveProbes(run.health, &listening, "preparing: not accepting workers yet")
	if err != nil {
		return err
	}
	defer stopHealth()
	r, err := startRun(ctx, cmd, cfg)
	if err != nil {
		return err
	}
	defer r.close()
	dataDir, runDir := r.dataDir, r.dir
	// Workers open what cfg.Dataset names. An s3:// dataset stays a URL:
	// each worker fetches it into its own output_dir/datasets/ (with its own
	// TINCT_S3_* and AWS_* environment), so no shared filesystem is needed.
	// Otherwise they open the same path (a shared filesystem): give them the
	// prepared set.
	if !dataset.IsRemote(cfg.Dataset) {
		if abs, err := filepath.Abs(dataDir); err == nil {
			dataDir = abs
		}
		cfg.Dataset = dataDir
	}
	st := r.st
	opt.Log = slog.Default()
	// every worker checks that it opened the same set before it computes
	opt.DatasetHash, opt.DatasetPath = r.train.Manifest().ContentHash(), worker.HostPath(r.train.Dir())
	cl, err := coordinator.StartRemote(cfg, opt)
	if err != nil {
		return err
	}
	listening.Store(true)
	if run.addressFile != "" {
		addr, err := cluster.Advertised(cl.Addr(), opt.Advertise)
		if err != nil {
			return err
		}
		if err := writeAddressFile(run.addressFile, addr); err != nil {
			return err
		}
		slog.Info("coordinator address written", "file", run.addressFile, "addr", addr)
	}
	// the coordinator closes the cluster when it finishes; this covers a
	// failure before that
	defer cl.Close(cluster.Outcome_FAILED, "coordinator failed to start")
	copt := r.options(cl)
	copt.MinWorkers, copt.Wait, copt.StepTimeout, copt.SetupTimeout = run.minWorkers, run.wait, run.stepTimeout, run.setupTimeout
	copt.Backoff, copt.MaxFailures = run.backoff, run.maxFailures
	co, err := coordinator.New(copt)
	if err != nil {
		return err
	}
	slog.Info("training on a cluster", "images", r.train.Len(), "batch", cfg.BatchSize, "steps_per_epoch", co.StepsPerEpoch(), "epochs", cfg.Epochs, "from_epoch", co.Epoch()+1, "workers_join", cl.Addr(), "min_workers", run.minWorkers)
	done, err := runUntilDone(ctx, co)
	if err != nil || !done {
		return err
	}
	slog.Info("training finished", "step", co.Step())
	if err := colorizeExample(ctx, st.EMA, cfg, dataDir, runDir); err != nil {
		return err
	}
	r.summary(cmd.ErrOrStderr(), co, "the same tinct coordinator start command with resume=true and a larger epochs=, and the workers' tinct worker join")
	return nil
}

func newWorkerCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "worker", Short: "Run a worker of a training cluster"}
	var (
		node       nodeFlags
		gpu        gpuFlags
		opt        worker.JoinOptions
		healthAddr string
		// coordinatorFile names the file tinct coordinator start
		// --address-file writes
		coordinatorFile string
	)
	join := &cobra.Command{
		Use:   "join --coordinator HOST:PORT",
		Short: "Join a coordinator and train until it stops",
		Long: `Connects to a coordinator (tinct coordinator start), authenticates with the
cluster secret, receives the configuration and the committed state, opens
the dataset the configuration names (the same path as on the coordinator: a
shared filesystem is assumed; an s3:// dataset is fetched into this worker's
output_dir/datasets/ instead), and computes, all-reduces with its ring
neighbours and applies every step it is given.

If the coordinator is not up yet, restarts, or drops this worker (a stall, a
failure detected by the gossip), the worker waits and joins again with a
fresh state, retrying with back-off for up to --wait. It exits 0 when the
coordinator says training finished (or on SIGINT/SIGTERM), and 1 when the
coordinator stopped on an error, excluded this worker, or stayed
unreachable for --wait. A refusal that another try cannot mend ends it at
once with exit status 3 (start it again only after fixing the cause): TLS
on one side only, a wrong cluster secret, a certificate of another CA, a
--name another live worker has, or a dataset or network other than the
run's — before it computes anything, the worker compares its training
set's content hash and its network with those the coordinator sends, and
the message names both sides.

The coordinator's address is --coordinator, else the one in the file
--coordinator-file names (written by tinct coordinator start --address-file;
waited for up to --wait), else, under Slurm, the job's first node
(SLURM_JOB_NODELIST) at port 7070. Under Slurm (SLURM_JOB_ID set) the
default --name is slurm-JOB.STEP-TASK (SLURM_JOB_ID, SLURM_STEP_ID,
SLURM_PROCID), unique among the job's steps (deploy/slurm/).

` + secretHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := workerDefaults(cmd.Context(), &opt, coordinatorFile, os.Getenv); err != nil {
				return err
			}
			g, err := gpu.open()
			if err != nil {
				return err
			}
			if g != nil {
				defer g.close()
				opt.Compute = g.backend
			}
			if opt.Secret, opt.Security, err = node.load(); err != nil {
				return err
			}
			opt.Open = func(ctx context.Context, cfg *config.Config) (dataset.Examples, error) {
				if err := useCompute(cmd, cfg); err != nil {
					return nil, err
				}
				dir, err := preparedData(ctx, cfg)
				if err != nil {
					return nil, err
				}
				return dataset.Open(dir, "train")
			}
			var joined atomic.Bool
			opt.OnJoined = joined.Store
			stopHealth, err := serveProbes(healthAddr, &joined, "not joined to a coordinator")
			if err != nil {
				return err
			}
			defer stopHealth()
			sctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err = worker.Join(sctx, opt)
			if err == nil {
				slog.Info("training finished; worker exits")
				return nil
			}
			if sctx.Err() != nil && cmd.Context().Err() == nil {
				slog.Info("worker interrupted")
				return nil
			}
			return err
		},
	}
	f := join.Flags()
	f.StringVar(&opt.Coordinator, "coordinator", "", "the coordinator's address, HOST:PORT (default: read from --coordinator-file; under Slurm, the job's first node at port 7070)")
	f.StringVar(&coordinatorFile, "coordinator-file", os.Getenv(coordinatorFileEnv), "read the coordinator's address from this file (tinct coordinator start --address-file writes it), waiting up to --wait for it (default $"+coordinatorFileEnv+")")
	f.StringVar(&opt.Name, "name", "", "this worker's name, unique in the cluster (default HOSTNAME-PID; under Slurm slurm-JOB.STEP-TASK)")
	gpu.register(join, "compute the steps")
	f.StringVar(&opt.RingListen, "ring-listen", "127.0.0.1:0", "address of this worker's all-reduce server (reachable by the other workers)")
	f.StringVar(&opt.GossipBind, "gossip", "127.0.0.1:0", "memberlist bind address host:port")
	f.StringVar(&opt.Advertise, "advertise", "", "host (name or IP) the other nodes reach this worker's ring and gossip at (default: the bind addresses' host, or this machine's address when they are 0.0.0.0)")
	f.StringVar(&healthAddr, "health", "", "serve /healthz and /readyz (ready: joined to a coordinator) on this address (default: none)")
	f.BoolVar(&opt.NoCompute, "no-compute", false, "benchmarks only (tinct bench cluster): skip every step's forward, backward and update; the ring still reduces the whole gradient")
	_ = f.MarkHidden("no-compute")
	node.add(f)
	f.DurationVar(&opt.Wait, "wait", 5*time.Minute, "how long to keep trying to reach the coordinator (before it is up, or after it was lost) before giving up")
	cmd.AddCommand(join)
	return cmd
}

// serveProbes serves /healthz and /readyz on addr ("" serves nothing);
// ready while ready holds, else not ready, saying why.
func serveProbes(addr string, ready *atomic.Bool, why string) (stop func(), err error) {
	return health.Serve(addr, func() error {
		if !ready.Load() {
			return errors.New(why)
		}
		return nil
	}, slog.Default())
}

// coordinatorFileEnv names the file through which a coordinator tells its
// workers where it listens: --address-file and --coordinator-file default
// to it.
const coordinatorFileEnv = "TINCT_COORDINATOR_FILE"

// slurmCoordinatorPort is the port a worker under Slurm assumes on the
// job's first node when it has no --coordinator and no address file.
const slurmCoordinatorPort = "7070"

// workerDefaults fills in what worker join's flags left open: the
// coordinator's address (--coordinator, else the address file, else under
// Slurm the job's first node) and the worker's name (under Slurm
// slurm-JOB.STEP-TASK, else HOSTNAME-PID). getenv is os.Getenv but in tests.
func workerDefaults(ctx context.Context, opt *worker.JoinOptions, coordinatorFile string, getenv func(string) string) error {
	if opt.Coordinator == "" && coordinatorFile != "" {
		addr, err := readAddressFile(ctx, coordinatorFile, opt.Wait)
		if err != nil {
			return err
		}
		opt.Coordinator = addr
	}
	if opt.Coordinator == "" {
		if first := slurmFirstNode(getenv("SLURM_JOB_NODELIST")); first != "" {
			opt.Coordinator = net.JoinHostPort(first, slurmCoordinatorPort)
		}
	}
	if opt.Coordinator == "" {
		return errors.New("--coordinator HOST:PORT is required (or --coordinator-file FILE)")
	}
	if opt.Name == "" {
		if job := getenv("SLURM_JOB_ID"); job != "" {
			step := getenv("SLURM_STEP_ID")
			if step == "" {
				step = getenv("SLURM_STEPID")
			}
			if step == "" {
				step = "batch"
			}
			task := getenv("SLURM_PROCID")
			if task == "" {
				task = "0"
			}
			opt.Name = fmt.Sprintf("slurm-%s.%s-%s", job, step, task)
		} else {
			host, _ := os.Hostname()
			opt.Name = fmt.Sprintf("%s-%d", host, os.Getpid())
		}
	}
	return nil
}

// slurmFirstNode is the first host of a Slurm node list ("gpu[03-04,07],cpu1"
// → "gpu03"); "" for an empty list.
func slurmFirstNode(list string) string {
	list = strings.TrimSpace(list)
	end := len(list)
	if i := strings.IndexAny(list, ",["); i >= 0 {
		end = i
	}
	first := list[:end]
	if end < len(list) && list[end] == '[' {
		r := list[end+1:]
		if j := strings.IndexAny(r, ",-]"); j >= 0 {
			first += r[:j]
		}
	}
	return first
}

// writeAddressFile writes addr and a newline to file, atomically (a reader
// never sees half of it).
func writeAddressFile(file, addr string) error {
	if err := atomicfile.Write(file, []byte(addr+"\n"), ".tinct-address-"); err != nil {
		return fmt.Errorf("--address-file: %w", err)
	}
	return nil
}

// readAddressFile reads a coordinator's address from file, waiting up to
// wait for the file to appear (the coordinator may start after its workers).
func readAddressFile(ctx context.Context, file string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	logged := false
	for {
		b, err := os.ReadFile(file)
		if err == nil {
			if addr := strings.TrimSpace(string(b)); addr != "" {
				return addr, nil
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("--coordinator-file: %w", err)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("--coordinator-file %s: no address within %v (--wait)", file, wait)
		}
		if !logged {
			slog.Info("waiting for the coordinator's address file", "file", file, "up_to", wait)
			logged = true
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
