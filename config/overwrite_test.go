package config

import (
	"strings"
	"testing"
)

// TestOverwriteStore: overwrite_store is false by default, a boolean, and
// only goes with resume=false (it starts a new run over the store's
// checkpoints; resume=true or auto continue them).
func TestOverwriteStore(t *testing.T) {
	c, err := Load("", nil)
	if err != nil || c.OverwriteStore {
		t.Fatalf("default overwrite_store = %v, %v; want false", c.OverwriteStore, err)
	}
	c, err = Load("", []string{"overwrite_store=true"})
	if err != nil || !c.OverwriteStore || c.Resume != ResumeNo {
		t.Fatalf("overwrite_store=true: %+v, %v", c, err)
	}
	if back, err := Parse(c.YAML(), nil); err != nil || !back.OverwriteStore {
		t.Fatalf("overwrite_store=true does not survive YAML: %v", err)
	}
	for _, tc := range []struct {
		overrides []string
		want      string
	}{
		{[]string{"overwrite_store=yes please"}, "overwrite_store=yes please: want true or false"},
		{[]string{"overwrite_store=1"}, "overwrite_store=1: want true or false"},
		{[]string{"overwrite_store=true", "resume=true"}, "overwrite_store=true: only with resume=false"},
		{[]string{"overwrite_store=true", "resume=auto"}, "resume=auto continues the store's run"},
	} {
		if _, err := Load("", tc.overrides); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.overrides, err, tc.want)
		}
	}
	if _, err := Parse([]byte("resume: auto\noverwrite_store: true\n"), nil); err == nil || !strings.Contains(err.Error(), "overwrite_store=true") {
		t.Errorf("a file with resume: auto and overwrite_store: true: %v, want an error", err)
	}
}
