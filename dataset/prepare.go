package dataset

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tinct/tinct/internal/rngs"
)

// Skip reasons counted in Summary.Skipped.
const (
	SkipNotImage     = "not a JPEG/PNG file"
	SkipUnreadable   = "unreadable file"
	SkipUndecodable  = "undecodable"
	SkipTooSmall     = "too small (<32 px)"
	SkipTooLarge     = "too large (>134 megapixels)"
	SkipMissing      = "missing image bytes"
	SkipGrayMismatch = "gray and color sizes differ"
	SkipUnused       = "unused (validation rows beyond val+test)"
)

// PrepareOptions configures Prepare.
type PrepareOptions struct {
	Source    string // a folder of images, a .parquet file, or a folder of .parquet files
	Format    string // FormatAuto (also ""), FormatFolder, FormatCelebAHQ or FormatGray128
	Out       string // output folder, created if needed
	ImageSize int    // side of the square images written, e.g. 128
	Val, Test int    // sizes of the validation and test splits
	Seed      uint64 // seed of the split shuffle (shuffle rule only)
	// Progress, if not nil, is called from Prepare's goroutine after each
	// source item (image file or parquet row) is processed.
	Progress func(done, total int)
	// Workers is the number of decoding goroutines; 0 means GOMAXPROCS.
	Workers int
	// Crops is the number of square crops taken from each training image,
	// evenly spaced along its long side (augmentation for small sets of
	// wide photographs); 0 or 1 means the center square alone. Validation
	// and test images are always the center square, one per photo, and a
	// photo's crops never straddle splits.
	Crops int
}

// MaxCrops bounds PrepareOptions.Crops.
const MaxCrops = 16

// Summary reports what Prepare wrote.
type Summary struct {
	Source    string
	Format    string // the source format used (detected when auto)
	SplitRule string // SplitByFileName or SplitShuffle
	ImageSize int
	Out       string

	Train, Val, Test int
	Skipped          map[string]int // reason -> count
	Skips            []Skip         // every item skipped, in source order; also in SkippedFile
	Ignored          int            // files that are not inputs of the format (NOTICE.md beside photos)
	Notes            []string       // warnings worth showing the user
}

// Skip is a source item that Prepare skipped, and why.
type Skip struct {
	Path   string // the file; for a parquet row, "file row N" (N from 0)
	Reason string // one of the Skip… reasons
}

// HeldOutFile is the name, inside a prepared folder, of the list of the
// photos in the validation and test splits: one "split<TAB>path" line per
// record, in record order (for a parquet row, "file row N"). Their other
// crops, if any, are in no split.
const HeldOutFile = "held-out.txt"

// SkippedFile is the name, inside a prepared folder, of the list of skipped
// items: one "path<TAB>reason" line each, in source order.
const SkippedFile = "skipped.txt"

// Reasons counts the skipped items by reason, e.g. "2 too small (<32 px),
// 1 undecodable".
func (s Summary) Reasons() string {
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(s.Skipped)) {
		parts = append(parts, fmt.Sprintf("%d %s", s.Skipped[r], r))
	}
	return strings.Join(parts, ", ")
}

// Prepare reads the source, converts every usable image to a fixed-size
// color/gray record, splits the records into train, val and test, and
// writes shards and a manifest to opt.Out (see the package documentation
// for the format and the split rules). Bad inputs are skipped, counted and
// listed (Summary.Skips, and SkippedFile in opt.Out); files that are not
// inputs of the format, such as a NOTICE.md beside the photos, are
// ignored. The error cases are bad options, an unreadable or damaged
// source, no usable image, splits that leave no training image, and I/O
// errors on the output. A previous dataset in opt.Out is replaced only once the new
// shards are complete; cancelling ctx stops the work and leaves no
// partial files behind.
func Prepare(ctx context.Context, opt PrepareOptions) (Summary, error) {
	if err := opt.check(); err != nil {
		return Summary{}, err
	}
	src, err := listSource(opt)
	if err != nil {
		return Summary{}, err
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return Summary{}, fmt.Errorf("create output folder: %w", err)
	}
	if src.splitRule == SplitByFileName {
		var valRows int64
		for _, f := range src.files {
			if f.origin == originVal {
				valRows += f.rows
			}
		}
		if valRows < int64(opt.Val+opt.Test) {
			return Summary{}, fmt.Errorf("the validation files of %s hold %d rows, fewer than val+test = %d+%d; lower val and test (--val and --test, or val_images and test_images) to %d together", opt.Source, valRows, opt.Val, opt.Test, valRows)
		}
	}

	p := &preparer{
		opt:     opt,
		src:     src,
		skipped: map[string]int{},
		writers: map[string]*shardWriter{},
	}
	for _, split := range Splits {
		p.writers[split] = newShardWriter(opt.Out, split, opt.ImageSize)
	}
	defer p.abort()

	sum, err := p.run(ctx)
	if err != nil {
		return Summary{}, err
	}
	return sum, nil
}

