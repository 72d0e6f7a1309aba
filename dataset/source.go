package dataset

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Source formats accepted by PrepareOptions.Format.
const (
	FormatAuto     = "auto"     // detect from the source
	FormatFolder   = "folder"   // a folder of JPEG/PNG files
	FormatCelebAHQ = "celebahq" // Hugging Face CelebA-HQ parquet: image {bytes, path}, label
	FormatGray128  = "gray128"  // derivative parquet: color, gray (PNG bytes), source_id
)

// Split rules recorded in Summary and Manifest.
const (
	// SplitByFileName: training images come from the source's "train"
	// files; validation and test from its "validation" files, in order.
	SplitByFileName = "by-file-name"
	// SplitShuffle: all usable images are shuffled with the seed; the
	// first Val go to validation, the next Test to test, the rest to train.
	SplitShuffle = "shuffle"
)

// origin is the source split a file belongs to, judged by its name.
type origin int

const (
	originOther origin = iota
	originTrain
	originVal
)

// originOf classifies a source file by its path relative to the source:
// names containing "train" hold training images, names containing
// "validation" or "val" validation images.
func originOf(rel string) origin {
	s := strings.ToLower(filepath.ToSlash(rel))
	switch {
	case strings.Contains(s, "train"):
		return originTrain
	case strings.Contains(s, "val"): // also matches "validation"
		return originVal
	}
	return originOther
}

// sourceFile is one image or parquet file of a source.
type sourceFile struct {
	path   string
	rel    string // path relative to the source, slash-separated
	origin origin
	rows   int64  // parquet files: number of rows
	skip   string // set for an image file known to be unusable (a format tinct does not read)
}

// source is a resolved, listed input.
type source struct {
	root      string
	format    string // FormatFolder, FormatCelebAHQ or FormatGray128
	files     []sourceFile
	total     int // items (images or parquet rows)
	ignored   int // files that are not inputs of the format: neither counted nor listed as skipped
	splitRule string
	notes     []string
}

// isImageName reports whether a file name has a JPEG or PNG extension.
func isImageName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jpg", ".jpeg", ".png":
		return true
	}
	return false
}

// isOtherImageName reports whether a file name has the extension of an
// image format tinct does not read. Such files are skipped and listed, as
// their owner may expect them used; other files (a NOTICE.md beside the
// photos) are simply not inputs.
func isOtherImageName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif", ".avif", ".jxl", ".jp2":
		return true
	}
	return false
}

func isParquetName(name string) bool { return strings.EqualFold(filepath.Ext(name), ".parquet") }

