package winsvc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLogFileRotates(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "logs", "jetrelay.log") // the directory is created
	l, err := OpenLogFile(p, 25, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		if _, err := fmt.Fprintf(l, "line %d ....\n", i); err != nil { // 12 bytes: two per file
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, p); got != "line 6 ....\n" {
		t.Errorf("current: %q", got)
	}
	if got := readFile(t, p+".1"); got != "line 4 ....\nline 5 ....\n" {
		t.Errorf(".1: %q", got)
	}
	if got := readFile(t, p+".2"); got != "line 2 ....\nline 3 ....\n" {
		t.Errorf(".2: %q", got)
	}
	if _, err := os.Stat(p + ".3"); !os.IsNotExist(err) {
		t.Errorf(".3 exists (keep is 2): %v", err)
	}
	if _, err := l.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}

	// Reopening appends, and counts what is there.
	l, err = OpenLogFile(p, 25, 2)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(l, "line 7 ....\n")
	fmt.Fprint(l, "line 8 ....\n")
	l.Close()
	if got := readFile(t, p); got != "line 8 ....\n" {
		t.Errorf("after reopen: %q", got)
	}
	if got := readFile(t, p+".1"); got != "line 6 ....\nline 7 ....\n" {
		t.Errorf("after reopen .1: %q", got)
	}
}

func TestLogFileKeepNone(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j.log")
	l, err := OpenLogFile(p, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(l, "12345678\n")
	fmt.Fprint(l, "abcdefgh\n")
	l.Close()
	if got := readFile(t, p); got != "abcdefgh\n" {
		t.Errorf("got %q", got)
	}
	matches, _ := filepath.Glob(p + ".*")
	if len(matches) != 0 {
		t.Errorf("old files with keep 0: %v", matches)
	}
}

func TestLogFileOversizedLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j.log")
	l, err := OpenLogFile(p, 10, 1)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 30) + "\n"
	fmt.Fprint(l, long) // into the empty file, no rotation first
	fmt.Fprint(l, "y\n")
	l.Close()
	if got := readFile(t, p+".1"); got != long {
		t.Errorf(".1: %q", got)
	}
	if got := readFile(t, p); got != "y\n" {
		t.Errorf("current: %q", got)
	}
}

func TestLogFileRotationFails(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j.log")
	// path.1 is a non-empty directory: removing it, and so the rotation, fails.
	if err := os.MkdirAll(filepath.Join(p+".1", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := OpenLogFile(p, 100, 1)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("z", 49) + "\n"
	for range 4 {
		if _, err := fmt.Fprint(l, line); err != nil {
			t.Fatalf("write during failed rotation: %v", err)
		}
	}
	l.mu.Lock()
	rerr, next := l.rotateErr, l.nextTry
	l.mu.Unlock()
	if rerr == nil || next != 160 {
		t.Errorf("rotateErr %v, nextTry %d; want an error and 160 (tried again at 150 bytes)", rerr, next)
	}
	l.Close()
	if got := readFile(t, p); got != strings.Repeat(line, 4) {
		t.Errorf("the log did not keep going into the current file: %d bytes", len(got))
	}
}

func TestLogFileConcurrent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "j.log")
	l, err := OpenLogFile(p, 1000, 50)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				fmt.Fprintf(l, "g%d i%02d\n", g, i)
			}
		}()
	}
	wg.Wait()
	l.Close()
	all := readFile(t, p)
	for i := 1; i <= 50; i++ {
		b, err := os.ReadFile(fmt.Sprintf("%s.%d", p, i))
		if err == nil {
			all += string(b)
		}
	}
	if n := strings.Count(all, "\n"); n != 400 {
		t.Errorf("%d lines in all files, want 400", n)
	}
	for _, line := range strings.Split(strings.TrimSpace(all), "\n") {
		if len(line) != 6 {
			t.Fatalf("torn line %q", line)
		}
	}
}

func TestOpenLogFileErrors(t *testing.T) {
	if _, err := OpenLogFile(filepath.Join(t.TempDir(), "j.log"), 0, 1); err == nil {
		t.Error("maxBytes 0: no error")
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := OpenLogFile(filepath.Join(f, "j.log"), 10, 1); err == nil {
		t.Error("directory is a file: no error")
	}
}