// check validates the options.
func (opt *PrepareOptions) check() error {
	if opt.Source == "" {
		return errors.New("prepare: no source; pass a folder of images, a .parquet file or a folder of .parquet files")
	}
	if opt.Out == "" {
		return errors.New("prepare: no output folder; say where to write the dataset")
	}
	if opt.Format == "" {
		opt.Format = FormatAuto
	}
	switch opt.Format {
	case FormatAuto, FormatFolder, FormatCelebAHQ, FormatGray128:
	default:
		return fmt.Errorf("prepare: unknown format %q; use %s, %s, %s or %s", opt.Format, FormatAuto, FormatFolder, FormatCelebAHQ, FormatGray128)
	}
	if opt.ImageSize < 1 || opt.ImageSize > MaxImageSize {
		return fmt.Errorf("prepare: image size %d out of range; use 1..%d (128 for CelebA-HQ)", opt.ImageSize, MaxImageSize)
	}
	if opt.Val < 0 || opt.Test < 0 {
		return fmt.Errorf("prepare: val (%d) and test (%d) must not be negative", opt.Val, opt.Test)
	}
	if opt.Workers < 0 {
		return fmt.Errorf("prepare: workers (%d) must not be negative", opt.Workers)
	}
	if opt.Crops < 0 || opt.Crops > MaxCrops {
		return fmt.Errorf("prepare: crops %d out of range; use 1..%d", opt.Crops, MaxCrops)
	}
	return nil
}

// preparer holds the state of one Prepare run.
type preparer struct {
	opt     PrepareOptions
	src     *source
	skipped map[string]int
	skips   []Skip
	writers map[string]*shardWriter
	staging *os.File // shuffle rule: all usable records in source order
	staged  int
	names   []string // shuffle rule: the source item of each staged unit
	heldOut []Skip   // val and test records: Path the item, Reason the split
}

// job is one source item on its way through the decoders.
type job struct {
	seq    int
	origin origin
	name   string // the item, as a Skip names it
	path   string // folder source: the file to read
	color  []byte // parquet source: the encoded color image
	gray   []byte // gray128: the encoded gray image
	skip   string // set when the item is known bad before decoding
}

// result is a processed job: a record or a skip reason.
type result struct {
	seq    int
	origin origin
	name   string
	rec    []byte // a unit: the center record, then the training crops if any (unitRecords)
	skip   string
}

// unitRecords is the number of records process makes of one photo: the
// center square, then opt.Crops training crops when Crops > 1.
func (opt *PrepareOptions) unitRecords() int {
	if opt.Crops > 1 {
		return 1 + opt.Crops
	}
	return 1
}

// centerOf is a unit's record for validation and test: the center square.
func (p *preparer) centerOf(unit []byte) []byte {
	return unit[:recordBytes(p.opt.ImageSize)]
}

// writeTrain writes a unit's training records: the crops, or the center
// square when there are none.
func (p *preparer) writeTrain(unit []byte) error {
	rb := recordBytes(p.opt.ImageSize)
	if len(unit) > rb {
		unit = unit[rb:]
	}
	for off := 0; off < len(unit); off += rb {
		if err := p.writers[SplitTrain].write(unit[off : off+rb]); err != nil {
			return err
		}
	}
	return nil
}

