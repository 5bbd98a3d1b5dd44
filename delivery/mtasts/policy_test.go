package mtasts

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name   string
		text   string
		mode   Mode
		maxAge time.Duration
		mx     []string
		err    string // the error contains this ("" no error)
	}{
		{"RFC example", "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
			ModeEnforce, 604800 * time.Second, []string{"mail.example.com", "*.example.net", "backupmx.example.com"}, ""},
		{"LF line ends, no final newline", "version: STSv1\nmode: testing\nmx: MX.Example.COM.\nmax_age: 86400", ModeTesting, 24 * time.Hour, []string{"mx.example.com"}, ""},
		{"spaces and tabs around the value", "version:STSv1\nmode:\t enforce \t\nmx:  a.example\nmax_age: 60\n", ModeEnforce, time.Minute, []string{"a.example"}, ""},
		{"none without mx", "version: STSv1\nmode: none\nmax_age: 0\n", ModeNone, 0, nil, ""},
		{"unknown keys ignored", "version: STSv1\nmode: enforce\nfoo: bar\nx-ext.1: y\nmx: a.example\nmax_age: 10\n", ModeEnforce, 10 * time.Second, []string{"a.example"}, ""},
		{"first of a repeated key", "version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 10\n", ModeTesting, 10 * time.Second, []string{"a.example"}, ""},
		{"max_age capped at a year", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n", ModeEnforce, MaxAgeLimit, []string{"a.example"}, ""},
		{"blank lines", "\nversion: STSv1\n\nmode: enforce\nmx: a.example\nmax_age: 10\n\n", ModeEnforce, 10 * time.Second, []string{"a.example"}, ""},
		{"no version", "mode: enforce\nmx: a.example\nmax_age: 10\n", "", 0, nil, "not STSv1"},
		{"wrong version", "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 10\n", "", 0, nil, "not STSv1"},
		{"no mode", "version: STSv1\nmx: a.example\nmax_age: 10\n", "", 0, nil, "no mode"},
		{"bad mode", "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 10\n", "", 0, nil, "not enforce, testing or none"},
		{"no max_age", "version: STSv1\nmode: enforce\nmx: a.example\n", "", 0, nil, "max_age"},
		{"negative max_age", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", "", 0, nil, "max_age"},
		{"max_age too long", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n", "", 0, nil, "max_age"},
		{"enforce without mx", "version: STSv1\nmode: enforce\nmax_age: 10\n", "", 0, nil, "no mx"},
		{"line without colon", "version: STSv1\nmode enforce\nmx: a.example\nmax_age: 10\n", "", 0, nil, "line 2"},
		{"bad field name", "version: STSv1\nmo de: enforce\n", "", 0, nil, "bad field name"},
		{"wildcard inside", "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 10\n", "", 0, nil, "bad mx pattern"},
		{"empty label", "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 10\n", "", 0, nil, "bad mx pattern"},
		{"HTML instead of a policy", "<html><body>Not found</body></html>", "", 0, nil, "line 1"},
		{"too large", "version: STSv1\n" + strings.Repeat("x: y\n", MaxPolicySize/5+1), "", 0, nil, "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse(tc.text)
			if tc.err != "" {
				if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Parse = %+v, %v; want an ErrInvalid containing %q", p, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Mode != tc.mode || p.MaxAge != tc.maxAge || strings.Join(p.MX, ",") != strings.Join(tc.mx, ",") || p.Text != tc.text {
				t.Fatalf("Parse = mode %q max_age %v mx %q; want %q %v %q", p.Mode, p.MaxAge, p.MX, tc.mode, tc.maxAge, tc.mx)
			}
		})
	}
}

// RFC 8461 §4.1: a wildcard stands for exactly one leftmost label.
func TestMatchPattern(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"mail.example.com", "mail.example.com", true},
		{"mail.example.com", "MAIL.Example.Com.", true},
		{"mail.example.com.", "mail.example.com", true},
		{"mail.example.com", "mail2.example.com", false},
		{"mail.example.com", "example.com", false},
		{"*.example.com", "mx1.example.com", true},
		{"*.example.com", "MX1.EXAMPLE.COM.", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "a.b.example.com", false},
		{"*.example.com", ".example.com", false},
		{"*.example.com", "mx1.example.net", false},
		{"*.example.com", "mx1.badexample.com", false},
		{"*.mail.example.com", "mx.mail.example.com", true},
		{"*.mail.example.com", "mx.example.com", false},
		{"*.example.com", "", false},
		{"", "", false},
	}
	for _, tc := range tests {
		if got := MatchPattern(tc.pattern, tc.host); got != tc.want {
			t.Errorf("MatchPattern(%q, %q) = %v, want %v", tc.pattern, tc.host, got, tc.want)
		}
	}
	p := &Policy{MX: []string{"mail.example.com", "*.example.net"}}
	for host, want := range map[string]bool{"mail.example.com": true, "x.example.net": true, "example.net": false, "mail.example.org": false} {
		if p.Matches(host) != want {
			t.Errorf("Matches(%q) = %v, want %v", host, !want, want)
		}
	}
}

