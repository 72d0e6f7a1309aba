package dataset

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
)

// exifBlock returns a TIFF structure (the body of an EXIF block) whose IFD0
// holds a few tags, the orientation among them.
func exifBlock(orientation uint16, bo binary.ByteOrder) []byte {
	var b bytes.Buffer
	if bo == binary.LittleEndian {
		b.WriteString("II")
	} else {
		b.WriteString("MM")
	}
	put16 := func(v uint16) { binary.Write(&b, bo, v) }
	put32 := func(v uint32) { binary.Write(&b, bo, v) }
	put16(42)
	put32(8) // IFD0 right after the header
	put16(3) // three entries
	// ImageWidth (LONG), Orientation (SHORT), XResolution offset (RATIONAL)
	put16(0x0100)
	put16(4)
	put32(1)
	put32(640)
	put16(0x0112)
	put16(3)
	put32(1)
	put16(orientation)
	put16(0)
	put16(0x011A)
	put16(5)
	put32(1)
	put32(50)
	put32(0) // no next IFD
	put32(72)
	put32(1)
	return b.Bytes()
}

// withExifJPEG inserts an APP1 Exif segment (after an APP0) into a JPEG.
func withExifJPEG(data []byte, orientation uint16, bo binary.ByteOrder) []byte {
	payload := append([]byte("Exif\x00\x00"), exifBlock(orientation, bo)...)
	seg := []byte{0xFF, 0xE1, 0, 0}
	binary.BigEndian.PutUint16(seg[2:], uint16(len(payload)+2))
	app0 := []byte{0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0}
	out := append([]byte{0xFF, 0xD8}, app0...)
	out = append(out, seg...)
	out = append(out, payload...)
	return append(out, data[2:]...)
}

// withExifPNG inserts an eXIf chunk after a PNG's IHDR.
func withExifPNG(data []byte, orientation uint16) []byte {
	payload := exifBlock(orientation, binary.BigEndian)
	chunk := make([]byte, 8, 12+len(payload))
	binary.BigEndian.PutUint32(chunk, uint32(len(payload)))
	copy(chunk[4:], "eXIf")
	chunk = append(chunk, payload...)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(chunk[4:]))
	const ihdrEnd = 8 + 8 + 13 + 4
	out := append([]byte(nil), data[:ihdrEnd]...)
	out = append(out, chunk...)
	return append(out, data[ihdrEnd:]...)
}

// numbered returns a w×h gray image whose pixel (x, y) is 10y + x + 1.
func numbered(w, h int) *image.Gray {
	g := image.NewGray(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			g.Pix[y*g.Stride+x] = uint8(10*y + x + 1)
		}
	}
	return g
}

func rows(img image.Image) [][]uint8 {
	b := img.Bounds()
	var out [][]uint8
	for y := b.Min.Y; y < b.Max.Y; y++ {
		var r []uint8
		for x := b.Min.X; x < b.Max.X; x++ {
			r = append(r, color.GrayModel.Convert(img.At(x, y)).(color.Gray).Y)
		}
		out = append(out, r)
	}
	return out
}

func TestOrientation(t *testing.T) {
	var jb bytes.Buffer
	jpeg.Encode(&jb, numbered(3, 2), nil)
	var pb bytes.Buffer
	png.Encode(&pb, numbered(3, 2))
	for o := uint16(1); o <= 8; o++ {
		for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			if got := Orientation(withExifJPEG(jb.Bytes(), o, bo)); got != int(o) {
				t.Errorf("JPEG %v orientation %d: got %d", bo, o, got)
			}
		}
		if got := Orientation(withExifPNG(pb.Bytes(), o)); got != int(o) {
			t.Errorf("PNG orientation %d: got %d", o, got)
		}
	}
	for name, data := range map[string][]byte{
		"no EXIF JPEG":     jb.Bytes(),
		"no eXIf PNG":      pb.Bytes(),
		"orientation 0":    withExifJPEG(jb.Bytes(), 0, binary.BigEndian),
		"orientation 9":    withExifJPEG(jb.Bytes(), 9, binary.LittleEndian),
		"cut in the EXIF":  withExifJPEG(jb.Bytes(), 6, binary.BigEndian)[:40],
		"empty":            nil,
		"not an image":     []byte("hello"),
		"SOI only":         {0xFF, 0xD8},
		"zero-length APP1": {0xFF, 0xD8, 0xFF, 0xE1, 0, 0},
	} {
		if got := Orientation(data); got != 1 {
			t.Errorf("%s: %d, want 1", name, got)
		}
	}
}