// listSource resolves opt.Source and opt.Format into a list of input files.
func listSource(opt PrepareOptions) (*source, error) {
	st, err := os.Stat(opt.Source)
	if err != nil {
		return nil, fmt.Errorf("read source: %w; pass a folder of JPEG/PNG images, a .parquet file or a folder of .parquet files", err)
	}
	src := &source{root: opt.Source}

	var images, otherImages, parquets []sourceFile
	if !st.IsDir() {
		if !isParquetName(opt.Source) {
			return nil, fmt.Errorf("source %s is a file but not a .parquet file; pass a folder of images, a .parquet file or a folder of .parquet files", opt.Source)
		}
		if opt.Format == FormatFolder {
			return nil, fmt.Errorf("source %s is a .parquet file, but format %q wants a folder of images; use format auto, %s or %s", opt.Source, FormatFolder, FormatCelebAHQ, FormatGray128)
		}
		base := filepath.Base(opt.Source)
		parquets = append(parquets, sourceFile{path: opt.Source, rel: base, origin: originOf(base)})
	} else {
		skipDir := ""
		if out, err := filepath.Abs(opt.Out); err == nil {
			skipDir = out
		}
		err := filepath.WalkDir(opt.Source, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return fmt.Errorf("list source %s: %w", opt.Source, err)
			}
			if d.IsDir() {
				if path != opt.Source && strings.HasPrefix(d.Name(), ".") {
					return fs.SkipDir // hidden folders (.git, .cache, …)
				}
				if abs, err := filepath.Abs(path); err == nil && abs == skipDir && path != opt.Source {
					return fs.SkipDir // our own output inside the source
				}
				return nil
			}
			if strings.HasPrefix(d.Name(), ".") {
				return nil // hidden files (.DS_Store, …)
			}
			rel, err := filepath.Rel(opt.Source, path)
			if err != nil {
				rel = path
			}
			rel = filepath.ToSlash(rel)
			f := sourceFile{path: path, rel: rel, origin: originOf(rel)}
			switch {
			case isImageName(d.Name()):
				images = append(images, f)
			case isParquetName(d.Name()):
				parquets = append(parquets, f)
			case isOtherImageName(d.Name()):
				f.skip = SkipNotImage
				otherImages = append(otherImages, f)
			default:
				src.ignored++
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	byRel := func(a, b sourceFile) int { return strings.Compare(a.rel, b.rel) }
	slices.SortFunc(images, byRel)
	slices.SortFunc(parquets, byRel)

	format := opt.Format
	if format == FormatAuto {
		switch {
		case len(images) > 0 && len(parquets) > 0:
			return nil, fmt.Errorf("source %s holds both images (%d) and parquet files (%d); set the format (%s, %s or %s) to say which to use", opt.Source, len(images), len(parquets), FormatFolder, FormatCelebAHQ, FormatGray128)
		case len(images) > 0:
			format = FormatFolder
		case len(parquets) > 0:
			f, err := detectParquetFormat(parquets[0].path)
			if err != nil {
				return nil, err
			}
			format = f
		default:
			return nil, fmt.Errorf("source %s holds no JPEG/PNG images and no .parquet files; point it at your data", opt.Source)
		}
	}
	src.format = format

	if format == FormatFolder {
		if len(images) == 0 {
			return nil, fmt.Errorf("source %s holds no JPEG/PNG images (.jpg, .jpeg, .png); point it at a folder of photographs", opt.Source)
		}
		src.ignored += len(parquets)
		// the other images go through as skipped items, in source order
		files := append(images, otherImages...)
		slices.SortFunc(files, byRel)
		src.files, src.total, src.splitRule = files, len(files), SplitShuffle
		return src, nil
	}

	if len(parquets) == 0 {
		return nil, fmt.Errorf("source %s holds no .parquet files, but format %q reads parquet; use format %s for a folder of images", opt.Source, format, FormatFolder)
	}
	src.ignored += len(images) + len(otherImages)
	var trains, vals, others int
	for i := range parquets {
		rows, err := inspectParquet(parquets[i].path, format)
		if err != nil {
			return nil, err
		}
		parquets[i].rows = rows
		src.total += int(rows)
		switch parquets[i].origin {
		case originTrain:
			trains++
		case originVal:
			vals++
		default:
			others++
		}
	}
	src.files = parquets
	if trains > 0 && vals > 0 && others == 0 {
		src.splitRule = SplitByFileName
	} else {
		src.splitRule = SplitShuffle
		src.notes = append(src.notes, fmt.Sprintf(
			"parquet files are not named by split (%d train, %d validation, %d other); all rows were shuffled with the seed to form the splits",
			trains, vals, others))
	}
	return src, nil
}

// openParquet opens a parquet file for reading its footer and pages.
func openParquet(path string) (*os.File, *parquet.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open parquet %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open parquet %s: %w", path, err)
	}
	pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read parquet %s: %w; the file is damaged or not parquet (download it again)", path, err)
	}
	return f, pf, nil
}

// bytesColumn finds the leaf column holding image bytes under name: either
// a binary column called name or a group called name with a binary "bytes"
// child (the Hugging Face Image feature).
func bytesColumn(pf *parquet.File, name string) (*parquet.Column, string, bool) {
	col := pf.Root().Column(name)
	path := name
	if col == nil {
		return nil, "", false
	}
	if !col.Leaf() {
		col = col.Column("bytes")
		path = name + ".bytes"
		if col == nil || !col.Leaf() {
			return nil, "", false
		}
	}
	if col.Type().Kind() != parquet.ByteArray || col.MaxRepetitionLevel() != 0 {
		return nil, "", false
	}
	return col, path, true
}

// columnNames lists the top-level column names of a parquet file.
func columnNames(pf *parquet.File) string {
	var names []string
	for _, c := range pf.Root().Columns() {
		names = append(names, c.Name())
	}
	return strings.Join(names, ", ")
}

