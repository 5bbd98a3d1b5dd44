// Package dkim is jetrelay's DKIM signing (RFC 6376, RSA-SHA256, and
// Ed25519-SHA256 of RFC 8463) and the key work around it: reading and
// generating private keys, the DNS record that publishes a key, and the
// check of a published record against a key. The canonicalisation and the
// signature itself are github.com/emersion/go-msgauth's; this package
// decides which key signs which message and feeds the library the message
// exactly as it goes on the wire.
//
// Delivery signs through one seam, Signer.Sign: it opens the message once,
// passes it through the caller's wire transform (delivery's line folder,
// so the folded form is what is hashed) into the hash, and returns the
// DKIM-Signature field that the caller writes in front of the second pass,
// the one that goes to the next hop. Only the header section is held in
// memory; the body is hashed as it streams.
//
// Invariants:
//
//   - The key chosen is the one of the From header's domain (or of its
//     closest parent domain that has one: relaxed DMARC alignment), else
//     the fallback the caller names (a route's), else the Signer's own
//     fallback; no key means the message goes unsigned, never held back.
//   - A private key is never logged or printed; only its domain, selector
//     and public half are.
//   - Key files are written with mode 0600 and never overwritten unless
//     asked to.
package dkim
