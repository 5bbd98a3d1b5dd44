//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package e2e

import (
	"os"
	"syscall"
	"testing"
)

// holdAsWriter opens path and holds an exclusive flock(2) lock on it, as
// a writer that locks does, until release.
func holdAsWriter(t testing.TB, path string) (release func(), ok bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return func() { f.Close() }, true
}
