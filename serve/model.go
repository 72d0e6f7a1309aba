package serve

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"sync"
	"time"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/trainstate"
)

// Model is a checkpoint's EMA network, ready for inference.
type Model struct {
	Name      string // the checkpoint's name
	Epoch     int
	Step      int64
	Time      time.Time // when the checkpoint was taken
	ImageSize int       // the training resolution: inputs are resized to ImageSize²
	Net       *model.UNet
}

// ModelFromCheckpoint builds the EMA network of a loaded checkpoint
// (trainstate.LoadInference: its config.yaml gives the shape and the
// training resolution).
func ModelFromCheckpoint(ck *checkpoint.Checkpoint) (*Model, error) {
	inf, err := trainstate.LoadInference(ck)
	if err != nil {
		return nil, err
	}
	return modelOf(inf), nil
}

func modelOf(inf *trainstate.Inference) *Model {
	return &Model{Name: inf.Name, Epoch: inf.Epoch, Step: inf.Step, Time: inf.Time, ImageSize: inf.Config.ImageSize, Net: inf.Net}
}

// LoadModel loads the named checkpoint from store, or the newest valid one
// when name is empty (see trainstate.Load).
func LoadModel(ctx context.Context, store checkpoint.Store, name string) (*Model, []error, error) {
	inf, warns, err := trainstate.Load(ctx, store, name)
	if err != nil {
		return nil, warns, err
	}
	return modelOf(inf), warns, nil
}

// Cache sizes: networks are small (8 MB at the default widths), but a
// sampler holds a training-sized arena for its batch (91 MiB per image at
// 128²), so the cached samplers hold at most 8 images between them (the
// newest is always kept).
const (
	maxCachedNets          = 2
	maxCachedSamplerImages = 8
)

// models resolves checkpoint names to networks and keeps recently used
// networks and samplers. Samplers are used by one colorization at a time
// (the queue's run slot); the cache itself is safe for concurrent use.
type models struct {
	store    checkpoint.Store
	name     string // the store as the page shows it (storeName)
	warn     func(error)
	fallback *Model                     // Options.Fallback
	clip     bool                       // Options.Clip
	device   func() (nn.Compute, error) // Options.Compute

	mu       sync.Mutex
	nets     *list.List             // of *Model, most recently used first
	samplers *list.List             // of *cachedSampler, most recently used first
	onDevice map[*Model]*model.UNet // a model's network on the accelerator
}

type cachedSampler struct {
	m       *Model
	samples int
	s       *model.Sampler
}

func newModels(store checkpoint.Store, warn func(error)) *models {
	return &models{store: store, name: storeName(store), warn: warn, nets: list.New(), samplers: list.New()}
}

// storeName is how answers name a store: a directory by its last element
// (no absolute path of the server's), other stores (s3://bucket/prefix) by
// their URL.
func storeName(store checkpoint.Store) string {
	if store == nil {
		return ""
	}
	s := store.String()
	if u, err := url.Parse(s); err == nil && u.Scheme == "file" {
		return path.Base(u.Path)
	}
	return s
}

// errNoStore is returned when the server has no checkpoint store.
var errNoStore = errors.New("no checkpoint store configured (start tinct serve with --store DIR)")

