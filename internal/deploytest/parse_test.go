package deploytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryFileParses decodes every YAML document and every JSON file
// under deploy/. yaml.v3 also rejects duplicate keys, which other tools
// silently resolve to the last one.
func TestEveryFileParses(t *testing.T) {
	root := deployPath(t)
	var nYAML, nJSON int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		switch ext := strings.ToLower(filepath.Ext(path)); ext {
		case ".yaml", ".yml":
			nYAML++
			docs, err := yamlDocs(readFile(t, path))
			if err != nil {
				t.Errorf("%s: %v", rel, err)
			} else if len(docs) == 0 {
				t.Errorf("%s: no YAML document", rel)
			}
		case ".json":
			nJSON++
			dec := json.NewDecoder(bytes.NewReader(readFile(t, path)))
			var v any
			if err := dec.Decode(&v); err != nil {
				t.Errorf("%s: %v", rel, err)
			} else if err := dec.Decode(&v); !errors.Is(err, io.EOF) {
				t.Errorf("%s: data after the JSON value", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A walk that finds nothing must not pass silently.
	if nYAML < 15 || nJSON < 1 {
		t.Errorf("found %d YAML and %d JSON files under %s; expected the whole deploy tree", nYAML, nJSON, root)
	}
}
