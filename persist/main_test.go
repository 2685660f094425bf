package persist

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		// The crash test's child is killed mid-stream: no leak check.
		os.Exit(m.Run())
	}
	goleak.VerifyTestMain(m)
}