// get returns the model of the named checkpoint, or of the newest one when
// name is empty, loading it unless it is cached. A cached model is reused
// only while the store still lists a checkpoint of that name taken at the
// same time (a save under the same name replaces it).
func (c *models) get(ctx context.Context, name string) (*Model, error) {
	if fb := c.fallback; fb != nil && (name == fb.Name || name == "" && c.store == nil) {
		return fb, nil
	}
	if c.store == nil {
		return nil, errNoStore
	}
	if name != "" {
		if err := checkpoint.ValidateName(name); err != nil {
			return nil, &apiError{status: 400, msg: err.Error()}
		}
	}
	infos, err := c.store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list checkpoints in %s: %w", c.store, err) // logged, not shown
	}
	var want *checkpoint.Info
	for i := range infos {
		if infos[i].Name == name || name == "" {
			want = &infos[i]
			break
		}
	}
	if want == nil && name == "" && c.fallback != nil {
		return c.fallback, nil // the store holds no checkpoint yet
	}
	if want == nil {
		if name == "" {
			return nil, &apiError{status: 404, msg: fmt.Sprintf("no checkpoint in %s yet: train a model first (tinct train), or start tinct serve with another --store", c.name)}
		}
		return nil, &apiError{status: 404, msg: fmt.Sprintf("checkpoint %q is not in %s; choose one from the list", name, c.name)}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.nets.Front(); e != nil; e = e.Next() {
		if m := e.Value.(*Model); m.Name == want.Name && m.Time.Equal(want.Time) {
			c.nets.MoveToFront(e)
			return m, nil
		}
	}
	// Loading holds the lock: concurrent requests for the same checkpoint
	// wait for one load rather than each doing it.
	m, warns, err := LoadModel(ctx, c.store, want.Name)
	if err != nil && name == "" && errors.Is(err, checkpoint.ErrCorrupt) {
		// The newest is damaged: fall back to the newest valid one, as
		// resuming would.
		c.warn(err)
		m, warns, err = LoadModel(ctx, c.store, "")
	}
	for _, w := range warns {
		c.warn(w)
	}
	if errors.Is(err, checkpoint.ErrNotFound) {
		c.warn(err)
		return nil, &apiError{status: 404, msg: fmt.Sprintf("checkpoint %q is gone from %s; reload the page and choose another", want.Name, c.name)}
	}
	if err != nil {
		return nil, err
	}
	for e := c.nets.Front(); e != nil; e = e.Next() {
		if old := e.Value.(*Model); old.Name == m.Name {
			c.nets.Remove(e)
			c.dropSamplers(old)
			break
		}
	}
	c.nets.PushFront(m)
	for c.nets.Len() > maxCachedNets {
		old := c.nets.Remove(c.nets.Back()).(*Model)
		c.dropSamplers(old)
	}
	return m, nil
}

// dropSamplers forgets m's samplers and frees its network's copy on the
// accelerator.
func (c *models) dropSamplers(m *Model) {
	for e := c.samplers.Front(); e != nil; {
		next := e.Next()
		if e.Value.(*cachedSampler).m == m {
			c.samplers.Remove(e)
		}
		e = next
	}
	if d, ok := c.onDevice[m]; ok {
		d.Close()
		delete(c.onDevice, m)
	}
}

// network returns the network m's colorizations run on: m.Net, or its
// copy on the accelerator (Options.Compute), made at first use. Call it
// holding c.mu.
func (c *models) network(m *Model) (*model.UNet, error) {
	if c.device == nil {
		return m.Net, nil
	}
	if d, ok := c.onDevice[m]; ok {
		return d, nil
	}
	be, err := c.device()
	if err != nil {
		return nil, err
	}
	d, err := m.Net.To(be)
	if err != nil {
		be.Close()
		return nil, err
	}
	if c.onDevice == nil {
		c.onDevice = map[*Model]*model.UNet{}
	}
	c.onDevice[m] = d
	return d, nil
}

// close frees every network on the accelerator.
func (c *models) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for m, d := range c.onDevice {
		d.Close()
		delete(c.onDevice, m)
	}
	c.samplers.Init()
}

// sampler returns a sampler for one gray image × samples colourisations with
// m's network. Call it only while holding the run slot.
func (c *models) sampler(m *Model, samples int) (*model.Sampler, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.samplers.Front(); e != nil; e = e.Next() {
		if cs := e.Value.(*cachedSampler); cs.m == m && cs.samples == samples {
			c.samplers.MoveToFront(e)
			return cs.s, nil
		}
	}
	net, err := c.network(m)
	if err != nil {
		return nil, err
	}
	s, err := model.NewSampler(net, samples, m.ImageSize, m.ImageSize)
	if err != nil {
		return nil, err
	}
	s.Clip = c.clip
	c.samplers.PushFront(&cachedSampler{m: m, samples: samples, s: s})
	images := 0
	for e := c.samplers.Front(); e != nil; {
		next := e.Next()
		images += e.Value.(*cachedSampler).samples
		if images > maxCachedSamplerImages && e != c.samplers.Front() {
			images -= e.Value.(*cachedSampler).samples
			c.samplers.Remove(e)
			e.Value.(*cachedSampler).s.Close() // its arena's memory (on a device, given back at once)
		}
		e = next
	}
	return s, nil
}
