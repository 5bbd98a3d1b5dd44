//go:build windows

package pickup

import (
	"errors"
	"os"
	"syscall"
)

// openExclusive opens a file for reading with no sharing at all: while
// another process (.NET's SmtpClient writing it, a copy in progress) has
// it open, the open fails with a sharing violation and busy is true.
func openExclusive(path string) (f *os.File, busy bool, err error) {
	p, err := syscall.UTF16PtrFromString(path)
	if err != nil {
		return nil, false, err
	}
	h, err := syscall.CreateFile(p, syscall.GENERIC_READ, 0, nil, syscall.OPEN_EXISTING, syscall.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		const errSharingViolation syscall.Errno = 32
		const errLockViolation syscall.Errno = 33
		if errors.Is(err, errSharingViolation) || errors.Is(err, errLockViolation) {
			return nil, true, nil
		}
		return nil, false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(h), path), false, nil
}