func (p *preparer) run(ctx context.Context) (Summary, error) {
	opt, src := p.opt, p.src
	if src.splitRule == SplitShuffle {
		f, err := os.CreateTemp(opt.Out, ".staging-*.tmp")
		if err != nil {
			return Summary{}, fmt.Errorf("create staging file in %s: %w", opt.Out, err)
		}
		p.staging = f
	}

	workers := opt.Workers
	if workers == 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	done := 0
	var stagingW *bufio.Writer
	if p.staging != nil {
		stagingW = bufio.NewWriterSize(p.staging, 1<<20)
	}
	var valTaken, testTaken int
	consume := func(r result) error {
		done++
		if opt.Progress != nil {
			defer opt.Progress(done, src.total)
		}
		if r.skip != "" {
			p.skip(r.name, r.skip)
			return nil
		}
		if src.splitRule == SplitShuffle {
			if _, err := stagingW.Write(r.rec); err != nil {
				return fmt.Errorf("write staging file %s: %w (is the disk full?)", p.staging.Name(), err)
			}
			p.staged++
			p.names = append(p.names, r.name)
			return nil
		}
		switch {
		case r.origin == originTrain:
			return p.writeTrain(r.rec)
		case valTaken < opt.Val:
			valTaken++
			p.heldOut = append(p.heldOut, Skip{Path: r.name, Reason: SplitVal})
			return p.writers[SplitVal].write(p.centerOf(r.rec))
		case testTaken < opt.Test:
			testTaken++
			p.heldOut = append(p.heldOut, Skip{Path: r.name, Reason: SplitTest})
			return p.writers[SplitTest].write(p.centerOf(r.rec))
		default:
			p.skip(r.name, SkipUnused)
			return nil
		}
	}
	if err := runPipeline(ctx, workers, p.produce, p.process, consume); err != nil {
		return Summary{}, err
	}

	notes := append([]string{}, src.notes...)
	if src.splitRule == SplitShuffle {
		if err := stagingW.Flush(); err != nil {
			return Summary{}, fmt.Errorf("write staging file %s: %w (is the disk full?)", p.staging.Name(), err)
		}
		if err := p.distribute(); err != nil {
			return Summary{}, err
		}
	} else {
		if p.writers[SplitTrain].count == 0 {
			return Summary{}, fmt.Errorf("no usable image in the train files of %s (%s); check the source", opt.Source, skipText(p.skipped))
		}
		if valTaken < opt.Val || testTaken < opt.Test {
			notes = append(notes, fmt.Sprintf("the validation files had only %d usable images: val %d of %d, test %d of %d", valTaken+testTaken, valTaken, opt.Val, testTaken, opt.Test))
		}
	}

	m := &Manifest{
		Format:          FormatName,
		Version:         FormatVersion,
		ImageSize:       opt.ImageSize,
		RecordBytes:     recordBytes(opt.ImageSize),
		RecordsPerShard: recordsPerShard(opt.ImageSize),
		Layout:          recordLayout,
		Source:          absPath(opt.Source),
		SourceFormat:    src.format,
		SplitRule:       src.splitRule,
		Seed:            opt.Seed,
		Crops:           max(1, opt.Crops),
		Splits:          map[string]SplitInfo{},
		Skipped:         p.skipped,
		Notes:           notes,
	}
	for _, split := range Splits {
		info, err := p.writers[split].finish()
		if err != nil {
			return Summary{}, err
		}
		m.Splits[split] = info
	}
	if err := ctx.Err(); err != nil {
		return Summary{}, err
	}
	if err := p.commit(m); err != nil {
		return Summary{}, err
	}
	return Summary{
		Source:    opt.Source,
		Format:    src.format,
		SplitRule: src.splitRule,
		ImageSize: opt.ImageSize,
		Out:       opt.Out,
		Train:     m.Splits[SplitTrain].Count,
		Val:       m.Splits[SplitVal].Count,
		Test:      m.Splits[SplitTest].Count,
		Skipped:   p.skipped,
		Skips:     p.skips,
		Ignored:   src.ignored,
		Notes:     notes,
	}, nil
}

// skip counts item name as skipped for reason and lists it.
func (p *preparer) skip(name, reason string) {
	p.skipped[reason]++
	p.skips = append(p.skips, Skip{Path: name, Reason: reason})
}

// skipList is SkippedFile's content: one "path<TAB>reason" line per skip. A
// path holding a tab or a line break is quoted (Go syntax), so that every
// line still splits in two at its one tab.
func skipList(skips []Skip) []byte {
	var b bytes.Buffer
	for _, s := range skips {
		fmt.Fprintf(&b, "%s\t%s\n", quotePath(s.Path), s.Reason)
	}
	return b.Bytes()
}

// heldOutList is HeldOutFile's content: one "split<TAB>path" line per
// held-out record, paths quoted as in skipList.
func heldOutList(held []Skip) []byte {
	var b bytes.Buffer
	for _, h := range held {
		fmt.Fprintf(&b, "%s\t%s\n", h.Reason, quotePath(h.Path))
	}
	return b.Bytes()
}

// quotePath quotes (Go syntax) a path holding a tab or a line break.
func quotePath(path string) string {
	if strings.ContainsAny(path, "\t\n\r") {
		return strconv.Quote(path)
	}
	return path
}

