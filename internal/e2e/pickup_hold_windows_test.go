//go:build windows

package e2e

import (
	"os"
	"testing"
)

// holdAsWriter keeps path open for writing until release: the pickup
// directory's exclusive open fails with a sharing violation meanwhile.
func holdAsWriter(t testing.TB, path string) (release func(), ok bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return func() { f.Close() }, true
}
