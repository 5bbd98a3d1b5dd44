// Package fault holds jetrelay's fault tests: every stage a process of
// the real binary, killed with SIGKILL (or stopped with SIGTERM) under a
// bounded load, and the promise to the client checked afterwards — every
// message that got 250 is delivered, byte for byte; nothing refused is;
// duplicates are counted and must be explained by the kill window (the
// time between the next hop's 250 and the worker's acknowledgement, or a
// client that lost the connection after its final dot and sent again).
//
// They are a package of their own, apart from internal/e2e, so that each
// test binary stays well inside go test's default ten-minute limit on a
// two-core machine (together they took 500-540 s under -race).
package fault
