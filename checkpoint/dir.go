package checkpoint

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tinct/tinct/internal/atomicfile"
)

const (
	tmpPrefix = ".tmp-" // a save or pointer update in progress
	oldPrefix = ".old-" // a checkpoint being replaced
	delPrefix = ".del-" // a checkpoint being deleted
)

// Dir is a Store in a local directory; see the package documentation for
// its layout and guarantees.
type Dir struct {
	path string     // absolute, cleaned
	mu   sync.Mutex // serialises Save, Delete and Prune
}

var _ Store = (*Dir)(nil)

// OpenDir opens the directory store at path, creating the directory if it is
// missing.
func OpenDir(path string) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint directory %s: %w", path, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("open checkpoint directory %s: %w (it must be a directory you can write; choose another path or fix its permissions)", abs, err)
	}
	return &Dir{path: abs}, nil
}

// Path returns the store's absolute directory.
func (d *Dir) Path() string { return d.path }

// String returns the store's URL, file:///abs/dir, which Open accepts.
func (d *Dir) String() string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(d.path)}).String()
}

// Save stores c as <dir>/<c.Name>/, replacing a checkpoint of that name, and
// points latest at it. It first cleans up what an earlier crash left behind.
func (d *Dir) Save(ctx context.Context, c *Checkpoint) (err error) {
	if err := validateCheckpoint(c); err != nil {
		return err
	}
	fail := func(what string, err error) error {
		return fmt.Errorf("save checkpoint %s to %s: %s: %w%s", c.Name, d, what, err, hint(err))
	}
	if err := ctx.Err(); err != nil {
		return fail("canceled", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.sweep(); err != nil {
		slog.Warn("checkpoint: could not clean up leftovers of an earlier save; they will be retried on the next save",
			"store", d.String(), "err", err)
	}

	tmp, err := os.MkdirTemp(d.path, tmpPrefix+c.Name+"-")
	if err != nil {
		return fail("create temporary directory", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fail("create temporary directory", err)
	}
	m := newManifest(c, time.Now())
	for _, p := range m.Parts {
		if err := ctx.Err(); err != nil {
			return fail("canceled", err)
		}
		if err := writeFileSync(filepath.Join(tmp, p.Name), c.Parts[p.Name]); err != nil {
			return fail("write part "+p.Name, err)
		}
	}
	js, err := m.encode()
	if err != nil {
		return fail("encode manifest", err)
	}
	if err := writeFileSync(filepath.Join(tmp, manifestFile), js); err != nil {
		return fail("write manifest", err)
	}
	if err := syncDir(tmp); err != nil {
		return fail("sync", err)
	}
	if err := ctx.Err(); err != nil {
		return fail("canceled", err)
	}

	final := filepath.Join(d.path, c.Name)
	aside, err := d.moveAside(c.Name)
	if err != nil {
		return fail("replace the existing checkpoint", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if aside != "" {
			if rerr := os.Rename(aside, final); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restore the previous %s (the next save will retry): %w", c.Name, rerr))
			}
		}
		return fail("move into place", err)
	}
	if err := syncDir(d.path); err != nil {
		return fail("sync", err)
	}
	if err := d.writeLatest(c.Name); err != nil {
		return fail("update the latest pointer", err)
	}
	if aside != "" {
		if err := os.RemoveAll(aside); err != nil {
			slog.Warn("checkpoint: could not remove the replaced checkpoint; the next save will retry",
				"store", d.String(), "path", aside, "err", err)
		}
	}
	return nil
}

// moveAside renames an existing checkpoint called name out of the way and
// returns its new path, or "" if there is none. The caller's fsync of the
// directory after moving the replacement in makes both renames durable; if
// only this one survives a crash, sweep renames it back.
func (d *Dir) moveAside(name string) (string, error) {
	final := filepath.Join(d.path, name)
	fi, err := os.Lstat(final)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s exists and is not a checkpoint directory; move it away or choose another name", final)
	}
	if _, err := os.Lstat(filepath.Join(final, manifestFile)); err != nil {
		return "", fmt.Errorf("%s exists but holds no readable %s, so this store did not write it; move it away or choose another name",
			final, manifestFile)
	}
	aside := filepath.Join(d.path, oldPrefix+name+"-"+randomSuffix())
	if err := os.Rename(final, aside); err != nil {
		return "", err
	}
	return aside, nil
}

// List describes the checkpoints in the directory, newest first. Entries
// without a readable manifest are skipped.
func (d *Dir) List(ctx context.Context) ([]Info, error) {
	infos, _, err := d.scan(ctx)
	return infos, err
}

// scan reads every manifest in the directory. It returns the checkpoints,
// newest first, and an error for each directory whose manifest.json exists
// but does not parse; directories without one are not checkpoints.
func (d *Dir) scan(ctx context.Context) (infos []Info, bad []badCheckpoint, err error) {
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return nil, nil, fmt.Errorf("list checkpoints in %s: %w", d, err)
	}
	for _, e := range entries {
		name := e.Name()
		if ValidateName(name) != nil {
			continue // hidden leftovers, the latest pointer, foreign files
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, fmt.Errorf("list checkpoints in %s: %w", d, err)
		}
		data, err := os.ReadFile(filepath.Join(d.path, name, manifestFile))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue
		}
		if err != nil {
			bad = append(bad, badCheckpoint{name, fmt.Errorf("checkpoint %s: read %s: %w", name, manifestFile, err)})
			continue
		}
		m, err := decodeManifest(name, data)
		if err != nil {
			bad = append(bad, badCheckpoint{name, err})
			continue
		}
		infos = append(infos, m.info(name))
	}
	sortNewestFirst(infos)
	return infos, bad, nil
}

