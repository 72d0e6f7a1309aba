package serve

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tinct/tinct/checkpoint"
	"github.com/tinct/tinct/colorize"
	"github.com/tinct/tinct/model"
	"github.com/tinct/tinct/nn"
	"github.com/tinct/tinct/trainstate"
)

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
	fallback *trainstate.Network        // Options.Fallback
	clip     bool                       // Options.Clip
	device   func() (nn.Compute, error) // Options.Compute

	mu       sync.Mutex
	nets     *list.List                          // of *trainstate.Network, most recently used first
	damaged  map[string]*damagedError            // checkpoints found damaged, by name
	pipes    *list.List                          // of *cachedPipeline, most recently used first
	onDevice map[*trainstate.Network]*model.UNet // a model's network on the accelerator
}

type cachedPipeline struct {
	m       *trainstate.Network
	samples int
	p       *colorize.Pipeline
}

func newModels(store checkpoint.Store, warn func(error)) *models {
	return &models{store: store, name: storeName(store), warn: warn, nets: list.New(), pipes: list.New()}
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

// damagedError reports a checkpoint whose network cannot be loaded: its
// parts do not match its manifest (checkpoint.ErrCorrupt), or they match
// but hold no network the config describes. It is remembered per
// checkpoint (name and time), so that the damage is found once.
type damagedError struct {
	name   string
	time   time.Time
	reason string // for people: which part and what is wrong, no paths
	err    error  // the cause, for the log
}

func (e *damagedError) Error() string {
	return fmt.Sprintf("checkpoint %s is damaged: %v", e.name, e.err)
}

func (e *damagedError) Unwrap() error { return e.err }

// damageOf describes err, a failed load of checkpoint in, as a
// *damagedError (verified: its parts matched their manifest, and it is
// their network that did not load), or returns nil when err says nothing
// about the checkpoint itself (a store that did not answer, a request gone
// away).
func damageOf(in checkpoint.Info, err error, verified bool) *damagedError {
	var ce *checkpoint.CorruptError
	switch {
	case errors.As(err, &ce):
		what := "part " + ce.File
		if ce.File == "manifest.json" {
			what = ce.File
		}
		return &damagedError{name: in.Name, time: in.Time, reason: fmt.Sprintf("%s — %s (%s)", what, ce.Problem, ce.Reason), err: err}
	case verified:
		return &damagedError{name: in.Name, time: in.Time, reason: "its files are intact but hold no network this server can load (the server's log says why)", err: err}
	}
	return nil
}

// get returns the model of the named checkpoint, or of the newest usable
// one when name is empty, loading it unless it is cached. A cached model is
// reused only while the store still lists a checkpoint of that name taken
// at the same time (a save under the same name replaces it).
//
// A damaged checkpoint (damagedError) is skipped when name is empty: the
// newest valid one is used instead (of any run: serving is not resuming),
// or Options.Fallback when none is valid. A request that names it gets a
// 500 that names it and another to choose.
func (c *models) get(ctx context.Context, name string) (*trainstate.Network, error) {
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
	c.forgetGone(infos)
	if name == "" {
		return c.newest(ctx, infos)
	}
	i := slices.IndexFunc(infos, func(in checkpoint.Info) bool { return in.Name == name })
	if i < 0 {
		return nil, &apiError{status: 404, msg: fmt.Sprintf("checkpoint %q is not in %s; choose one from the list", name, c.name)}
	}
	m, err := c.load(ctx, infos[i])
	var d *damagedError
	switch {
	case errors.As(err, &d):
		msg := fmt.Sprintf("checkpoint %s is damaged and cannot be used: %s", d.name, d.reason)
		if other := c.suggest(infos, name); other != "" {
			msg += fmt.Sprintf("; choose another, e.g. %s", other)
		}
		return nil, &apiError{status: http.StatusInternalServerError, msg: msg}
	case errors.Is(err, checkpoint.ErrNotFound):
		return nil, &apiError{status: 404, msg: fmt.Sprintf("checkpoint %q is gone from %s; reload the page and choose another", name, c.name)}
	}
	return m, err
}

// newest returns the model of the newest checkpoint in infos that loads,
// skipping damaged ones (and ones deleted since the listing); the fallback
// model when none is left.
func (c *models) newest(ctx context.Context, infos []checkpoint.Info) (*trainstate.Network, error) {
	var damaged []string
	for _, in := range infos {
		m, err := c.load(ctx, in)
		if err == nil {
			return m, nil
		}
		var d *damagedError
		switch {
		case errors.As(err, &d):
			damaged = append(damaged, fmt.Sprintf("%s (%s)", d.name, d.reason))
		case errors.Is(err, checkpoint.ErrNotFound): // deleted since the listing
		default:
			return nil, err
		}
	}
	if c.fallback != nil {
		return c.fallback, nil // the store holds no (valid) checkpoint yet
	}
	if len(damaged) > 0 {
		return nil, &apiError{status: http.StatusInternalServerError, msg: fmt.Sprintf("no usable checkpoint in %s: %s is damaged; train again, or start tinct serve with another --store",
			c.name, strings.Join(damaged, ", "))}
	}
	return nil, &apiError{status: 404, msg: fmt.Sprintf("no checkpoint in %s yet: train a model first (tinct train), or start tinct serve with another --store", c.name)}
}

// load returns the model of the checkpoint in, from the cache or loaded
// from the store; a damaged checkpoint's *damagedError, remembered.
func (c *models) load(ctx context.Context, in checkpoint.Info) (*trainstate.Network, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.nets.Front(); e != nil; e = e.Next() {
		if m := e.Value.(*trainstate.Network); m.Name == in.Name && m.Time.Equal(in.Time) {
			c.nets.MoveToFront(e)
			return m, nil
		}
	}
	if d, ok := c.damaged[in.Name]; ok && d.time.Equal(in.Time) {
		return nil, d
	}
	// Loading holds the lock: concurrent requests for the same checkpoint
	// wait for one load rather than each doing it.
	ck, err := c.store.Load(ctx, in.Name)
	var m *trainstate.Network
	if err == nil {
		m, err = trainstate.DecodeNetwork(ck, trainstate.PartEMA)
	}
	if err != nil {
		if errors.Is(err, checkpoint.ErrNotFound) {
			c.warn(err)
			return nil, err
		}
		d := damageOf(in, err, ck != nil)
		if d == nil {
			return nil, err
		}
		c.warn(d)
		if c.damaged == nil {
			c.damaged = map[string]*damagedError{}
		}
		c.damaged[in.Name] = d
		return nil, d
	}
	for e := c.nets.Front(); e != nil; e = e.Next() {
		if old := e.Value.(*trainstate.Network); old.Name == m.Name {
			c.nets.Remove(e)
			c.dropPipelines(old)
			break
		}
	}
	c.nets.PushFront(m)
	for c.nets.Len() > maxCachedNets {
		old := c.nets.Remove(c.nets.Back()).(*trainstate.Network)
		c.dropPipelines(old)
	}
	return m, nil
}

// forgetGone forgets the damage of checkpoints no longer listed.
func (c *models) forgetGone(infos []checkpoint.Info) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.damaged {
		if !slices.ContainsFunc(infos, func(in checkpoint.Info) bool { return in.Name == name }) {
			delete(c.damaged, name)
		}
	}
}

