package trainstate

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/tinct/tinct/control"
	"github.com/tinct/tinct/model"
)

// TestExportRoundTrip: an exported file gives back the EMA network, its
// shape and resolution, with every tensor equal.
func TestExportRoundTrip(t *testing.T) {
	ck := tinyCheckpoint(t, control.Position{Epoch: 3, Step: 30})
	inf, err := DecodeNetwork(ck, PartEMA)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Export(&b, inf); err != nil {
		t.Fatal(err)
	}
	w, err := ReadWeights(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if w.ImageSize != 2 || w.Step != 30 || w.Epoch != 3 || w.Name != ck.Name {
		t.Fatalf("weights %+v, want image size 2, step 30, epoch 3, from %s", w, ck.Name)
	}
	want, got := inf.Net.StateDict(), w.Net.StateDict()
	for name, tw := range want {
		if tg, ok := got[name]; !ok || !bytes.Equal(tg.Data, tw.Data) {
			t.Fatalf("tensor %s differs", name)
		}
	}
}

// TestReadWeightsRefuses: a bare state dict and metadata asking for a far
// larger network than its tensors are refused, the latter before the
// network is allocated.
func TestReadWeightsRefuses(t *testing.T) {
	inf, err := DecodeNetwork(tinyCheckpoint(t, control.Position{}), PartEMA)
	if err != nil {
		t.Fatal(err)
	}
	var bare bytes.Buffer
	if err := model.WriteSafetensors(&bare, inf.Net.StateDict(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadWeights(bare.Bytes()); err == nil || !strings.Contains(err.Error(), "--widths") {
		t.Fatalf("bare state dict: %v, want an error naming the shape flags", err)
	}
	var huge bytes.Buffer
	meta := map[string]string{MetaFormat: WeightsFormat, MetaImageSize: "64", MetaWidths: "4096,4096,4096,4096,4096,4096", MetaBlockDepth: "16", MetaEmbedDims: "32", MetaStep: "1", MetaEpoch: "1"}
	if err := model.WriteSafetensors(&huge, inf.Net.StateDict(), meta); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadWeights(huge.Bytes()); err == nil || !strings.Contains(err.Error(), "far more parameters") {
		t.Fatalf("huge network: %v, want it refused", err)
	}
}

// TestDecodeNetworkRefusesHugeConfig: a checkpoint whose config.yaml asks
// for a network far larger than its EMA tensors is refused before the
// network is allocated (it used to allocate whatever the file asked).
func TestDecodeNetworkRefusesHugeConfig(t *testing.T) {
	ck := tinyCheckpoint(t, control.Position{})
	ck.Parts[PartConfig] = []byte("image_size: 64\nmodel:\n  widths: [2048, 2048, 2048, 2048]\n  block_depth: 8\n")
	if _, err := DecodeNetwork(ck, PartEMA); err == nil || !strings.Contains(err.Error(), "far more parameters") {
		t.Fatalf("DecodeNetwork: %v, want the huge network refused", err)
	}
}

// TestRestoreAllOrNothing: a checkpoint whose weights load but whose EMA or
// optimizer state does not fit is refused with the state unchanged (the
// live weights used to be replaced before the EMA failed).
func TestRestoreAllOrNothing(t *testing.T) {
	src := tinyState(t, control.Position{Epoch: 1, Step: 4})
	for i := range src.Net.Params {
		src.Net.Params[i] = float32(i%5) + 1
	}
	ck, err := src.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{PartEMA, PartOptimizer} {
		t.Run(part, func(t *testing.T) {
			bad := *ck
			bad.Parts = maps.Clone(ck.Parts)
			var b bytes.Buffer
			if err := model.WriteSafetensors(&b, map[string]model.StoredTensor{"adam.m": model.F32([]float32{1}, 1)}, nil); err != nil {
				t.Fatal(err)
			}
			bad.Parts[part] = b.Bytes()
			dst := tinyState(t, control.Position{})
			before := slices.Clone(dst.Net.Params)
			if err := dst.Restore(&bad, nil); err == nil {
				t.Fatalf("a checkpoint with a damaged %s restored", part)
			}
			if !slices.Equal(dst.Net.Params, before) {
				t.Errorf("a failed restore (damaged %s) changed the live weights", part)
			}
		})
	}
}
