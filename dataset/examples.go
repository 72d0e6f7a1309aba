package dataset

// Examples gives training examples by index: colour (3·S·S, CHW) and gray
// (S·S), both in [−1,1], mirrored when flip is set. A prepared *Set is one;
// tests use synthetic ones.
type Examples interface {
	Len() int
	ImageSize() int
	Load(i int, color, gray []float32, flip bool) error
}

var _ Examples = (*Set)(nil)
