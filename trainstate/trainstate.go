// Package trainstate is what a checkpoint holds — the weights, their EMA,
// the BatchNorm buffers, Adam's moments, the loop position and the resolved
// configuration — and its one encoder and decoder, used by the coordinator
// (save, resume), the web app and the CLI (inference).
package trainstate

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/cluster"
	"github.com/tinct/tinct/config"
	"github.com/tinct/tinct/internal/rngs"
	"github.com/tinct/tinct/internal/trainpos"
	"github.com/tinct/tinct/model"
)

// Part names inside a checkpoint.
const (
	PartWeights   = "weights.safetensors"   // the live network (PyTorch names and layouts)
	PartEMA       = "ema.safetensors"       // the EMA network, used for inference
	PartOptimizer = "optimizer.safetensors" // adam.m, adam.v, adam.step
	PartPosition  = "state.json"            // the loop position and seed
	PartConfig    = "config.yaml"           // the resolved configuration
)

// State is the committed training state.
type State struct {
	Config *config.Config
	Net    *model.UNet // the live network: weights and BatchNorm buffers
	EMA    *model.UNet
	Adam   *model.Adam
	Rule   model.EMA
	Pos    trainpos.Position
	// Run identifies the training run: made afresh by New, restored by
	// Restore. Every checkpoint carries it (checkpoint.Checkpoint.Run), so
	// that one run never resumes, or writes over, another's. It is not
	// part of the training state proper: Checksum and the replicas' state
	// hashes leave it out, and two runs of one seed compute the same.
	Run string
}

// NewRunID returns a fresh run id: 16 hex digits from crypto/rand.
func NewRunID() string {
	var b [8]byte
	crand.Read(b[:]) // never fails (crypto/rand panics rather)
	return hex.EncodeToString(b[:])
}

// New initialises a state from the configuration's seed, as a new run
// (with a fresh Run id).
func New(cfg *config.Config) (*State, error) {
	mc := cfg.ModelConfig()
	net, err := model.New(mc)
	if err != nil {
		return nil, err
	}
	net.Init(rngs.Init(cfg.Seed))
	ema, err := model.New(mc)
	if err != nil {
		return nil, err
	}
	ema.CopyFrom(net)
	return &State{Config: cfg, Net: net, EMA: ema, Adam: model.NewAdam(net.NumParams(), cfg.LR),
		Rule: model.EMA{Decay: cfg.EMA.Decay, CopyBuffers: cfg.EMA.Buffers == "copy"}, Run: NewRunID()}, nil
}

// position is state.json.
type position struct {
	trainpos.Position
	Seed uint64 `json:"seed"`
}

// Checkpoint encodes the state as a checkpoint named after its step,
// carrying the state's run id.
func (s *State) Checkpoint() (*checkpoint.Checkpoint, error) {
	parts := map[string][]byte{}
	for _, p := range []struct {
		name string
		ts   map[string]model.StoredTensor
	}{
		{PartWeights, s.Net.StateDict()},
		{PartEMA, s.EMA.StateDict()},
		{PartOptimizer, map[string]model.StoredTensor{"adam.m": model.F32(s.Adam.M, len(s.Adam.M)), "adam.v": model.F32(s.Adam.V, len(s.Adam.V)), "adam.step": model.I64(s.Adam.Step)}},
	} {
		var b bytes.Buffer
		if err := model.WriteSafetensors(&b, p.ts, map[string]string{"format": "pt"}); err != nil {
			return nil, fmt.Errorf("encode %s: %w", p.name, err)
		}
		parts[p.name] = b.Bytes()
	}
	pos, err := json.MarshalIndent(position{Position: s.Pos, Seed: s.Config.Seed}, "", "  ")
	if err != nil {
		return nil, err
	}
	parts[PartPosition] = pos
	parts[PartConfig] = s.Config.YAML()
	return &checkpoint.Checkpoint{Name: fmt.Sprintf("step-%09d", s.Pos.Step), Run: s.Run, Step: s.Pos.Step, Epoch: s.Pos.Epoch, Time: time.Now(), Parts: parts}, nil
}

