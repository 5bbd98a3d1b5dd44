package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progressMin is the smallest number of records a command shows a
// progress bar for.
const progressMin = 10

// progress is a bar on the operator's terminal while a command works
// through many records. It is drawn only when its writer is a terminal,
// so that scripts, pipes and tests never see it.
type progress struct {
	bar *progressbar.ProgressBar
}

// newProgress starts a bar of total steps on w when w is a terminal and
// total is at least progressMin; otherwise it does nothing.
func newProgress(w io.Writer, total int, what string) *progress {
	if total < progressMin || !isTerminal(w) {
		return &progress{}
	}
	return &progress{bar: progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionUseANSICodes(true),
	)}
}

// step counts one record done.
func (p *progress) step() {
	if p.bar != nil {
		_ = p.bar.Add(1)
	}
}

// printf writes a line to w without tearing the bar: the bar is cleared
// first and drawn again at the next step.
func (p *progress) printf(w io.Writer, format string, args ...any) {
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	fmt.Fprintf(w, format, args...)
}

// done removes the bar.
func (p *progress) done() {
	if p.bar != nil {
		_ = p.bar.Finish()
		_ = p.bar.Clear()
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}
