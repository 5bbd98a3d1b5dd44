package mailhdr

import (
	"strings"
	"testing"
	"time"
)

func TestScan(t *testing.T) {
	msg := "Received: from a\r\n\tby b\r\nreceived: x\r\nMessage-ID: <x@y>\r\nDATE: now\r\nSubject: Received: no\r\n\r\nReceived: in body\r\n"
	f := Scan([]byte(msg))
	if f.Received != 2 || !f.MessageID || !f.Date || !f.Complete {
		t.Fatalf("%+v", f)
	}
	f = Scan([]byte("Subject: x\r\nFrom: a"))
	if f.Complete || f.MessageID || f.Date {
		t.Fatalf("partial header: %+v", f)
	}
}

func TestReceived(t *testing.T) {
	now := time.Date(2026, 11, 22, 18, 30, 0, 0, time.UTC)
	h := string(Received("sql01.corp", "10.1.2.3", "relay.example.com", "ESMTPS", "0KQ3H5XZ7M2P9RTA",
		"TLSv1.3 with cipher TLS_AES_128_GCM_SHA256", []string{"ops@example.com"}, now))
	want := "Received: from sql01.corp ([10.1.2.3])\r\n\tby relay.example.com (jetrelay) with ESMTPS id 0KQ3H5XZ7M2P9RTA\r\n" +
		"\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n\tfor <ops@example.com>; Sun, 22 Nov 2026 18:30:00 +0000\r\n"
	if h != want {
		t.Fatalf("got\n%q\nwant\n%q", h, want)
	}
	h = string(Received("evil\r\nX-Injected: 1 (x);", "10.1.2.3", "relay", "ESMTP", "ID", "", []string{"a@b", "c@d"}, now))
	if strings.Count(h, "\r\n") != 2 || strings.Contains(h, "for <") {
		t.Fatalf("HELO injection or recipient disclosure: %q", h)
	}
}

func TestReceivedLocal(t *testing.T) {
	at := time.Date(2026, 11, 22, 18, 30, 0, 0, time.UTC)
	h := string(ReceivedLocal("pickup file", "a b(c);\r\nX: y.eml", "relay.example.com", "0KQ3H5XZ7M2P9RTA", []string{"ops@example.com"}, at))
	want := "Received: by relay.example.com (jetrelay, from pickup file a_b_c____X:_y.eml)\r\n\twith local id 0KQ3H5XZ7M2P9RTA\r\n" +
		"\tfor <ops@example.com>; Sun, 22 Nov 2026 18:30:00 +0000\r\n"
	if h != want {
		t.Fatalf("got\n%q\nwant\n%q", h, want)
	}
}

func TestAppendMissing(t *testing.T) {
	at := time.Date(2026, 11, 22, 18, 30, 0, 0, time.UTC)
	tests := []struct {
		f    Facts
		want string
	}{
		{Facts{Complete: true}, "Message-ID: <QID@relay.test>\r\nDate: Sun, 22 Nov 2026 18:30:00 +0000\r\n"},
		{Facts{Complete: true, MessageID: true}, "Date: Sun, 22 Nov 2026 18:30:00 +0000\r\n"},
		{Facts{Complete: true, MessageID: true, Date: true}, ""},
		{Facts{}, ""}, // header section not seen whole
	}
	for _, tc := range tests {
		if got := string(AppendMissing(nil, tc.f, "QID", "relay.test", at)); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.f, got, tc.want)
		}
	}
}
