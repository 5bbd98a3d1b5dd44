// Package bench is `jetrelay bench`: an SMTP load generator and a
// counting SMTP sink in one, to measure any relay (jetrelay, Postfix…)
// end to end over SMTP only.
//
// The load client sends N pre-generated messages over C concurrent
// sessions, pipelining MAIL, RCPT and DATA when the server offers
// PIPELINING. Every message carries a unique X-Bench-Id header
// "<run>-<seq>"; the time of the 250 to its final dot is recorded, and the
// sink, which the relay under test delivers to, records when it arrives.
// Together they give the accepted rate, the end-to-end delivered rate and
// the 250-to-arrival latency. A Monitor samples the CPU time and the
// memory of the relay's processes from /proc during the run.
package bench
