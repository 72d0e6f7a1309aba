package demo

import (
	"testing"
	"time"
)

// TestDate: the model card gives the demo model's date (the weights record
// none), so that it is not shown as year 1.
func TestDate(t *testing.T) {
	if got, want := Date(), time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Date() = %v, want %v (the | date | row of MODEL.md)", got, want)
	}
}
