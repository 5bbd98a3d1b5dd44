// Package testenv is jetrelay's test harness: an in-process relay built
// with the production wiring (internal/app) on an embedded NATS server in
// a temporary directory, a scriptable destination SMTP server, a local DNS
// server, throwaway TLS certificates and polling helpers. Everything
// listens on loopback only.
package testenv
