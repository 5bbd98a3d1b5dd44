package contracts

import (
	"strings"
	"testing"
)

func TestLineMeter(t *testing.T) {
	cases := []struct {
		msg  string
		want int
	}{
		{"Subject: x\r\n\r\nab\r\nabcd\r\n", 4},
		{"Subject: " + strings.Repeat("h", 5000) + "\r\n\r\nab\r\n", 2}, // headers do not count
		{"Subject: x\r\n\r\n" + strings.Repeat("b", 1000), 1000},        // unfinished last line
		{"Subject: x\r\n\r\n\r\n\r\n", 0},
		{"Subject: x\r\nno body\r\n", 0},
		{"Subject: x\n\nbare\nlf\n", 4},
		{"Subject: x\r\n\r\nab\rcd\r\n", 5}, // a bare CR is part of the line here
	}
	for _, tc := range cases {
		if got := MeasureLines([]byte(tc.msg)); got != tc.want {
			t.Errorf("%.30q: %d, want %d", tc.msg, got, tc.want)
		}
		// Streamed in pieces, the answer is the same.
		for _, n := range []int{1, 2, 3, 7} {
			var m LineMeter
			for p := []byte(tc.msg); len(p) > 0; {
				k := min(n, len(p))
				m.Write(p[:k])
				p = p[k:]
			}
			if m.Max() != tc.want {
				t.Errorf("%.30q in pieces of %d: %d, want %d", tc.msg, n, m.Max(), tc.want)
			}
		}
	}
}

func FuzzLineMeter(f *testing.F) {
	f.Add([]byte("a: b\r\n\r\nxx\r\n"), 1)
	f.Add([]byte("\r\n\r\r\n\n"), 2)
	f.Fuzz(func(t *testing.T, msg []byte, n int) {
		if n <= 0 {
			t.Skip()
		}
		var m LineMeter
		for p := msg; len(p) > 0; {
			k := min(n, len(p))
			m.Write(p[:k])
			p = p[k:]
		}
		if m.Max() != MeasureLines(msg) {
			t.Fatalf("in pieces of %d: %d, whole: %d", n, m.Max(), MeasureLines(msg))
		}
	})
}