// Load reads checkpoint name and verifies every part against its manifest.
func (d *Dir) Load(ctx context.Context, name string) (*Checkpoint, error) {
	return d.read(ctx, name, true)
}

// Verify checks checkpoint name like Load, streaming its parts instead of
// holding them in memory.
func (d *Dir) Verify(ctx context.Context, name string) error {
	_, err := d.read(ctx, name, false)
	return err
}

func (d *Dir) read(ctx context.Context, name string, keep bool) (*Checkpoint, error) {
	if err := ValidateName(name); err != nil {
		return nil, fmt.Errorf("load checkpoint from %s: %w", d, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load checkpoint %s from %s: %w", name, d, err)
	}
	// Reading through a Root keeps the manifest and the parts in one
	// directory even if a concurrent save renames it away.
	root, err := os.OpenRoot(filepath.Join(d.path, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s in %s", ErrNotFound, name, d)
	}
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s from %s: %w", name, d, err)
	}
	defer root.Close()
	m, err := readManifest(root, name)
	if err != nil {
		return nil, err
	}
	c := m.header(name)
	if keep {
		c.Parts = make(map[string][]byte, len(m.Parts))
	}
	for _, p := range m.Parts {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("load checkpoint %s from %s: %w", name, d, err)
		}
		data, err := readPart(root, name, p, keep)
		if err != nil {
			return nil, err
		}
		if keep {
			c.Parts[p.Name] = data
		}
	}
	return c, nil
}

// Latest loads the checkpoint latest names, falling back to the newest valid
// one; see Store.
func (d *Dir) Latest(ctx context.Context) (*Checkpoint, []error, error) {
	return latest(ctx, d)
}

// Delete removes checkpoint name. If latest names it, latest moves to the
// newest remaining checkpoint first (or is removed if none remains).
func (d *Dir) Delete(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("delete checkpoint from %s: %w", d, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete checkpoint %s from %s: %w", name, d, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	path := filepath.Join(d.path, name)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete checkpoint: %w: %s in %s", ErrNotFound, name, d)
	}
	if err != nil {
		return fmt.Errorf("delete checkpoint %s from %s: %w", name, d, err)
	}
	if _, merr := os.Lstat(filepath.Join(path, manifestFile)); !fi.IsDir() || merr != nil {
		return fmt.Errorf("delete checkpoint %s from %s: %s is not a checkpoint (no %s); remove it by hand if you mean to",
			name, d, path, manifestFile)
	}
	if latest, err := d.readLatest(ctx); err == nil && latest == name {
		infos, err := d.List(ctx)
		if err != nil {
			return fmt.Errorf("delete checkpoint %s: %w", name, err)
		}
		if err := d.repointLatest(infos, name); err != nil {
			return fmt.Errorf("delete checkpoint %s from %s: update the latest pointer: %w%s", name, d, err, hint(err))
		}
	}
	if err := d.remove(name); err != nil {
		return fmt.Errorf("delete checkpoint %s from %s: %w%s", name, d, err, hint(err))
	}
	return nil
}

