package track

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"path/filepath"

	"github.com/tinct/tinct/internal/atomicfile"
	"github.com/tinct/tinct/internal/modelspec"
)

// ToImage converts a CHW float tensor with values in [-1, 1] to an image:
// c = 1 gives an *image.Gray, c = 3 an opaque *image.RGBA. A value v maps to
// the 8-bit level model.UnitToPixel(v), floor((v+1)*127.5 + 0.5), that is
// round half up, so -1 → 0, 0 → 128 and 1 → 255; values outside [-1, 1] are
// clipped and NaN maps to 0.
// It panics if c is not 1 or 3, or if chw holds fewer than c*h*w values.
func ToImage(chw []float32, c, h, w int) image.Image {
	if c != 1 && c != 3 {
		panic(fmt.Sprintf("track.ToImage: %d channels, want 1 or 3", c))
	}
	if h < 0 || w < 0 || len(chw) < c*h*w {
		panic(fmt.Sprintf("track.ToImage: %d values for a %dx%dx%d tensor", len(chw), c, h, w))
	}
	plane := h * w
	if c == 1 {
		img := image.NewGray(image.Rect(0, 0, w, h))
		for i := range plane {
			img.Pix[i] = modelspec.UnitToPixel(chw[i])
		}
		return img
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range plane {
		p := img.Pix[4*i : 4*i+4 : 4*i+4]
		p[0] = modelspec.UnitToPixel(chw[i])
		p[1] = modelspec.UnitToPixel(chw[plane+i])
		p[2] = modelspec.UnitToPixel(chw[2*plane+i])
		p[3] = 0xff
	}
	return img
}

// gridBackground fills Grid's padding and the unused part of each cell.
var gridBackground = color.RGBA{0xff, 0xff, 0xff, 0xff}

// Grid lays images out in rows on a white background: rows[i][j] goes in row
// i, column j. Every cell has the size of the largest image (widest width,
// tallest height) and each image is centered in its cell (rounding toward
// the top left). Cells are separated by pad pixels of background; there is
// no border. Rows may have different lengths and nil images leave their
// cell empty. The result is (cols*cellW + (cols-1)*pad) wide and
// (rows*cellH + (rows-1)*pad) tall, where cols is the longest row's length;
// with no images it is empty.
func Grid(rows [][]image.Image, pad int) *image.RGBA {
	pad = max(pad, 0)
	cols, cellW, cellH := 0, 0, 0
	for _, row := range rows {
		cols = max(cols, len(row))
		for _, img := range row {
			if img != nil {
				b := img.Bounds()
				cellW, cellH = max(cellW, b.Dx()), max(cellH, b.Dy())
			}
		}
	}
	if cols == 0 || cellW == 0 || cellH == 0 {
		return image.NewRGBA(image.Rectangle{})
	}
	width := cols*cellW + (cols-1)*pad
	height := len(rows)*cellH + (len(rows)-1)*pad
	out := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(out, out.Bounds(), image.NewUniform(gridBackground), image.Point{}, draw.Src)
	for i, row := range rows {
		for j, img := range row {
			if img == nil {
				continue
			}
			b := img.Bounds()
			x := j*(cellW+pad) + (cellW-b.Dx())/2
			y := i*(cellH+pad) + (cellH-b.Dy())/2
			draw.Draw(out, image.Rect(x, y, x+b.Dx(), y+b.Dy()), img, b.Min, draw.Over)
		}
	}
	return out
}

// SavePNG writes img to path as a PNG, atomically: it writes a temporary
// file in the same directory, syncs it and renames it over path, so readers
// see the old file or the new one, never a partial one.
func SavePNG(path string, img image.Image) error {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("track: save %s: %w", path, err)
	}
	if err := writeFileAtomic(path, buf.Bytes()); err != nil {
		return fmt.Errorf("track: save %s: %w", path, err)
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte) error {
	return atomicfile.Write(path, data, "."+filepath.Base(path)+".tmp")
}
