// Package e2e holds jetrelay's end-to-end tests: the whole pipeline
// in-process (testenv), and multi-process tests that build the binary and
// kill its stages.
package e2e
