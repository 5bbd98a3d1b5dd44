package pickup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// badmail moves a file that cannot be queued to the badmail folder, with
// a .reason file beside it (IIS writes <name>.BDR; ours is text). The
// reason is written first: a crash in between leaves the file in the
// pickup directory, where it is found bad again. Nothing is ever deleted
// here; a file that cannot be moved stays where it is.
func (w *Watcher) badmail(log zerolog.Logger, name, qid, reason string) {
	dest := w.badmailName(name)
	text := fmt.Sprintf("%s\r\n\r\nfile: %s\r\nmoved: %s\r\nid: %s\r\n",
		reason, filepath.Join(w.opts.Dir, name), time.Now().UTC().Format(time.RFC3339), qid)
	if err := os.WriteFile(dest+".reason", []byte(text), 0o660); err != nil {
		log.Error().Err(err).Str("reason", reason).Msg("pickup file is not a message, and its reason cannot be written to the badmail folder; it stays")
		return
	}
	if err := move(filepath.Join(w.opts.Dir, name), dest); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			_ = os.Remove(dest + ".reason") // taken by another process meanwhile
			return
		}
		log.Error().Err(err).Str("reason", reason).Msg("pickup file is not a message and cannot be moved to the badmail folder; it stays")
		return
	}
	w.forget(name)
	w.metrics.badmail.Inc()
	log.Warn().Str("reason", reason).Str("badmail", dest).Msg("pickup file moved to the badmail folder")
}

// badmailName is a free name in the badmail folder for name: the name
// itself, or with a number before the extension.
func (w *Watcher) badmailName(name string) string {
	ext := filepath.Ext(name)
	base := strings.TrimSuffix(name, ext)
	for i := 0; ; i++ {
		n := name
		if i > 0 {
			n = base + "-" + strconv.Itoa(i) + ext
		}
		p := filepath.Join(w.opts.BadmailDir, n)
		_, err1 := os.Lstat(p)
		_, err2 := os.Lstat(p + ".reason")
		if errors.Is(err1, fs.ErrNotExist) && errors.Is(err2, fs.ErrNotExist) || i >= 10000 {
			return p
		}
	}
}

// move renames a file, or copies and then removes it when the folders are
// on different file systems.
func move(from, to string) error {
	err := os.Rename(from, to)
	if err == nil {
		return nil
	}
	if _, serr := os.Stat(from); serr != nil {
		return serr
	}
	in, oerr := os.Open(from)
	if oerr != nil {
		return oerr
	}
	defer in.Close()
	out, cerr := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o660)
	if cerr != nil {
		return fmt.Errorf("%v; copy: %w", err, cerr)
	}
	if _, cerr = io.Copy(out, in); cerr == nil {
		cerr = out.Sync()
	}
	if e := out.Close(); cerr == nil {
		cerr = e
	}
	if cerr != nil {
		_ = os.Remove(to)
		return fmt.Errorf("%v; copy: %w", err, cerr)
	}
	in.Close()
	return os.Remove(from)
}

// sortCandidates orders files oldest first, then by name.
func sortCandidates(c []candidate) {
	sort.Slice(c, func(i, j int) bool {
		if !c[i].look.mtime.Equal(c[j].look.mtime) {
			return c[i].look.mtime.Before(c[j].look.mtime)
		}
		return c[i].name < c[j].name
	})
}
