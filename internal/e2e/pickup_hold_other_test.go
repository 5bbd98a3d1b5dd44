//go:build !windows && !linux && !darwin && !freebsd && !netbsd && !openbsd && !dragonfly

package e2e

import "testing"

// holdAsWriter: this system offers the pickup directory no way to see a
// writer holding a file.
func holdAsWriter(testing.TB, string) (func(), bool) { return nil, false }
