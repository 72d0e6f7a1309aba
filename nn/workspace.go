package nn

// Workspace holds the per-worker scratch that kernels reuse from call to
// call (im2col columns, partial weight gradients). Buffers grow to the
// largest request and are then kept, so a training loop allocates nothing
// after its first step. A Workspace serves one caller at a time.
type Workspace struct {
	slots [numSlots][][]float32
}

const (
	slotCol = iota
	slotAcc
	slotRot
	slotWB
	numSlots
)

// bufs returns one buffer of at least size floats per worker for the given
// slot. Call it before fanning out; the contents are undefined.
func (ws *Workspace) bufs(slot, size int) [][]float32 {
	s := ws.slots[slot]
	for len(s) < workers {
		s = append(s, nil)
	}
	for w := range s {
		if cap(s[w]) < size {
			s[w] = make([]float32, size)
		}
		s[w] = s[w][:size]
	}
	ws.slots[slot] = s
	return s
}

// Bytes reports how much scratch the workspace holds.
func (ws *Workspace) Bytes() int {
	total := 0
	for _, s := range ws.slots {
		for _, b := range s {
			total += 4 * cap(b)
		}
	}
	return total
}
