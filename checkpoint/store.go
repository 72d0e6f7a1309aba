package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// This file holds the behaviour every store shares: which checkpoint Latest
// resumes from and what it warns about, the List order, and which
// checkpoints Prune removes. A store supplies the storage primitives.

// backend is what the shared logic needs from a store.
type backend interface {
	String() string
	Load(ctx context.Context, name string) (*Checkpoint, error)
	// Verify checks a checkpoint as Load does, without keeping its parts.
	Verify(ctx context.Context, name string) error
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

// NoValidError reports a store that holds checkpoints, or traces of them
// (a manifest, a latest pointer), none of which is valid. It matches
// ErrNotFound, and ErrCorrupt when a checkpoint was found damaged.
type NoValidError struct {
	Store    string  // the store's URL
	Problems []error // what was wrong, one entry per candidate, newest first
	// Run is set when checkpoints of other runs were skipped (they are
	// among the Problems, as *OtherRunError): the run of the newest
	// checkpoint, the only one Latest resumes.
	Run string
	// Skipped counts the checkpoints of other runs among the Problems.
	Skipped int
}

func (e *NoValidError) Error() string {
	var b strings.Builder
	if e.Skipped > 0 {
		fmt.Fprintf(&b, "no valid checkpoint of run %s (the newest checkpoint's) in %s; %d checkpoint(s) of other runs skipped, since a resume never continues another run's checkpoint:",
			RunLabel(e.Run), e.Store, e.Skipped)
	} else {
		fmt.Fprintf(&b, "no valid checkpoint in %s:", e.Store)
	}
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Is reports whether target is ErrNotFound.
func (e *NoValidError) Is(target error) bool { return target == ErrNotFound }

// Unwrap returns the problems.
func (e *NoValidError) Unwrap() []error { return e.Problems }

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

// latest loads the newest valid checkpoint of b in List order; see
// Store.Latest. The latest pointer is only a hint: a save writes it last,
// so a crash between the checkpoint and the pointer leaves it naming the
// previous one, and the listing is what says which is newest. A pointer at
// a checkpoint that is not listed is reported.
func latest(ctx context.Context, b backend) (*Checkpoint, []error, error) {
	infos, bad, err := b.scan(ctx)
	if err != nil {
		return nil, nil, err
	}
	var skipped []error
	for _, bc := range bad {
		skipped = append(skipped, bc.err)
	}
	// The newest listed checkpoint decides the run; falling back past
	// damaged ones never leaves it.
	var found *Checkpoint
	var run, newest string
	others := 0
	for i, in := range infos {
		if i == 0 {
			run, newest = in.Run, in.Name
		}
		if in.Run != run {
			others++
			skipped = append(skipped, &OtherRunError{Name: in.Name, Run: in.Run, Newest: newest, NewestRun: run})
			continue
		}
		c, err := b.Load(ctx, in.Name)
		if err == nil && c.Run != run { // replaced since the listing
			others++
			skipped = append(skipped, &OtherRunError{Name: in.Name, Run: c.Run, Newest: newest, NewestRun: run})
			continue
		}
		if err == nil {
			found = c
			break
		}
		if ctx.Err() != nil {
			return nil, skipped, err
		}
		skipped = append(skipped, err)
	}
	pointer, perr := b.readLatest(ctx)
	warnings := append(pointerWarnings(ctx, b, pointer, perr, infos, bad), skipped...)
	switch {
	case found != nil:
		return found, warnings, nil
	case len(warnings) == 0 && errors.Is(perr, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("%w: %s holds no checkpoint", ErrEmpty, b)
	}
	nv := &NoValidError{Store: b.String(), Problems: warnings}
	if others > 0 {
		nv.Run, nv.Skipped = run, others
	}
	return nil, warnings, nv
}

// OtherRunError reports a checkpoint that Latest skipped because another
// run saved it than the newest listed checkpoint's: a resume continues
// the run of the newest checkpoint, and never falls back to another run's,
// even when every checkpoint of that run is damaged.
type OtherRunError struct {
	Name, Run         string // the checkpoint skipped and its run
	Newest, NewestRun string // the newest listed checkpoint and its run
}

func (e *OtherRunError) Error() string {
	return fmt.Sprintf("checkpoint %s: of run %s, not run %s of the newest checkpoint %s (skipped: a resume never continues another run's checkpoint)",
		e.Name, RunLabel(e.Run), RunLabel(e.NewestRun), e.Newest)
}

// RunLabel is how messages show a run id: the id, or for "" (a checkpoint
// saved by an older tinct) a note saying so.
func RunLabel(run string) string {
	if run == "" {
		return `"" (none: saved by an older tinct)`
	}
	return run
}

// pointerWarnings says what is wrong with the latest pointer (name, or the
// error perr reading it) given the checkpoints listed (infos, bad). A
// missing pointer, or one at any listed checkpoint, is fine: a save moves
// the pointer last, so it lags behind the listing while a save is under
// way and after a crash in that window. A pointer at something unlisted
// means a checkpoint was lost.
func pointerWarnings(ctx context.Context, b backend, name string, perr error, infos []Info, bad []badCheckpoint) []error {
	switch {
	case errors.Is(perr, fs.ErrNotExist):
		return nil
	case perr != nil:
		return []error{fmt.Errorf("latest pointer: %w", perr)}
	case ValidateName(name) != nil:
		return []error{fmt.Errorf("latest pointer in %s holds %q, which is not a checkpoint name", b, name)}
	}
	for _, in := range infos {
		if in.Name == name {
			return nil
		}
	}
	for _, bc := range bad {
		if bc.name == name {
			return nil // reported as damaged
		}
	}
	// Not listed: say why (gone, or without its manifest), unless a save
	// made it valid since the listing.
	switch err := b.Verify(ctx, name); {
	case err == nil:
		return nil
	case !errors.Is(err, ErrNotFound):
		return []error{fmt.Errorf("latest pointer: %w", err)}
	}
	return []error{fmt.Errorf("latest pointer names %s, which is gone from %s (%w)", name, b, ErrNotFound)}
}

// prune removes, with remove, every checkpoint of b older than the newest
// keep valid ones (keep <= 0 keeps all), never the one the latest pointer
// names. Only valid checkpoints count: each candidate for keeping is
// verified, and a damaged one is kept but not counted, so damaged
// checkpoints never push out the good ones, and the newest valid one is
// never removed. It returns the names removed and what went wrong,
// including the damaged checkpoints it kept (matching ErrCorrupt); it goes
// on past a failed removal.
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
	valid := 0
	for _, in := range infos {
		if err := ctx.Err(); err != nil {
			return removed, append(errs, err)
		}
		if valid < keep {
			if err := b.Verify(ctx, in.Name); err != nil {
				errs = append(errs, fmt.Errorf("kept but not counted toward keep_last: %w", err))
			} else {
				valid++
			}
			continue
		}
		if in.Name == latest {
			continue
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
