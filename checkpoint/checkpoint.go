package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Checkpoint is one saved training state: a header and the parts the trainer
// produced, keyed by file name (for example "weights.safetensors").
type Checkpoint struct {
	Name string // chosen by the caller, e.g. "step-000012345"; see ValidateName
	// Run identifies the training run that saved it (tinct's trainer: 16
	// hex digits made when a run starts afresh). Empty in checkpoints
	// saved by an older tinct. Latest never falls back from one run's
	// checkpoint to another's.
	Run   string
	Step  int64
	Epoch int
	Time  time.Time // when it was taken; Save records the current time if zero
	Parts map[string][]byte
}

// Info describes a stored checkpoint without loading its parts.
type Info struct {
	Name  string
	Run   string // the run that saved it; "" if saved by an older tinct
	Step  int64
	Epoch int
	Time  time.Time
	Size  int64 // total bytes of all parts
}

// Store is where checkpoints live: a local directory ([Dir]) or an S3
// bucket ([S3]).
type Store interface {
	// Save stores c, replacing a checkpoint of the same name, and points
	// the latest pointer at it.
	Save(ctx context.Context, c *Checkpoint) error
	// List describes the stored checkpoints, newest first (highest step,
	// then newest time). It does not verify their parts.
	List(ctx context.Context) ([]Info, error)
	// Load reads a checkpoint and verifies every part's size and SHA-256
	// against its manifest. A missing checkpoint is ErrNotFound; a damaged
	// one is ErrCorrupt (a *CorruptError).
	Load(ctx context.Context, name string) (*Checkpoint, error)
	// Latest loads the checkpoint to resume from: the newest valid one in
	// List order of the run of the newest listed checkpoint, whatever the
	// latest pointer says (a save moves it last, so after a crash it may
	// name the previous one). It never falls back to another run's
	// checkpoint: those are skipped, each with an *OtherRunError. The
	// warnings say what was skipped and why. With no valid checkpoint of
	// that run the error matches ErrNotFound: ErrEmpty if the store holds
	// nothing at all, else a *NoValidError listing what was wrong with
	// each candidate.
	Latest(ctx context.Context) (*Checkpoint, []error, error)
	// Delete removes a checkpoint. If it was the latest, the pointer moves
	// to the newest remaining checkpoint.
	Delete(ctx context.Context, name string) error
	// Prune removes the checkpoints older than the newest keep valid ones
	// (keep <= 0 keeps all), never the one the latest pointer names, and
	// returns the names removed. It verifies the checkpoints it keeps:
	// damaged ones are kept but do not count, so the newest valid
	// checkpoint is never removed; the error reports them (ErrCorrupt).
	Prune(ctx context.Context, keep int) ([]string, error)
	// String returns the store's URL, e.g. "file:///abs/dir" or
	// "s3://bucket/prefix", which Open accepts.
	String() string
}

// ErrNotFound reports that a checkpoint, or any valid checkpoint, is not in
// the store. Check for it with errors.Is.
var ErrNotFound = errors.New("checkpoint not found")

// ErrEmpty reports a store that holds no checkpoint at all: nothing with a
// manifest, damaged or not, and no latest pointer. It matches ErrNotFound
// too. Only an empty store lets resume=auto start afresh.
var ErrEmpty error = emptyError{}

type emptyError struct{}

func (emptyError) Error() string        { return "checkpoint store empty" }
func (emptyError) Is(target error) bool { return target == ErrNotFound }

// ErrCorrupt is matched by errors.Is for every *CorruptError.
var ErrCorrupt = errors.New("checkpoint corrupt")

// CorruptError reports a checkpoint whose manifest or parts do not check out.
type CorruptError struct {
	Name    string // checkpoint name
	File    string // the part's name, or "manifest.json"
	Problem string // what is wrong, e.g. "sha256 mismatch"
	Reason  string // the likely cause, e.g. "file corrupt"
	Err     error  // underlying error, if any
}

func (e *CorruptError) Error() string {
	where := "part " + e.File
	if e.File == manifestFile {
		where = e.File
	}
	msg := fmt.Sprintf("checkpoint %s: %s: %s", e.Name, where, e.Problem)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg + " (" + e.Reason + "; resume skips this checkpoint)"
}

// Unwrap returns the underlying error, if any.
func (e *CorruptError) Unwrap() error { return e.Err }

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

const acceptedForms = "a directory path (runs/checkpoints), file:///absolute/dir or s3://bucket/prefix"

// Open opens the store at rawURL with the S3 options from the environment:
// OpenWith(rawURL, EnvOptions()). See OpenWith for the accepted forms;
// EnvOptions reads TINCT_S3_ENDPOINT (the S3 server, host[:port]; empty:
// Amazon S3), TINCT_S3_INSECURE (1: plain HTTP; TLS otherwise) and
// TINCT_S3_REGION (empty: ask the server).
func Open(rawURL string) (Store, error) {
	return OpenWith(rawURL, EnvOptions())
}

