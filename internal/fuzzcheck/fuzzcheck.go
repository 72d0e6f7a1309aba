// Package fuzzcheck holds what the fuzz targets of several packages share:
// measuring how many bytes a parser allocates, so a target can assert that
// hostile sizes in a header are refused before anything that large is
// allocated.
package fuzzcheck

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
)

const allocsMetric = "/gc/heap/allocs:bytes"

// AllocatedBytes runs f and returns the bytes it allocated on the heap,
// give or take the allocations of other goroutines meanwhile and the
// runtime's accounting granularity (small objects are counted a span, a
// few KiB, at a time): fine for bounds of hundreds of KiB and more, which
// is what a refused huge size must stay under.
func AllocatedBytes(f func()) uint64 {
	s := []metrics.Sample{{Name: allocsMetric}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	f()
	metrics.Read(s)
	return s[0].Value.Uint64() - before
}

// UpdateSeedsEnv names the environment variable that makes the packages'
// TestFuzzSeeds tests (re)write their seed corpora under testdata/fuzz:
//
//	TINCT_FUZZ_SEEDS=write go test -run '^TestFuzzSeeds$' ./model ./track …
//
// Without it those tests are skipped; the committed files are what go test
// runs as seeds.
const UpdateSeedsEnv = "TINCT_FUZZ_SEEDS"

// WriteSeeds reports whether the seed corpora are being rewritten
// (UpdateSeedsEnv=write), and otherwise skips t.
func WriteSeeds(t testing.TB) {
	t.Helper()
	if os.Getenv(UpdateSeedsEnv) != "write" {
		t.Skipf("set %s=write to rewrite the seed corpora under testdata/fuzz", UpdateSeedsEnv)
	}
}

// WriteSeed writes one seed corpus file, testdata/fuzz/<target>/<name>, in
// the format go test reads ("go test fuzz v1", one Go literal per line).
// The values must have the types of the target's arguments, in order;
// []byte, string, bool and the integer and float types are supported.
func WriteSeed(t testing.TB, target, name string, values ...any) {
	t.Helper()
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
		case string:
			fmt.Fprintf(&b, "string(%s)\n", strconv.Quote(v))
		case bool, int, int8, int16, int32, int64, uint, uint16, uint32, uint64:
			fmt.Fprintf(&b, "%T(%v)\n", v, v)
		case uint8:
			fmt.Fprintf(&b, "byte(%s)\n", strconv.QuoteRune(rune(v)))
		case float64:
			if math.IsNaN(v) || math.IsInf(v, 0) || v == 0 && math.Signbit(v) {
				fmt.Fprintf(&b, "math.Float64frombits(0x%x)\n", math.Float64bits(v))
			} else {
				fmt.Fprintf(&b, "float64(%s)\n", strconv.FormatFloat(v, 'g', -1, 64))
			}
		case float32:
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || v == 0 && math.Signbit(float64(v)) {
				fmt.Fprintf(&b, "math.Float32frombits(0x%x)\n", math.Float32bits(v))
			} else {
				fmt.Fprintf(&b, "float32(%s)\n", strconv.FormatFloat(float64(v), 'g', -1, 32))
			}
		default:
			t.Fatalf("seed %s/%s: unsupported type %T", target, name, v)
		}
	}
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