// detectParquetFormat tells CelebA-HQ parquet from the gray derivative by
// their columns.
func detectParquetFormat(path string) (string, error) {
	f, pf, err := openParquet(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, _, hasColor := bytesColumn(pf, "color")
	_, _, hasGray := bytesColumn(pf, "gray")
	if hasColor && hasGray {
		return FormatGray128, nil
	}
	if _, _, ok := bytesColumn(pf, "image"); ok {
		return FormatCelebAHQ, nil
	}
	return "", fmt.Errorf("parquet %s has columns [%s]; want an image column (%s) or color and gray columns (%s)", path, columnNames(pf), FormatCelebAHQ, FormatGray128)
}

// inspectParquet checks that a parquet file has the columns format needs
// and returns its number of rows.
func inspectParquet(path, format string) (int64, error) {
	f, pf, err := openParquet(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	for _, name := range parquetColumnsOf(format) {
		if _, _, ok := bytesColumn(pf, name); !ok {
			return 0, fmt.Errorf("parquet %s has no binary %q column (columns: %s); is it really %s data? set the format to match", path, name, columnNames(pf), format)
		}
	}
	return pf.NumRows(), nil
}

// parquetColumnsOf lists the image columns of a parquet format: the color
// column first.
func parquetColumnsOf(format string) []string {
	if format == FormatGray128 {
		return []string{"color", "gray"}
	}
	return []string{"image"}
}

// readParquetRows streams the image bytes of every row of a parquet file,
// page by page, calling emit with the color bytes and (gray128) the gray
// bytes; a null or empty cell is passed as nil.
func readParquetRows(ctx context.Context, sf sourceFile, format string, emit func(color, gray []byte) error) error {
	f, pf, err := openParquet(sf.path)
	if err != nil {
		return err
	}
	defer f.Close()
	names := parquetColumnsOf(format)
	cols := make([]*byteColumn, len(names))
	for i, name := range names {
		col, path, ok := bytesColumn(pf, name)
		if !ok {
			return fmt.Errorf("parquet %s has no binary %q column (columns: %s)", sf.path, name, columnNames(pf))
		}
		cols[i] = &byteColumn{pages: col.Pages(), path: path, buf: make([]parquet.Value, 16)}
		defer cols[i].pages.Close()
	}
	n := pf.NumRows()
	for row := int64(0); row < n; row++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		var cells [2][]byte
		for i, c := range cols {
			v, err := c.next()
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("parquet %s: column %s ends after %d of %d rows; the file is damaged (download it again)", sf.path, c.path, row, n)
			}
			if err != nil {
				return fmt.Errorf("parquet %s: read column %s at row %d: %w; the file is damaged (download it again)", sf.path, c.path, row, err)
			}
			cells[i] = v
		}
		if err := emit(cells[0], cells[1]); err != nil {
			return err
		}
	}
	return nil
}

// byteColumn iterates over the values of one non-repeated binary leaf
// column, one page in memory at a time. Values are copied out of each page
// before the next page is read, since the reader recycles page buffers.
type byteColumn struct {
	pages parquet.Pages
	path  string
	vals  parquet.ValueReader
	buf   []parquet.Value
	queue [][]byte
	qi    int
}

// next returns the next row's bytes, nil for a null or empty cell, and
// io.EOF after the last row.
func (c *byteColumn) next() ([]byte, error) {
	for c.qi >= len(c.queue) {
		if err := c.fill(); err != nil {
			return nil, err
		}
	}
	v := c.queue[c.qi]
	c.queue[c.qi] = nil
	c.qi++
	return v, nil
}

func (c *byteColumn) fill() error {
	c.queue, c.qi = c.queue[:0], 0
	for len(c.queue) == 0 {
		if c.vals == nil {
			page, err := c.pages.ReadPage()
			if err != nil {
				return err
			}
			c.vals = page.Values()
		}
		n, err := c.vals.ReadValues(c.buf)
		for _, v := range c.buf[:n] {
			if v.IsNull() || len(v.ByteArray()) == 0 {
				c.queue = append(c.queue, nil)
			} else {
				c.queue = append(c.queue, bytes.Clone(v.ByteArray()))
			}
		}
		clear(c.buf[:n])
		if errors.Is(err, io.EOF) {
			c.vals = nil
		} else if err != nil {
			return err
		}
	}
	return nil
}
