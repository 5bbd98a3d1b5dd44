package fault

import (
	"os"
	"testing"

	"github.com/jetrelay/jetrelay/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.CleanupBinary()
	os.Exit(code)
}