// absPath returns path made absolute, or path itself if that fails.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// skipText lists skip counts for an error message.
func skipText(skipped map[string]int) string {
	if len(skipped) == 0 {
		return "nothing was skipped"
	}
	return "skipped: " + Summary{Skipped: skipped}.Reasons()
}

// produce emits the source's items in order.
func (p *preparer) produce(ctx context.Context, emit func(job) error) error {
	seq := 0
	if p.src.format == FormatFolder {
		for _, f := range p.src.files {
			if err := emit(job{seq: seq, origin: f.origin, name: f.path, path: f.path, skip: f.skip}); err != nil {
				return err
			}
			seq++
		}
		return nil
	}
	for _, f := range p.src.files {
		row := 0
		err := readParquetRows(ctx, f, p.src.format, func(color, gray []byte) error {
			j := job{seq: seq, origin: f.origin, name: fmt.Sprintf("%s row %d", f.path, row), color: color, gray: gray}
			if color == nil || (p.src.format == FormatGray128 && gray == nil) {
				j.skip = SkipMissing
			}
			seq++
			row++
			return emit(j)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// process turns one job into a record or a skip reason. It never panics:
// a decoder panic counts as undecodable.
func (p *preparer) process(j job) (r result) {
	r = result{seq: j.seq, origin: j.origin, name: j.name, skip: j.skip}
	if r.skip != "" {
		return r
	}
	defer func() {
		if e := recover(); e != nil {
			r.rec, r.skip = nil, SkipUndecodable
		}
	}()
	data := j.color
	if j.path != "" {
		b, err := os.ReadFile(j.path)
		if err != nil {
			r.skip = SkipUnreadable
			return r
		}
		data = b
	}
	img, skip := decodeInput(data)
	if skip != "" {
		r.skip = skip
		return r
	}
	var gimg image.Image
	if j.gray != nil {
		g, skip := decodeInput(j.gray)
		if skip != "" {
			r.skip = skip
			return r
		}
		if g.Bounds().Size() != img.Bounds().Size() {
			r.skip = SkipGrayMismatch
			return r
		}
		gimg = g
	}
	squares := []image.Rectangle{centerSquare(img.Bounds())}
	if p.opt.Crops > 1 {
		squares = append(squares, cropSquares(img.Bounds(), p.opt.Crops)...)
	}
	size := p.opt.ImageSize
	r.rec = make([]byte, 0, len(squares)*recordBytes(size))
	for _, sq := range squares {
		rgb := resizeRGBSquare(img, sq, size)
		var gray []uint8
		if gimg != nil {
			gsq := sq.Sub(img.Bounds().Min).Add(gimg.Bounds().Min)
			gray = resizeGraySquare(gimg, gsq, size)
		} else {
			gray = make([]uint8, size*size)
			for i := range gray {
				gray[i] = luma(rgb[3*i], rgb[3*i+1], rgb[3*i+2])
			}
		}
		r.rec = append(r.rec, makeRecord(rgb, gray, size)...)
	}
	return r
}

// decodeInput decodes one source image, returning a skip reason instead of
// an error.
func decodeInput(data []byte) (image.Image, string) {
	img, err := decodeBytes(data)
	switch {
	case errors.Is(err, errTooLarge):
		return nil, SkipTooLarge
	case err != nil:
		return nil, SkipUndecodable
	}
	if b := img.Bounds(); b.Dx() < MinImageSide || b.Dy() < MinImageSide {
		return nil, SkipTooSmall
	}
	return img, ""
}

// makeRecord lays out interleaved RGB and gray as a version-1 record: color
// planes (CHW), then gray.
func makeRecord(rgb, gray []uint8, size int) []byte {
	n := size * size
	rec := make([]byte, 4*n)
	for i := 0; i < n; i++ {
		rec[i] = rgb[3*i]
		rec[n+i] = rgb[3*i+1]
		rec[2*n+i] = rgb[3*i+2]
	}
	copy(rec[3*n:], gray)
	return rec
}

// distribute shuffles the staged records with the seed and writes them to
// the splits: the first Val to val, the next Test to test, the rest to train.
func (p *preparer) distribute() error {
	opt := p.opt
	n := p.staged
	if n == 0 {
		return fmt.Errorf("no usable image in %s (%s); it needs JPEG/PNG photographs of at least %d×%d pixels", opt.Source, skipText(p.skipped), MinImageSide, MinImageSide)
	}
	if opt.Val+opt.Test >= n {
		return &TooFewError{Source: opt.Source, Usable: n, Val: opt.Val, Test: opt.Test}
	}
	ub := recordBytes(opt.ImageSize) * opt.unitRecords()
	unit := make([]byte, ub)
	for pos, idx := range rngs.SplitPermutation(n, opt.Seed) {
		if _, err := p.staging.ReadAt(unit, int64(idx)*int64(ub)); err != nil {
			return fmt.Errorf("read staging file %s: %w", p.staging.Name(), err)
		}
		var err error
		switch {
		case pos < opt.Val:
			p.heldOut = append(p.heldOut, Skip{Path: p.names[idx], Reason: SplitVal})
			err = p.writers[SplitVal].write(p.centerOf(unit))
		case pos < opt.Val+opt.Test:
			p.heldOut = append(p.heldOut, Skip{Path: p.names[idx], Reason: SplitTest})
			err = p.writers[SplitTest].write(p.centerOf(unit))
		default:
			err = p.writeTrain(unit)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// commit installs the finished shards and then the manifest. The old
// manifest, if any, is removed first, so that at no moment a manifest
// describes shards it does not match; shard files of an older dataset that
// the new manifest does not list are removed afterwards.
func (p *preparer) commit(m *Manifest) error {
	out := p.opt.Out
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	data = append(data, '\n')
	manifest := filepath.Join(out, ManifestFile)
	if err := os.Remove(manifest); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replace old manifest %s: %w", manifest, err)
	}
	for _, split := range Splits {
		if err := p.writers[split].commit(); err != nil {
			return err
		}
	}
	// Written even when empty, so that no list of an earlier prepare stays.
	skipped := filepath.Join(out, SkippedFile)
	if err := writeFileAtomic(skipped, skipList(p.skips)); err != nil {
		return fmt.Errorf("write %s: %w", skipped, err)
	}
	held := filepath.Join(out, HeldOutFile)
	if err := writeFileAtomic(held, heldOutList(p.heldOut)); err != nil {
		return fmt.Errorf("write %s: %w", held, err)
	}
	if err := syncDir(out); err != nil {
		return fmt.Errorf("sync output folder %s: %w", out, err)
	}
	if err := writeFileAtomic(manifest, data); err != nil {
		return fmt.Errorf("write manifest %s: %w", manifest, err)
	}
	if err := syncDir(out); err != nil {
		return fmt.Errorf("sync output folder %s: %w", out, err)
	}
	keep := map[string]bool{}
	for _, sp := range m.Splits {
		for _, sh := range sp.Shards {
			keep[sh.File] = true
		}
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		return nil // the dataset is complete; stale shards are harmless
	}
	for _, e := range entries {
		if shardName.MatchString(e.Name()) && !keep[e.Name()] {
			os.Remove(filepath.Join(out, e.Name()))
		}
	}
	return nil
}

// abort removes temporary files left by a failed or finished run.
func (p *preparer) abort() {
	for _, w := range p.writers {
		w.abort()
	}
	if p.staging != nil {
		p.staging.Close()
		os.Remove(p.staging.Name())
		p.staging = nil
	}
}

// runPipeline runs produce in one goroutine and process in workers
// goroutines, and calls consume in the calling goroutine with the results
// in the order produce emitted them. At most a few jobs per worker are in
// flight at once. It returns the first error of consume, produce or ctx.
func runPipeline(ctx context.Context, workers int,
	produce func(context.Context, func(job) error) error,
	process func(job) result,
	consume func(result) error,
) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	window := make(chan struct{}, 4*workers) // tokens for jobs in flight
	jobs := make(chan job, workers)
	results := make(chan result, workers)

	var produceErr error
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		defer close(jobs)
		produceErr = produce(ctx, func(j job) error {
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			select {
			case jobs <- j:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()

	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				r := process(j)
				select {
				case results <- r:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		close(results)
	}()

	var consumeErr error
	pending := map[int]result{}
	next := 0
	for r := range results {
		if consumeErr != nil {
			continue // drain until the workers stop
		}
		pending[r.seq] = r
		for {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			<-window
			if err := consume(r); err != nil {
				consumeErr = err
				cancel()
				break
			}
		}
	}
	<-produced
	switch {
	case consumeErr != nil:
		return consumeErr
	case produceErr != nil:
		return produceErr
	}
	return ctx.Err()
}

// TooFewError: the validation and test splits would take every usable
// image.
type TooFewError struct {
	Source            string
	Usable, Val, Test int
}

func (e *TooFewError) Error() string {
	return fmt.Sprintf("%s has %d usable images, but val+test = %d+%d leave none for training; lower val and test", e.Source, e.Usable, e.Val, e.Test)
}
