package serve

import (
	"bufio"
	"compress/zlib"
	"encoding/binary"
	"hash/crc32"
	"io"
)

// pngStream writes an 8-bit RGB PNG row by row, so that an image of any
// size is encoded holding two rows (image/png needs the whole image). Each
// row is filtered with whichever of PNG's five filters gives the smallest
// sum of absolute values (the heuristic image/png uses too), compressed
// with zlib at speed level, and written out in IDAT chunks of at most
// 64 KiB.
type pngStream struct {
	w, h     int
	out      *bufio.Writer
	idat     *chunkWriter
	z        *zlib.Writer
	prev     []byte // the previous row, raw (zero before the first)
	filtered [5][]byte
	err      error
}

func newPNGStream(w io.Writer, width, height int) (*pngStream, error) {
	p := &pngStream{w: width, h: height, out: bufio.NewWriterSize(w, 32<<10), prev: make([]byte, 3*width)}
	for i := range p.filtered {
		p.filtered[i] = make([]byte, 1+3*width)
		p.filtered[i][0] = byte(i)
	}
	p.out.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, uint32(width))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(height))
	ihdr[8], ihdr[9] = 8, 2 // 8-bit truecolour; deflate, adaptive filters, no interlace
	writeChunk(p.out, "IHDR", ihdr)
	p.idat = &chunkWriter{w: p.out}
	var err error
	p.z, err = zlib.NewWriterLevel(p.idat, zlib.BestSpeed)
	return p, err
}

// writeRow writes the next row: 3·width bytes of RGB.
func (p *pngStream) writeRow(rgb []byte) error {
	if p.err != nil {
		return p.err
	}
	const bpp = 3
	cur := rgb[:3*p.w]
	f := &p.filtered
	for i := range cur {
		a, b := byte(0), p.prev[i]
		var c byte
		if i >= bpp {
			a, c = cur[i-bpp], p.prev[i-bpp]
		}
		x := cur[i]
		f[0][1+i] = x
		f[1][1+i] = x - a
		f[2][1+i] = x - b
		f[3][1+i] = x - byte((int(a)+int(b))/2)
		f[4][1+i] = x - paeth(a, b, c)
	}
	best, bestSum := 0, -1
	for k := range f {
		sum := 0
		for _, v := range f[k][1:] {
			sum += int(int8(v)) * (int(int8(v)>>7)*2 + 1) // |int8(v)|
		}
		if bestSum < 0 || sum < bestSum {
			best, bestSum = k, sum
		}
	}
	copy(p.prev, cur)
	if _, err := p.z.Write(f[best]); err != nil {
		p.err = err
	}
	return p.err
}

// close ends the image: the rest of the compressed data and IEND.
func (p *pngStream) close() error {
	if p.err != nil {
		return p.err
	}
	if err := p.z.Close(); err != nil {
		return err
	}
	if err := p.idat.flush(); err != nil {
		return err
	}
	writeChunk(p.out, "IEND", nil)
	return p.out.Flush()
}

func paeth(a, b, c byte) byte {
	p := int(a) + int(b) - int(c)
	pa, pb, pc := abs(p-int(a)), abs(p-int(b)), abs(p-int(c))
	switch {
	case pa <= pb && pa <= pc:
		return a
	case pb <= pc:
		return b
	}
	return c
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func writeChunk(w io.Writer, typ string, data []byte) error {
	var head [8]byte
	binary.BigEndian.PutUint32(head[:], uint32(len(data)))
	copy(head[4:], typ)
	crc := crc32.NewIEEE()
	crc.Write(head[4:])
	crc.Write(data)
	if _, err := w.Write(head[:]); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	return binary.Write(w, binary.BigEndian, crc.Sum32())
}

// chunkWriter gathers compressed data into IDAT chunks of up to 64 KiB.
type chunkWriter struct {
	w   io.Writer
	buf []byte
}

func (c *chunkWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		k := min(len(b), 64<<10-len(c.buf))
		c.buf = append(c.buf, b[:k]...)
		b = b[k:]
		if len(c.buf) == 64<<10 {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunkWriter) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	err := writeChunk(c.w, "IDAT", c.buf)
	c.buf = c.buf[:0]
	return err
}
