//go:build !windows && !linux && !darwin && !freebsd && !netbsd && !openbsd && !dragonfly

package pickup

import "os"

// openExclusive opens a file for reading; this system offers no way to
// see another process writing it, so the stability rule alone decides.
func openExclusive(path string) (*os.File, bool, error) {
	f, err := os.Open(path)
	return f, false, err
}
