package trainstate

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/tinct/tinct/model"
)

// Metadata keys of an exported weights file (Export): with them, a bare
// .safetensors file carries what inference needs besides the tensors.
const (
	MetaFormat     = "format" // always WeightsFormat
	MetaImageSize  = "image_size"
	MetaWidths     = "widths" // comma-separated
	MetaBlockDepth = "block_depth"
	MetaEmbedDims  = "embed_dims"
	MetaStep       = "step"
	MetaEpoch      = "epoch"
	MetaCheckpoint = "checkpoint" // the checkpoint's name
)

// WeightsFormat marks an exported EMA weights file.
const WeightsFormat = "tinct-ema-weights"

// Export writes a network (a checkpoint's EMA) to w as safetensors, with
// the metadata ReadWeights needs (PyTorch loads the tensors as a state
// dict).
func Export(w io.Writer, n *Network) error {
	mc := n.Net.Config
	widths := make([]string, len(mc.Widths))
	for i, v := range mc.Widths {
		widths[i] = strconv.Itoa(v)
	}
	meta := map[string]string{
		MetaFormat:     WeightsFormat,
		MetaImageSize:  strconv.Itoa(n.ImageSize),
		MetaWidths:     strings.Join(widths, ","),
		MetaBlockDepth: strconv.Itoa(mc.BlockDepth),
		MetaEmbedDims:  strconv.Itoa(mc.EmbedDims),
		MetaStep:       strconv.FormatInt(n.Step, 10),
		MetaEpoch:      strconv.Itoa(n.Epoch),
		MetaCheckpoint: n.Name,
	}
	return model.WriteSafetensors(w, n.Net.StateDict(), meta)
}

// maxExportedImageSize bounds the resolution a weights file may claim.
const maxExportedImageSize = 4096

// ReadWeights decodes a weights file that Export wrote. A file without
// its metadata (a bare state dict) is an error that says so: its shape is
// not known.
func ReadWeights(data []byte) (*Network, error) {
	ts, meta, err := model.ReadSafetensors(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if meta[MetaFormat] != WeightsFormat {
		return nil, fmt.Errorf("not an exported tinct weights file (no %s=%s metadata): give the network's shape with --widths, --block-depth and --image-size", MetaFormat, WeightsFormat)
	}
	num := func(key string, lo, hi int) (int, error) {
		v, err := strconv.Atoi(meta[key])
		if err != nil || v < lo || v > hi {
			return 0, fmt.Errorf("weights metadata %s=%q: want an integer in %d..%d", key, meta[key], lo, hi)
		}
		return v, nil
	}
	var mc model.Config
	for _, f := range strings.Split(meta[MetaWidths], ",") {
		v, err := strconv.Atoi(f)
		if err != nil || v < 1 || v > 4096 || len(mc.Widths) >= 8 {
			return nil, fmt.Errorf("weights metadata %s=%q: want up to 8 widths of 1..4096", MetaWidths, meta[MetaWidths])
		}
		mc.Widths = append(mc.Widths, v)
	}
	if mc.BlockDepth, err = num(MetaBlockDepth, 1, 16); err != nil {
		return nil, err
	}
	if mc.EmbedDims, err = num(MetaEmbedDims, 2, 4096); err != nil {
		return nil, err
	}
	size, err := num(MetaImageSize, 1, maxExportedImageSize)
	if err != nil {
		return nil, err
	}
	epoch, err := num(MetaEpoch, 0, 1<<30)
	if err != nil {
		return nil, err
	}
	step, err := strconv.ParseInt(meta[MetaStep], 10, 64)
	if err != nil || step < 0 {
		return nil, fmt.Errorf("weights metadata %s=%q: want a step count", MetaStep, meta[MetaStep])
	}
	if err := fitsTensors(mc, ts); err != nil {
		return nil, fmt.Errorf("weights metadata: %w", err)
	}
	net, err := model.New(mc)
	if err != nil {
		return nil, fmt.Errorf("weights metadata: %w", err)
	}
	if err := net.LoadStateDict(ts); err != nil {
		return nil, err
	}
	return &Network{Net: net, ImageSize: size, Name: meta[MetaCheckpoint], Step: step, Epoch: epoch}, nil
}

// fitsTensors refuses a network shape far larger than the tensors meant to
// fill it, before the network is allocated: a few bytes of hostile
// metadata must not ask for gigabytes. The bound over-counts every level's
// convolutions at the widest width, so that every real network passes.
func fitsTensors(mc model.Config, ts map[string]model.StoredTensor) error {
	var have int64
	for _, t := range ts {
		n := int64(1)
		for _, d := range t.Shape {
			n *= int64(d)
		}
		have += n
	}
	var wmax, bound int64
	for _, w := range mc.Widths {
		wmax = max(wmax, int64(w))
	}
	for _, w := range mc.Widths {
		bound += 40 * int64(mc.BlockDepth) * 9 * int64(w) * wmax
	}
	bound += int64(mc.EmbedDims) * wmax
	if bound > 64*have+1<<20 {
		return fmt.Errorf("network widths %v, block depth %d: far more parameters than the %d values given", mc.Widths, mc.BlockDepth, have)
	}
	return nil
}
