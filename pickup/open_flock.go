//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package pickup

import (
	"errors"
	"os"
	"syscall"
)

// openExclusive opens a file for reading and takes a shared flock(2) lock
// without waiting: a writer that holds an exclusive lock (advisory: only
// writers that lock) makes busy true. The lock goes with the close.
func openExclusive(path string) (f *os.File, busy bool, err error) {
	f, err = os.Open(path)
	if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, true, nil
		}
		return nil, false, &os.PathError{Op: "flock", Path: path, Err: err}
	}
	return f, false, nil
}
