// Package atomicfile replaces files so that a reader, or a crash, sees the
// old content or the new one, never a mix.
package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
)

// Write replaces path with data: it writes a temporary file named
// tempPrefix+random in the same folder (mode 0644), syncs it, renames it
// over path and syncs the folder. On error the temporary file is removed.
func Write(path string, data []byte, tempPrefix string) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil { // CreateTemp makes it 0600
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes renames inside dir durable where the platform supports it.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