// TestOrient checks the eight orientations on a 3×2 image against the
// EXIF specification's pictures, for every pixel layout Orient knows.
func TestOrient(t *testing.T) {
	// numbered(3, 2) is  1 2 3 / 11 12 13
	want := map[int][][]uint8{
		1: {{1, 2, 3}, {11, 12, 13}},
		2: {{3, 2, 1}, {13, 12, 11}},
		3: {{13, 12, 11}, {3, 2, 1}},
		4: {{11, 12, 13}, {1, 2, 3}},
		5: {{1, 11}, {2, 12}, {3, 13}},
		6: {{11, 1}, {12, 2}, {13, 3}},
		7: {{13, 3}, {12, 2}, {11, 1}},
		8: {{3, 13}, {2, 12}, {1, 11}},
	}
	src := numbered(3, 2)
	// the same pixels in other layouts, and off the origin
	variants := map[string]image.Image{"Gray": src}
	for name, m := range map[string]interface {
		image.Image
		Set(x, y int, c color.Color)
	}{
		"RGBA": image.NewRGBA(image.Rect(5, 7, 8, 9)), "NRGBA": image.NewNRGBA(image.Rect(0, 0, 3, 2)),
		"RGBA64": image.NewRGBA64(image.Rect(0, 0, 3, 2)), "NRGBA64": image.NewNRGBA64(image.Rect(-1, -1, 2, 1)),
		"Gray16": image.NewGray16(image.Rect(0, 0, 3, 2)), "CMYK": image.NewCMYK(image.Rect(0, 0, 3, 2)),
	} {
		b := m.Bounds()
		for y := range 2 {
			for x := range 3 {
				m.Set(b.Min.X+x, b.Min.Y+y, src.At(x, y))
			}
		}
		variants[name] = m
	}
	ycc := image.NewYCbCr(image.Rect(0, 0, 3, 2), image.YCbCrSubsampleRatio444)
	for i := range ycc.Y {
		ycc.Y[i], ycc.Cb[i], ycc.Cr[i] = src.Pix[i], 128, 128
	}
	variants["YCbCr"] = ycc
	pal := image.NewPaletted(image.Rect(0, 0, 3, 2), nil)
	for i, v := range src.Pix {
		pal.Palette = append(pal.Palette, color.Gray{v})
		pal.Pix[i] = uint8(i)
	}
	variants["Paletted"] = pal
	variants["Uniform-backed"] = subImage{src}

	for name, img := range variants {
		for o := 1; o <= 8; o++ {
			got := Orient(img, o)
			if got.Bounds().Min != (image.Point{}) && o != 1 {
				t.Errorf("%s %d: bounds %v, want origin 0", name, o, got.Bounds())
			}
			if r := rows(got); !equalRows(r, want[o]) {
				t.Errorf("%s orientation %d: %v, want %v", name, o, r, want[o])
			}
		}
	}
	if Orient(src, 0) != image.Image(src) || Orient(src, 9) != image.Image(src) {
		t.Error("invalid orientations must leave the image as it is")
	}
}

// subImage hides an image's type, so Orient takes its generic path.
type subImage struct{ image.Image }

func equalRows(a, b [][]uint8) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestDecodeOrientation: Decode (which data prepare, tinct colorize and tinct
// serve use) turns a photo upright by its EXIF orientation.
func TestDecodeOrientation(t *testing.T) {
	upright := numbered(3, 5) // a portrait photo…
	stored := Orient(upright, 8)
	// …stored sideways by a phone, which tags it 6 ("rotate 90° clockwise");
	// rotating the upright one anticlockwise (8) is what the phone stored
	var pb bytes.Buffer
	png.Encode(&pb, stored)
	img, err := Decode(bytes.NewReader(withExifPNG(pb.Bytes(), 6)))
	if err != nil {
		t.Fatal(err)
	}
	if !equalRows(rows(img), rows(upright)) {
		t.Errorf("decoded %v, want the upright %v", rows(img), rows(upright))
	}
	// the same as a JPEG (lossy: compare the shape and roughly the values)
	big := image.NewGray(image.Rect(0, 0, 40, 64))
	for y := range 64 {
		for x := range 40 {
			big.Pix[y*40+x] = uint8(4 * y) // dark at the top, light at the bottom
		}
	}
	var jb bytes.Buffer
	jpeg.Encode(&jb, Orient(big, 8), &jpeg.Options{Quality: 95})
	img, err = Decode(bytes.NewReader(withExifJPEG(jb.Bytes(), 6, binary.LittleEndian)))
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() != 40 || img.Bounds().Dy() != 64 {
		t.Fatalf("JPEG tagged 6 decoded as %v, want 40×64", img.Bounds())
	}
	top := color.GrayModel.Convert(img.At(20, 2)).(color.Gray).Y
	bottom := color.GrayModel.Convert(img.At(20, 61)).(color.Gray).Y
	if top > 30 || bottom < 220 {
		t.Errorf("JPEG tagged 6: top %d, bottom %d: not upright", top, bottom)
	}
}

func FuzzOrientation(f *testing.F) {
	var jb bytes.Buffer
	jpeg.Encode(&jb, numbered(3, 2), nil)
	var pb bytes.Buffer
	png.Encode(&pb, numbered(3, 2))
	f.Add(withExifJPEG(jb.Bytes(), 6, binary.LittleEndian))
	f.Add(withExifJPEG(jb.Bytes(), 3, binary.BigEndian))
	f.Add(withExifPNG(pb.Bytes(), 8))
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0, 10, 'E', 'x', 'i', 'f', 0, 0, 'M', 'M'})
	f.Fuzz(func(t *testing.T, data []byte) {
		if o := Orientation(data); o < 1 || o > 8 {
			t.Fatalf("orientation %d", o)
		}
	})
}
