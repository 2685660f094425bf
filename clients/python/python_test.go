// Package python runs the tests of the Python package cachenode and its
// Django app (clients/python) from go test, so that scripts/test.sh and CI
// run them: three real cachenode processes, a Django origin on SQLite, and
// the seed README's example. They need Debian's python3-django (installed
// by scripts/test.sh); without it they skip, except in CI (CI=true), where
// they fail.
package python

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// python is Debian's interpreter: Debian's Django lives in its dist-packages.
const python = "/usr/bin/python3"

func TestPythonPackage(t *testing.T) {
	if err := exec.Command(python, "-c", "import django, sys; sys.exit(django.VERSION < (3, 2))").Run(); err != nil {
		msg := "python3-django (Django >= 3.2 for " + python + ") is missing: apt-get install -y python3-django (scripts/test.sh does as root)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	bin := filepath.Join(t.TempDir(), "cachenode")
	build := exec.Command("go", "build", "-o", bin, "./cmd/cachenode")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/cachenode: %v\n%s", err, out)
	}
	args := []string{"-m", "tests.run"}
	if testing.Verbose() {
		args = append(args, "-v")
	}
	cmd := exec.Command(python, args...)
	cmd.Env = append(os.Environ(), "CACHENODE_BIN="+bin, "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s -m tests.run (in clients/python): %v\n%s", python, err, out)
	}
	t.Logf("%s", out)
}
