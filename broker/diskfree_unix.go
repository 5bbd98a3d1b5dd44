//go:build unix

package broker

import "golang.org/x/sys/unix"

// diskFree is the space available to this (unprivileged) process on the
// file system holding dir.
func diskFree(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
