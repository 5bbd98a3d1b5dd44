package console

import (
	"html/template"
	"time"

	"github.com/jetrelay/jetrelay/internal/msgview"
)

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"ago": func(t, now time.Time) string { return msgview.Ago(t, now) },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Local().Format("2006-01-02 15:04:05")
	},
	"dur": func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return msgview.Ago(time.Unix(0, 0), time.Unix(0, 0).Add(d))
	},
	"orDash": func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	},
	"inc":  func(i int) int { return i + 1 },
	"div2": func(i int) int { return i / 2 },
}
