//go:build !windows

package winsvc

import "time"

// Supported reports whether this system has Windows services.
const Supported = false

// IsService reports whether the Service Control Manager started this
// process: never, here.
func IsService() bool { return false }

// Run returns ErrNotSupported.
func Run(RunFunc) error { return ErrNotSupported }

// Install returns ErrNotSupported.
func Install(InstallOptions) error { return ErrNotSupported }

// Uninstall returns ErrNotSupported.
func Uninstall(string) error { return ErrNotSupported }

// Start returns ErrNotSupported.
func Start(string, time.Duration) error { return ErrNotSupported }

// Stop returns ErrNotSupported.
func Stop(string, time.Duration) error { return ErrNotSupported }

// QueryStatus returns ErrNotSupported.
func QueryStatus(string) (Status, error) { return Status{}, ErrNotSupported }

// CreateDataDir returns ErrNotSupported.
func CreateDataDir(string) (bool, error) { return false, ErrNotSupported }
