// Command cachenode runs a node of a cachenode cluster: workers declared in
// a YAML config fill from HTTP origins, clients read and invalidate over
// the HTTP API.
//
//	cachenode [serve] [flags]        run a node (the default command)
//	cachenode demo                   3 nodes + a demo origin in one process, prints URLs to try
//	cachenode ring   --http ADDR     print the ring of a running node as a table
//	cachenode keygen FILE            write a new random gossip key to FILE (never overwrites)
//	cachenode version
//
// Bad flags or config exit 2 with a one-line error naming the field.
// SIGINT or SIGTERM shuts down gracefully and exits 0; a second signal exits
// at once.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
)

// flagHelp is what -h answers; the command then exits 0.
var flagHelp = flag.ErrHelp

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args, stderr)
	case "demo":
		return demo(args, stdout, stderr)
	case "ring":
		return ringCmd(args, stdout, stderr)
	case "keygen":
		return keygen(args, stdout, stderr)
	case "version":
		if len(args) > 0 {
			fmt.Fprintln(stderr, "cachenode: version takes no arguments")
			return 2
		}
		fmt.Fprintf(stdout, "cachenode %s %s %s/%s\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "cachenode: unknown command %q (want serve, demo, ring, keygen or version)\n", cmd)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  cachenode [serve] [flags]        run a node (the default command; cachenode serve -h lists the flags)
  cachenode demo                   3 nodes + a demo origin in one process, prints URLs to try
  cachenode ring --http ADDR       print the ring of a running node as a table
  cachenode keygen FILE            write a new random gossip key to FILE (base64, mode 0600; never overwrites)
  cachenode version
`)
}

// version is the module version the binary was built from, or its VCS
// revision, or "devel".
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel-" + rev
}

func oneLineString(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
