// Package e2e holds jetrelay's end-to-end tests: the whole pipeline
// in-process (testenv), and multi-process tests that build the binary and
// run its stages apart. The tests that kill stages under load are in the
// fault subpackage.
package e2e