// OpenWith opens the store at rawURL:
//
//   - a plain path, or file:///abs/dir (file://localhost/abs/dir): a
//     directory store ([Dir]), created if missing;
//   - s3://bucket or s3://bucket/prefix: an S3 store ([S3]) at
//     opt.S3Endpoint, with the credentials in AWS_ACCESS_KEY_ID and
//     AWS_SECRET_ACCESS_KEY (an error says to set them if they are not).
//     The bucket must exist: OpenWith checks it and never creates it.
//
// Anything else is an error listing the accepted forms.
func OpenWith(rawURL string, opt Options) (Store, error) {
	lower := strings.ToLower(rawURL)
	switch {
	case strings.TrimSpace(rawURL) == "":
		return nil, fmt.Errorf("open checkpoint store: empty location; give %s", acceptedForms)
	case strings.HasPrefix(lower, "s3://"):
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, fmt.Errorf("open checkpoint store %q: %w; give s3://bucket/prefix", rawURL, err)
		}
		switch {
		case u.User != nil || u.Port() != "":
			return nil, fmt.Errorf("open checkpoint store %q: an s3 URL names only a bucket and a prefix, as in s3://bucket/prefix; give the server in %s and the credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
				rawURL, EnvS3Endpoint)
		case u.Host == "":
			return nil, fmt.Errorf("open checkpoint store %q: no bucket; give s3://bucket/prefix", rawURL)
		case u.RawQuery != "" || u.Fragment != "":
			return nil, fmt.Errorf("open checkpoint store %q: an s3 URL takes no query or fragment; give s3://bucket/prefix", rawURL)
		}
		return OpenS3(u.Host, u.Path, opt)
	case strings.HasPrefix(lower, "file:"):
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, fmt.Errorf("open checkpoint store %q: %w; give %s", rawURL, err, acceptedForms)
		}
		if u.Opaque != "" || (u.Host != "" && u.Host != "localhost") || !strings.HasPrefix(u.Path, "/") {
			return nil, fmt.Errorf("open checkpoint store %q: a file URL needs an absolute path, as in file:///absolute/dir; for a relative directory give the plain path", rawURL)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("open checkpoint store %q: a file URL takes no query or fragment; give %s", rawURL, acceptedForms)
		}
		return OpenDir(u.Path)
	case strings.Contains(rawURL, "://"):
		scheme, _, _ := strings.Cut(rawURL, "://")
		return nil, fmt.Errorf("open checkpoint store %q: unknown scheme %q; give %s", rawURL, scheme, acceptedForms)
	default:
		return OpenDir(rawURL)
	}
}

// maxNameLen bounds checkpoint and part names so that the temporary names
// derived from them stay well within file system limits.
const maxNameLen = 128

// ValidateName reports whether name can name a checkpoint: 1 to 128 letters,
// digits, '.', '_' or '-', not starting with '.', and not "latest".
func ValidateName(name string) error {
	if err := validFileName(name); err != nil {
		return fmt.Errorf("invalid checkpoint name %q: %s (e.g. step-000012345)", name, err)
	}
	if name == latestFile {
		return fmt.Errorf("invalid checkpoint name %q: reserved for the latest pointer; choose another name (e.g. step-000012345)", name)
	}
	return nil
}

// validatePartName reports whether name can name a part: the same rules as
// ValidateName, and not "manifest.json".
func validatePartName(name string) error {
	if err := validFileName(name); err != nil {
		return fmt.Errorf("invalid part name %q: %s (e.g. weights.safetensors)", name, err)
	}
	if name == manifestFile {
		return fmt.Errorf("invalid part name %q: reserved for the checkpoint's manifest; choose another name", name)
	}
	return nil
}

func validFileName(name string) error {
	switch {
	case name == "":
		return errors.New("empty")
	case len(name) > maxNameLen:
		return fmt.Errorf("longer than %d bytes", maxNameLen)
	case name[0] == '.':
		return errors.New("must not start with '.'")
	}
	for _, r := range name {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%q is not allowed; use only letters, digits, '.', '_' and '-'", r)
		}
	}
	return nil
}

func validateCheckpoint(c *Checkpoint) error {
	if c == nil {
		return errors.New("save checkpoint: nil checkpoint")
	}
	if err := ValidateName(c.Name); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if c.Step < 0 || c.Epoch < 0 {
		return fmt.Errorf("save checkpoint %s: negative step (%d) or epoch (%d)", c.Name, c.Step, c.Epoch)
	}
	for name := range c.Parts {
		if err := validatePartName(name); err != nil {
			return fmt.Errorf("save checkpoint %s: %w", c.Name, err)
		}
	}
	return nil
}