func TestParseTXT(t *testing.T) {
	tests := []struct {
		name    string
		records []string
		id      string
		err     error
	}{
		{"RFC example", []string{"v=STSv1; id=20160831085700Z;"}, "20160831085700Z", nil},
		{"no trailing semicolon, other records", []string{"v=spf1 -all", "v=STSv1;id=abc"}, "abc", nil},
		{"extension fields", []string{"v=STSv1; foo=bar; id=X1"}, "X1", nil},
		{"spaces", []string{"v=STSv1 ;  id=a1 ; "}, "a1", nil},
		{"none", nil, "", ErrNoRecord},
		{"only other records", []string{"google-site-verification=x"}, "", ErrNoRecord},
		{"two STS records", []string{"v=STSv1; id=a", "v=STSv1; id=b"}, "", ErrInvalid},
		{"no id", []string{"v=STSv1;"}, "", ErrInvalid},
		{"id too long", []string{"v=STSv1; id=" + strings.Repeat("a", 33)}, "", ErrInvalid},
		{"id with punctuation", []string{"v=STSv1; id=2016-08-31"}, "", ErrInvalid},
		{"v not first", []string{"v=STSv1x; id=a"}, "", ErrInvalid},
		{"field without =", []string{"v=STSv1; id"}, "", ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := ParseTXT(tc.records)
			if id != tc.id || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("ParseTXT = %q, %v; want %q, %v", id, err, tc.id, tc.err)
			}
		})
	}
}

// FuzzParse: any input parses or is refused with ErrInvalid, without
// panicking; what parses has a mode, patterns that match themselves (a
// wildcard matches one label in its place), and a bounded max_age.
func FuzzParse(f *testing.F) {
	f.Add("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n")
	f.Add("version: STSv1\nmode: none\nmax_age: 0")
	f.Add("version: STSv1\nmode: testing\nmx: a\nmax_age: 99999999999")
	f.Add(":\n:\n")
	f.Fuzz(func(t *testing.T, text string) {
		p, err := Parse(text)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if p.Mode != ModeEnforce && p.Mode != ModeTesting && p.Mode != ModeNone {
			t.Fatalf("mode %q", p.Mode)
		}
		if p.MaxAge < 0 || p.MaxAge > MaxAgeLimit {
			t.Fatalf("max_age %v", p.MaxAge)
		}
		if p.Mode != ModeNone && len(p.MX) == 0 {
			t.Fatal("no mx")
		}
		for _, pat := range p.MX {
			host := pat
			if rest, ok := strings.CutPrefix(pat, "*."); ok {
				host = "x." + rest
			}
			if !p.Matches(host) {
				t.Fatalf("pattern %q does not match %q", pat, host)
			}
		}
	})
}

// FuzzParseTXT: any set of records gives an id of 1 to 32 letters and
// digits, or an error that is ErrNoRecord or ErrInvalid.
func FuzzParseTXT(f *testing.F) {
	f.Add("v=STSv1; id=20160831085700Z;", "v=spf1 -all")
	f.Add("v=STSv1;id=", "")
	f.Add("v=STSv1; id=a; id=b", "v=STSv1 ")
	f.Fuzz(func(t *testing.T, a, b string) {
		id, err := ParseTXT([]string{a, b})
		if err != nil {
			if !errors.Is(err, ErrNoRecord) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is neither ErrNoRecord nor ErrInvalid", err)
			}
			return
		}
		if len(id) < 1 || len(id) > 32 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
			t.Fatalf("id %q", id)
		}
	})
}
