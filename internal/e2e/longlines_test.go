package e2e

import (
	"bytes"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jetrelay/jetrelay/internal/app"
	"github.com/jetrelay/jetrelay/internal/testenv"
)

// Lines longer than 998 octets never reach the next hop (RFC 5321
// §4.5.3.1.6): through `serve` to a destination that refuses any longer
// line with 500, a text body is re-encoded as quoted-printable, a
// multipart body has its lines broken (dots stuffed at every break), a
// long header is folded, and the text survives; bounces return headers
// only over bounce_size_limit and are folded themselves.
func TestLongLinesFolded(t *testing.T) {
	sink := testenv.NewSink(t, testenv.SinkOptions{MaxLineLength: 998})
	sink.OnRcpt(func(r string) *smtp.SMTPError {
		if strings.HasPrefix(r, "bounce") {
			return smtpErr(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
		}
		return nil
	})
	cfg := smarthostConfig(t, sink)
	cfg.HTTP.Listen = "127.0.0.1:0"
	relay := testenv.StartRelay(t, cfg, app.Options{})

	words := func(n int, w string) string { return strings.Repeat(w, n/len(w)+1)[:n] }
	longHeader := "X-Long: " + words(2992, "alert-id=42; ") // a 3 000-octet line

	// A text body: a line of 100 000 octets, lines of 989…8 192 octets
	// ending in '.', some starting with one.
	var text bytes.Buffer
	text.WriteString("Start of the alert.\r\n")
	text.WriteString(words(100000, "BizTalk BAM alert text ") + "\r\n")
	for n := 989; n <= 8192; n += 401 {
		text.WriteString(words(n-1, "x.") + ".\r\n")
		text.WriteString("." + words(n-2, "y ") + ".\r\n")
	}
	text.WriteString("End of the alert.\r\n")

	// A multipart body with the same lines in a text part and a base64
	// attachment that was never wrapped.
	var multi bytes.Buffer
	multi.WriteString("This is a multi-part message in MIME format.\r\n--b1\r\nContent-Type: text/plain\r\n\r\n")
	multi.Write(text.Bytes())
	multi.WriteString("--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	multi.WriteString(words(100000, "QUJDREVGR0g=") + "\r\n--b1--\r\n")

	msg := func(subject, extra string, body []byte) []byte {
		return []byte(fmt.Sprintf("From: <app@client.test>\r\nTo: <rcpt@example.test>\r\nSubject: %s\r\n"+
			"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <%s@client.test>\r\n%s\r\n%s\r\n\r\n%s",
			subject, strings.ReplaceAll(subject, " ", "-"), longHeader, extra, body))
	}
	sent := map[string][]byte{
		"plain":     msg("plain", "X-Mailer: Database Mail", text.Bytes()),
		"multipart": msg("multipart", "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1", multi.Bytes()),
	}
	for _, subject := range []string{"plain", "multipart"} {
		if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{"rcpt@example.test"}, Data: sent[subject]}); err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
	}
	// Bounces: one over the 50 000-octet cap, one under it.
	big := msg("big bounce", "X-Mailer: Database Mail", []byte("BIG-BODY-MARKER\r\n"+words(60000, "z ")+"\r\n"))
	small := msg("small bounce", "X-Mailer: Database Mail", []byte("SMALL-BODY-MARKER "+words(5000, "w ")+"\r\n"))
	for rcpt, data := range map[string][]byte{"bounce-big@example.test": big, "bounce-small@example.test": small} {
		if _, err := testenv.Send(relay.Addr(), testenv.Mail{From: "app@client.test", To: []string{rcpt}, Data: data}); err != nil {
			t.Fatalf("%s: %v", rcpt, err)
		}
	}

	sink.WaitFor(t, 4, 60*time.Second)
	relay.WaitQueueEmpty(30 * time.Second)
	if dls := deadLetters(t, relay); len(dls) != 2 {
		t.Fatalf("%d dead letters, want the two bounced messages: %+v", len(dls), dls)
	}
	got := map[string]*testenv.Message{}
	for _, m := range sink.Messages() {
		switch {
		case bytes.Contains(m.Data, []byte("Subject: plain\r\n")):
			got["plain"] = m
		case bytes.Contains(m.Data, []byte("Subject: multipart\r\n")):
			got["multipart"] = m
		case bytes.Contains(m.Data, []byte("Undelivered Mail")) && bytes.Contains(m.Data, []byte("bounce-big@")):
			got["big"] = m
		case bytes.Contains(m.Data, []byte("Undelivered Mail")) && bytes.Contains(m.Data, []byte("bounce-small@")):
			got["small"] = m
		}
	}
	if len(got) != 4 {
		t.Fatalf("the sink got %d of the 4 messages", len(got))
	}
	unfold := strings.NewReplacer("\r\n ", " ", "\r\n\t", "\t").Replace

	// The text body came as quoted-printable and decodes to what was sent.
	plain := got["plain"].AfterReceived()
	hdr, body, _ := bytes.Cut(plain, []byte("\r\n\r\n"))
	if !strings.Contains(string(hdr), "Content-Transfer-Encoding: quoted-printable") {
		t.Errorf("text body not re-encoded; headers:\n%s", hdr)
	}
	if !strings.Contains(unfold(string(hdr)), longHeader+"\r\n") {
		t.Errorf("the long header does not unfold to what was sent")
	}
	decoded, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
	if err != nil || !bytes.Equal(decoded, text.Bytes()) {
		t.Errorf("decoded text differs (%v): %d octets, sent %d", err, len(decoded), text.Len())
	}

	// The multipart body had its lines broken: without line breaks and
	// folding whitespace, the text is the same.
	squeeze := func(b []byte) string { return strings.NewReplacer("\r\n", "", " ", "").Replace(string(b)) }
	if squeeze(got["multipart"].AfterReceived()) != squeeze(sent["multipart"]) {
		t.Errorf("the multipart message did not survive breaking")
	}

	// Bounces: over the cap only the headers come back; under it the whole
	// message, re-encoded as it would have been sent.
	bigDSN := string(got["big"].Data)
	if !strings.Contains(bigDSN, "Content-Type: text/rfc822-headers") || strings.Contains(bigDSN, "BIG-BODY-MARKER") ||
		!strings.Contains(bigDSN, "Subject: big bounce") {
		t.Errorf("the bounce of a message over bounce_size_limit is not headers only:\n%.3000s", bigDSN)
	}
	smallDSN := string(got["small"].Data)
	if !strings.Contains(smallDSN, "Content-Type: message/rfc822") || !strings.Contains(smallDSN, "SMALL-BODY-MARKER") ||
		!strings.Contains(smallDSN, "Content-Transfer-Encoding: quoted-printable") {
		t.Errorf("the bounce of a small message does not return it, re-encoded:\n%.3000s", smallDSN)
	}

	for _, how := range []string{"quoted_printable", "broken"} {
		if m := relay.Metric(`jetrelay_messages_folded_total{how="` + how + `"}`); m == "" || strings.HasSuffix(m, " 0") {
			t.Errorf("jetrelay_messages_folded_total{how=%q}: %q", how, m)
		}
	}
}
