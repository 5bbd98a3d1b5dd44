package winsvc

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// LogFile is an append-only log file that rotates itself: before a write
// would take it past maxBytes it becomes path.1 (path.1 becomes path.2 …,
// keeping keep old files) and a new file is started. A running service
// has no log rotation around it, unlike a systemd unit with journald.
//
// A rotation that fails (on Windows, a reader holding the file open without
// delete sharing) is tried again after another tenth of maxBytes; the log
// keeps going into the current file meanwhile. It is safe for concurrent
// use.
type LogFile struct {
	path     string
	maxBytes int64
	keep     int

	mu        sync.Mutex
	f         *os.File
	size      int64
	nextTry   int64 // after a failed rotation: size at which to try again
	rotateErr error // the last rotation error, for tests and diagnostics
}

// OpenLogFile opens (appending) or creates path, and its directory.
func OpenLogFile(path string, maxBytes int64, keep int) (*LogFile, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("log file %s: maxBytes must be positive", path)
	}
	if keep < 0 {
		keep = 0
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	l := &LogFile{path: path, maxBytes: maxBytes, keep: keep}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *LogFile) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("log file: %w", err)
	}
	l.f, l.size = f, fi.Size()
	return nil
}

// Path is the file's name.
func (l *LogFile) Path() string { return l.path }

// Write appends p, rotating first when needed.
func (l *LogFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, os.ErrClosed
	}
	if l.size > 0 && l.size+int64(len(p)) > l.maxBytes && l.size >= l.nextTry {
		l.rotate()
		if l.f == nil {
			return 0, fmt.Errorf("log file: reopening after rotation: %w", l.rotateErr)
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

// rotate renames path to path.1 (after shifting the older ones) and opens
// a new path. On failure it reopens path and postpones the next try.
func (l *LogFile) rotate() {
	if err := l.f.Close(); err != nil {
		l.rotateErr = err
	}
	l.f = nil
	err := l.shift()
	if oerr := l.open(); oerr != nil {
		l.rotateErr = oerr
		return
	}
	if err != nil {
		l.rotateErr = err
		l.nextTry = l.size + l.maxBytes/10
		return
	}
	l.rotateErr, l.nextTry = nil, 0
}

func (l *LogFile) shift() error {
	if l.keep == 0 {
		return os.Remove(l.path)
	}
	old := func(i int) string { return fmt.Sprintf("%s.%d", l.path, i) }
	if err := os.Remove(old(l.keep)); err != nil && !os.IsNotExist(err) {
		return err
	}
	for i := l.keep - 1; i >= 1; i-- {
		if err := os.Rename(old(i), old(i+1)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return os.Rename(l.path, old(1))
}

// Close closes the file; later writes fail.
func (l *LogFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