// repointLatest points latest at the newest checkpoint in infos other than
// gone, or removes it if there is none.
func (d *Dir) repointLatest(infos []Info, gone string) error {
	if next := newestOther(infos, gone); next != "" {
		return d.writeLatest(next)
	}
	if err := os.Remove(filepath.Join(d.path, latestFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(d.path)
}

// Prune removes the checkpoints older than the newest keep valid ones,
// never the one latest names, after cleaning up what an earlier crash left
// behind; see Store.
func (d *Dir) Prune(ctx context.Context, keep int) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	if err := d.sweep(); err != nil {
		errs = append(errs, err)
	}
	removed, perrs := prune(ctx, d, keep, d.remove)
	if errs = append(errs, perrs...); len(errs) > 0 {
		err := errors.Join(errs...)
		return removed, fmt.Errorf("prune checkpoints in %s: %w%s", d, err, hint(err))
	}
	return removed, nil
}

// remove hides checkpoint name under a .del- name, so that it vanishes from
// view at once, and then deletes its files. A failure after the rename is
// logged and left to the next sweep.
func (d *Dir) remove(name string) error {
	trash := filepath.Join(d.path, delPrefix+name+"-"+randomSuffix())
	if err := os.Rename(filepath.Join(d.path, name), trash); err != nil {
		return err
	}
	if err := syncDir(d.path); err != nil {
		return err
	}
	if err := os.RemoveAll(trash); err != nil {
		slog.Warn("checkpoint: could not remove a deleted checkpoint's files; the next save or prune will retry",
			"store", d.String(), "path", trash, "err", err)
	}
	return nil
}

// sweep cleans up after interrupted operations: it removes .tmp- and .del-
// entries, and for each .old- directory either removes it (its replacement
// is in place) or renames it back (a crash came between the two renames of
// a replacing save). The caller holds d.mu.
func (d *Dir) sweep() error {
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		entry := e.Name()
		path := filepath.Join(d.path, entry)
		switch {
		case strings.HasPrefix(entry, tmpPrefix), strings.HasPrefix(entry, delPrefix):
			if err := os.RemoveAll(path); err != nil {
				errs = append(errs, err)
			}
		case strings.HasPrefix(entry, oldPrefix):
			name := strings.TrimPrefix(entry, oldPrefix)
			if i := strings.LastIndexByte(name, '-'); i >= 0 {
				name = name[:i]
			}
			final := filepath.Join(d.path, name)
			if _, err := os.Lstat(final); ValidateName(name) == nil && errors.Is(err, fs.ErrNotExist) {
				if err := os.Rename(path, final); err != nil {
					errs = append(errs, fmt.Errorf("restore %s: %w", name, err))
				} else if err := syncDir(d.path); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			if err := os.RemoveAll(path); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (d *Dir) readLatest(context.Context) (string, error) {
	data, err := os.ReadFile(filepath.Join(d.path, latestFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// writeLatest atomically replaces the latest pointer with name.
func (d *Dir) writeLatest(name string) error {
	return atomicfile.Write(filepath.Join(d.path, latestFile), []byte(name+"\n"), tmpPrefix+latestFile+"-")
}

// writeFileSync creates path (which must not exist), writes data and
// fsyncs it.
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir fsyncs a directory, making renames and creations in it durable.
func syncDir(path string) error { return atomicfile.SyncDir(path) }

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// hint suggests what to do about common file system errors.
func hint(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return " (disk full: free space, e.g. by pruning old checkpoints)"
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return " (check that the checkpoint directory is writable)"
	}
	return ""
}

// readManifest reads and checks the manifest of checkpoint name in root.
func readManifest(root *os.Root, name string) (*manifest, error) {
	data, err := root.ReadFile(manifestFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errManifestMissing(name)
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: read %s: %w", name, manifestFile, err)
	}
	return decodeManifest(name, data)
}

// readPart opens part p of checkpoint name in root and checks it against
// the manifest (see checkPart).
func readPart(root *os.Root, name string, p manifestPart, keep bool) ([]byte, error) {
	f, err := root.Open(p.Name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errPartMissing(name, p, "file")
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: part %s: %w", name, p.Name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: part %s: %w", name, p.Name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, &CorruptError{Name: name, File: p.Name, Problem: "not a regular file", Reason: "replaced by hand"}
	}
	return checkPart(name, p, fi.Size(), f, keep, "file")
}
