package serve

import (
	"image"
	"image/color"

	"github.com/tinct/tinct/dataset"
)

// toGray is dataset.ToGray (BT.601 luma of the straight 8-bit RGB, as
// Pillow's convert("L")), equal to it pixel for pixel, without the garbage
// its general path makes for the images it has no fast path for (16-bit,
// CMYK and paletted ones: a boxed colour per pixel, 10 to 20 bytes each,
// which lets Go's heap grow to twice the photo's size before a
// collection). The rest are dataset.ToGray's.
func toGray(img image.Image) *image.Gray {
	var at func(x, y int) uint8
	switch m := img.(type) {
	case *image.Gray16:
		at = func(x, y int) uint8 { return uint8(m.Gray16At(x, y).Y >> 8) }
	case *image.RGBA64:
		at = func(x, y int) uint8 { return straightLuma(m.RGBA64At(x, y).RGBA()) }
	case *image.NRGBA64:
		at = func(x, y int) uint8 { return straightLuma(m.NRGBA64At(x, y).RGBA()) }
	case *image.CMYK:
		at = func(x, y int) uint8 { return straightLuma(m.CMYKAt(x, y).RGBA()) }
	case *image.Paletted:
		// (image/png extends a palette to every index its pixels use)
		var table [256]uint8
		for i, c := range m.Palette[:min(len(m.Palette), 256)] {
			if n, ok := c.(color.NRGBA); ok { // color.NRGBAModel keeps it as it is
				table[i] = luma8(n.R, n.G, n.B)
			} else {
				table[i] = straightLuma(c.RGBA())
			}
		}
		at = func(x, y int) uint8 { return table[m.Pix[m.PixOffset(x, y)]] }
	default:
		return dataset.ToGray(img)
	}
	b := img.Bounds()
	dst := image.NewGray(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		row := dst.Pix[dst.PixOffset(b.Min.X, y):dst.PixOffset(b.Max.X, y)]
		for i := range row {
			row[i] = at(b.Min.X+i, y)
		}
	}
	return dst
}

// straightLuma is the BT.601 luma of an alpha-premultiplied 16-bit colour
// made straight 8-bit RGB as color.NRGBAModel does, computed as
// dataset.ToGray does (Pillow's 16-bit fixed-point weights).
func straightLuma(r, g, b, a uint32) uint8 {
	switch a {
	case 0xffff:
	case 0:
		return 0
	default:
		r, g, b = r*0xffff/a, g*0xffff/a, b*0xffff/a
	}
	return luma8(uint8(r>>8), uint8(g>>8), uint8(b>>8))
}

// luma8 is dataset's luma: BT.601 with Pillow's 16-bit fixed-point
// weights, rounded to nearest.
func luma8(r, g, b uint8) uint8 {
	return uint8((uint32(r)*19595 + uint32(g)*38470 + uint32(b)*7471 + 0x8000) >> 16)
}