// damage returns the damage found in checkpoint in, if any ("" when none
// is known).
func (c *models) damage(in checkpoint.Info) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.damaged[in.Name]; ok && d.time.Equal(in.Time) {
		return d.reason
	}
	return ""
}

// suggest names a checkpoint to choose instead of name: the newest listed
// one not known to be damaged, else the fallback model; "" if none.
func (c *models) suggest(infos []checkpoint.Info, name string) string {
	for _, in := range infos {
		if in.Name != name && c.damage(in) == "" {
			return in.Name
		}
	}
	if c.fallback != nil {
		return c.fallback.Name
	}
	return ""
}

// checkpoints describes the store's checkpoints for GET /api/checkpoints:
// what each is, with the damage found in it, and the default, the newest
// usable one (loaded here, so that a damaged newest checkpoint is found
// before the page offers it); "" when none is usable or the store did not
// answer.
func (c *models) checkpoints(ctx context.Context, infos []checkpoint.Info) (list []checkpointInfo, def string) {
	if len(infos) > 0 || c.fallback != nil {
		if m, err := c.newest(ctx, infos); err == nil {
			def = m.Name
		}
	}
	list = []checkpointInfo{}
	for _, in := range infos {
		list = append(list, checkpointInfo{Name: in.Name, Epoch: in.Epoch, Step: in.Step, Time: in.Time, Bytes: in.Size, Damaged: c.damage(in)})
	}
	if fb := c.fallback; fb != nil {
		list = append(list, checkpointInfo{Name: fb.Name, Epoch: fb.Epoch, Step: fb.Step, Time: fb.Time, Bundled: true})
	}
	return list, def
}

// dropPipelines forgets m's samplers and frees its network's copy on the
// accelerator.
func (c *models) dropPipelines(m *trainstate.Network) {
	for e := c.pipes.Front(); e != nil; {
		next := e.Next()
		if e.Value.(*cachedPipeline).m == m {
			c.pipes.Remove(e)
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
func (c *models) network(m *trainstate.Network) (*model.UNet, error) {
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
		c.onDevice = map[*trainstate.Network]*model.UNet{}
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
	c.pipes.Init()
}

// pipeline returns a colorize pipeline for one gray image × samples
// colourisations with m's network. Call it only while holding the run slot.
func (c *models) pipeline(m *trainstate.Network, samples int) (*colorize.Pipeline, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.pipes.Front(); e != nil; e = e.Next() {
		if cp := e.Value.(*cachedPipeline); cp.m == m && cp.samples == samples {
			c.pipes.MoveToFront(e)
			return cp.p, nil
		}
	}
	net, err := c.network(m)
	if err != nil {
		return nil, err
	}
	p, err := colorize.New(net, m.ImageSize, samples, c.clip)
	if err != nil {
		return nil, err
	}
	c.pipes.PushFront(&cachedPipeline{m: m, samples: samples, p: p})
	images := 0
	for e := c.pipes.Front(); e != nil; {
		next := e.Next()
		images += e.Value.(*cachedPipeline).samples
		if images > maxCachedSamplerImages && e != c.pipes.Front() {
			images -= e.Value.(*cachedPipeline).samples
			c.pipes.Remove(e)
			e.Value.(*cachedPipeline).p.Close() // its arena's memory (on a device, given back at once)
		}
		e = next
	}
	return p, nil
}