// Restore replaces the state with a checkpoint's. The network shape must be
// the configuration's; a different seed is allowed (and logged), since the
// run's configuration is the one given now. The position in state.json must
// be one a run reaches (no negative counter, no more steps in the epoch than
// in all) and agree with the checkpoint's step and epoch. The run id is the
// checkpoint's: the resumed run is the same run. A checkpoint without one
// (saved by an older tinct) continues under the state's fresh id (New's),
// which is logged. A checkpoint that fails changes nothing.
func (s *State) Restore(ck *checkpoint.Checkpoint, log *slog.Logger) error {
	var pos position
	if err := json.Unmarshal(ck.Parts[PartPosition], &pos); err != nil {
		return fmt.Errorf("checkpoint %s: %s: %w", ck.Name, PartPosition, err)
	}
	if p := pos.Position; p.Step < 0 || p.Epoch < 0 || p.StepInEpoch < 0 || p.EpochCount < 0 || p.EpochLossSum < 0 ||
		int64(p.StepInEpoch) > p.Step || p.Step != ck.Step || p.Epoch != ck.Epoch {
		return fmt.Errorf("checkpoint %s: %s: position %+v is not one a run reaches, or not the checkpoint's (step %d, epoch %d)",
			ck.Name, PartPosition, p, ck.Step, ck.Epoch)
	}
	if pos.Seed != s.Config.Seed && log != nil {
		log.Warn("resuming with another seed than the checkpoint's: the run will not repeat the original", "checkpoint_seed", pos.Seed, "seed", s.Config.Seed)
	}
	w, err := tensors(ck, PartWeights)
	if err != nil {
		return err
	}
	e, err := tensors(ck, PartEMA)
	if err != nil {
		return err
	}
	o, err := tensors(ck, PartOptimizer)
	if err != nil {
		return err
	}
	// Everything is decoded and checked before anything is changed: a
	// checkpoint that fails leaves the state as it was.
	mc := s.Config.ModelConfig()
	net, err := model.New(mc)
	if err != nil {
		return err
	}
	ema, err := model.New(mc)
	if err != nil {
		return err
	}
	if err := net.LoadStateDict(w); err != nil {
		return fmt.Errorf("checkpoint %s: %s: %w", ck.Name, PartWeights, err)
	}
	if err := ema.LoadStateDict(e); err != nil {
		return fmt.Errorf("checkpoint %s: %s: %w", ck.Name, PartEMA, err)
	}
	m, err1 := o["adam.m"].Float32s()
	v, err2 := o["adam.v"].Float32s()
	st, err3 := o["adam.step"].Int64()
	if err := errors.Join(err1, err2, err3); err != nil || len(m) != len(s.Adam.M) || len(v) != len(s.Adam.V) {
		return fmt.Errorf("checkpoint %s: optimizer state does not fit the network: %v", ck.Name, err)
	}
	s.Net.CopyFrom(net)
	s.EMA.CopyFrom(ema)
	copy(s.Adam.M, m)
	copy(s.Adam.V, v)
	s.Adam.Step = st
	s.Pos = pos.Position
	switch {
	case ck.Run != "":
		s.Run = ck.Run
	default:
		if s.Run == "" {
			s.Run = NewRunID()
		}
		if log != nil {
			log.Info("the checkpoint has no run id (saved by an older tinct): the run continues under a new one", "checkpoint", ck.Name, "run", s.Run)
		}
	}
	return nil
}

func tensors(ck *checkpoint.Checkpoint, part string) (map[string]model.StoredTensor, error) {
	b, ok := ck.Parts[part]
	if !ok {
		return nil, fmt.Errorf("checkpoint %s has no %s", ck.Name, part)
	}
	ts, _, err := model.ReadSafetensors(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %s: %w", ck.Name, part, err)
	}
	return ts, nil
}

// Network is a network ready for inference — a checkpoint's EMA (or live)
// network, an exported weights file's, or the bundled demo model — and
// what identifies it. It is the one type the CLI, the web app and eval
// colorize with.
type Network struct {
	Net       *model.UNet
	ImageSize int    // the training resolution: inputs are resized to ImageSize²
	Name      string // the checkpoint's name (a weights file: the checkpoint it was exported from)
	Epoch     int
	Step      int64
	Time      time.Time // when the checkpoint was taken (zero when unknown)
}

// DecodeNetwork decodes one of a checkpoint's networks for inference: the
// EMA (PartEMA) or the live weights (PartWeights), with their BatchNorm
// buffers. Its config.yaml is parsed like any configuration file
// (defaults, validation), so a checkpoint from a run with an incomplete
// file still loads.
func DecodeNetwork(ck *checkpoint.Checkpoint, part string) (*Network, error) {
	raw, ok := ck.Parts[PartConfig]
	if !ok {
		return nil, fmt.Errorf("checkpoint %s has no %s", ck.Name, PartConfig)
	}
	cfg, err := config.Parse(raw, nil)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %s: %w", ck.Name, PartConfig, err)
	}
	sd, err := tensors(ck, part)
	if err != nil {
		return nil, err
	}
	if err := fitsTensors(cfg.ModelConfig(), sd); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %s: %w", ck.Name, PartConfig, err)
	}
	net, err := model.New(cfg.ModelConfig())
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %s: %w", ck.Name, PartConfig, err)
	}
	if err := net.LoadStateDict(sd); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %s: %w", ck.Name, part, err)
	}
	return &Network{Net: net, ImageSize: cfg.ImageSize, Name: ck.Name, Epoch: ck.Epoch, Step: ck.Step, Time: ck.Time}, nil
}

