package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
)

// This file holds the behaviour every store shares: which checkpoint Latest
// resumes from and what it warns about, the List order, and which
// checkpoints Prune removes. A store supplies the storage primitives.

// backend is what the shared logic needs from a store.
type backend interface {
	String() string
	Load(ctx context.Context, name string) (*Checkpoint, error)
	// scan reads every manifest: the checkpoints, newest first, and an
	// error for each checkpoint whose manifest exists but cannot be used.
	// Entries without a manifest are not checkpoints and are left out.
	scan(ctx context.Context) ([]Info, []badCheckpoint, error)
	// readLatest returns the name the latest pointer holds, trimmed; an
	// error wrapping fs.ErrNotExist if there is no pointer.
	readLatest(ctx context.Context) (string, error)
}

// badCheckpoint is a checkpoint with a manifest that cannot be used.
type badCheckpoint struct {
	name string
	err  error
}

// sortNewestFirst orders infos by step, then time, then name, all descending.
func sortNewestFirst(infos []Info) {
	sort.Slice(infos, func(i, j int) bool {
		a, b := infos[i], infos[j]
		if a.Step != b.Step {
			return a.Step > b.Step
		}
		if !a.Time.Equal(b.Time) {
			return a.Time.After(b.Time)
		}
		return a.Name > b.Name
	})
}

// latest loads the checkpoint b's latest pointer names, falling back to the
// newest valid one; see Store.Latest.
func latest(ctx context.Context, b backend) (*Checkpoint, []error, error) {
	var warnings []error
	tried := ""
	name, perr := b.readLatest(ctx)
	missing := errors.Is(perr, fs.ErrNotExist)
	switch {
	case missing:
		// Reported below, if there is anything to fall back to.
	case perr != nil:
		warnings = append(warnings, fmt.Errorf("latest pointer: %w; falling back to the newest valid checkpoint", perr))
	case ValidateName(name) != nil:
		warnings = append(warnings, fmt.Errorf("latest pointer in %s holds %q, which is not a checkpoint name; falling back to the newest valid checkpoint", b, name))
	default:
		c, err := b.Load(ctx, name)
		if err == nil {
			return c, nil, nil
		}
		if ctx.Err() != nil {
			return nil, warnings, err
		}
		if errors.Is(err, ErrNotFound) {
			err = fmt.Errorf("latest pointer names %s, which is gone from %s (%w); falling back to the newest valid checkpoint", name, b, ErrNotFound)
		} else {
			err = fmt.Errorf("latest pointer: %w", err)
		}
		warnings = append(warnings, err)
		tried = name
	}

	infos, bad, err := b.scan(ctx)
	if err != nil {
		return nil, warnings, err
	}
	if missing && len(infos)+len(bad) > 0 {
		warnings = append(warnings, fmt.Errorf("%s has no latest pointer; using the newest valid checkpoint", b))
	}
	for _, bc := range bad {
		if bc.name != tried { // else already reported
			warnings = append(warnings, bc.err)
		}
	}
	for _, in := range infos {
		if in.Name == tried {
			continue
		}
		c, err := b.Load(ctx, in.Name)
		if err == nil {
			return c, warnings, nil
		}
		if ctx.Err() != nil {
			return nil, warnings, err
		}
		warnings = append(warnings, err)
	}
	return nil, warnings, fmt.Errorf("%w: no valid checkpoint in %s", ErrNotFound, b)
}

// prune removes, with remove, all but the newest keep checkpoints of b
// (keep <= 0 keeps all), never the one the latest pointer names. It returns
// the names removed and what went wrong; it goes on past a failed removal.
func prune(ctx context.Context, b backend, keep int, remove func(name string) error) ([]string, []error) {
	if keep <= 0 {
		return nil, nil
	}
	infos, _, err := b.scan(ctx)
	if err != nil {
		return nil, []error{err}
	}
	latest, _ := b.readLatest(ctx)
	var removed []string
	var errs []error
	for i, in := range infos {
		if i < keep || in.Name == latest {
			continue
		}
		if err := ctx.Err(); err != nil {
			return removed, append(errs, err)
		}
		if err := remove(in.Name); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", in.Name, err))
			continue
		}
		removed = append(removed, in.Name)
	}
	return removed, errs
}

// newestOther returns the first checkpoint in infos (newest first) other
// than gone, or "" if there is none: where the latest pointer moves when
// gone is deleted.
func newestOther(infos []Info, gone string) string {
	for _, in := range infos {
		if in.Name != gone {
			return in.Name
		}
	}
	return ""
}