// Replica is a replica's whole state: what a worker needs to take part in
// training (the committed state it loads) and what rank 0 sends at a
// snapshot step (the state the coordinator loads): the weights, BatchNorm
// buffers and batch count, the EMA's weights and buffers (its batch count
// is Tracked too), Adam's state, and the EMA rule the replica applies
// after each step. State.Replica's slices and Adam are the state's own:
// copy them before the state changes.
type Replica struct {
	Params     []float32
	Buffers    []float32
	Tracked    int64
	Adam       *model.Adam
	EMAParams  []float32
	EMABuffers []float32
	Rule       model.EMA
}

// Replica is the committed state as a worker loads it.
func (s *State) Replica() Replica {
	return Replica{Params: s.Net.Params, Buffers: s.Net.Buffers(nil), Tracked: s.Net.BatchesTracked(), Adam: s.Adam,
		EMAParams: s.EMA.Params, EMABuffers: s.EMA.Buffers(nil), Rule: s.Rule}
}

// LoadReplica replaces the committed state with a copy of r (a snapshot of rank
// 0's replica): the network's weights, buffers and batch count, the EMA's
// weights and buffers (with r.Tracked as its batch count, as the EMA
// update leaves it), and Adam's moments and step. Adam's learning rate,
// betas and epsilon and the EMA rule stay the state's (the
// configuration's). Every length is checked first, and a negative batch
// count or step refused: a replica that does not fit changes nothing.
func (s *State) LoadReplica(r Replica) error {
	np, nb := s.Net.NumParams(), s.Net.NumBuffers()
	switch {
	case r.Adam == nil:
		return errors.New("trainstate: replica without Adam's state")
	case len(r.Params) != np || len(r.Buffers) != nb:
		return fmt.Errorf("trainstate: replica of %d weights and %d buffers for a network of %d and %d", len(r.Params), len(r.Buffers), np, nb)
	case len(r.EMAParams) != s.EMA.NumParams() || len(r.EMABuffers) != s.EMA.NumBuffers():
		return fmt.Errorf("trainstate: replica's EMA of %d weights and %d buffers for a network of %d and %d", len(r.EMAParams), len(r.EMABuffers), s.EMA.NumParams(), s.EMA.NumBuffers())
	case len(r.Adam.M) != len(s.Adam.M) || len(r.Adam.V) != len(s.Adam.V):
		return fmt.Errorf("trainstate: replica's Adam moments of %d and %d values for %d weights", len(r.Adam.M), len(r.Adam.V), len(s.Adam.M))
	case r.Tracked < 0 || r.Adam.Step < 0:
		return fmt.Errorf("trainstate: replica with %d batches tracked at Adam step %d", r.Tracked, r.Adam.Step)
	}
	s.Net.LoadParams(r.Params)
	s.Net.SetBuffers(r.Buffers, r.Tracked)
	s.EMA.LoadParams(r.EMAParams)
	s.EMA.SetBuffers(r.EMABuffers, r.Tracked)
	copy(s.Adam.M, r.Adam.M)
	copy(s.Adam.V, r.Adam.V)
	s.Adam.Step = r.Adam.Step
	return nil
}

// Checksum is cluster.StateChecksum of the committed state: what every
// replica reports at a snapshot step when it agrees with this state.
func (s *State) Checksum() []byte { return cluster.StateChecksum(s.Net, s.EMA, s.Adam) }

// LoadNetwork loads the named checkpoint from store, verifying its parts,
// and decodes one of its networks (PartEMA or PartWeights). An empty name
// loads the newest valid checkpoint (store.Latest); the warnings then say
// which damaged ones were skipped. A missing checkpoint, or none valid, is
// an error matching checkpoint.ErrNotFound.
func LoadNetwork(ctx context.Context, store checkpoint.Store, name, part string) (*Network, []error, error) {
	var ck *checkpoint.Checkpoint
	var warns []error
	var err error
	if name == "" {
		ck, warns, err = store.Latest(ctx)
		if errors.Is(err, checkpoint.ErrEmpty) {
			return nil, warns, fmt.Errorf("no valid checkpoint in %s (train first with tinct train, or choose another --store): %w", store, checkpoint.ErrEmpty)
		}
		// otherwise a *checkpoint.NoValidError names the store and each problem
	} else {
		ck, err = store.Load(ctx, name)
	}
	if err != nil {
		return nil, warns, err
	}
	n, err := DecodeNetwork(ck, part)
	return n, warns, err
}
