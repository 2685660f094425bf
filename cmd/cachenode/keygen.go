package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// keygen writes a new random 32-byte key, base64 on one line, to each new
// FILE, mode 0600 ("-" writes to stdout). It never overwrites a file:
// losing the key in use would cut the node off its cluster. With
// --if-missing an existing file is kept and not an error, so that a
// deployment can run keygen at every start (deploy/docker-compose.yml).
// The same key makes a good admin token.
func keygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ifMissing := fs.Bool("if-missing", false, "keep an existing FILE (exit 0) instead of failing")
	if err := fs.Parse(args); err != nil || fs.NArg() == 0 {
		fmt.Fprintln(stderr, "cachenode: usage: cachenode keygen [--if-missing] FILE... (new files, mode 0600; - writes to stdout)")
		return 2
	}
	for _, path := range fs.Args() {
		if code := writeKey(path, *ifMissing, stdout, stderr); code != 0 {
			return code
		}
	}
	return 0
}

func writeKey(path string, ifMissing bool, stdout, stderr io.Writer) int {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		fmt.Fprintln(stderr, "cachenode: keygen: "+err.Error())
		return 1
	}
	line := base64.StdEncoding.EncodeToString(key) + "\n"
	if path == "-" {
		if _, err := io.WriteString(stdout, line); err != nil {
			return 1
		}
		return 0
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrExist) && ifMissing:
			fmt.Fprintf(stdout, "%s exists: kept\n", path)
			return 0
		case errors.Is(err, fs.ErrExist):
			fmt.Fprintf(stderr, "cachenode: keygen: %s exists: not overwritten (to rotate keys, see docs/SECURITY.md)\n", path)
		default:
			fmt.Fprintln(stderr, "cachenode: keygen: "+oneLineString(err.Error()))
		}
		return 1
	}
	_, err = f.WriteString(line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		fmt.Fprintln(stderr, "cachenode: keygen: "+oneLineString(err.Error()))
		return 1
	}
	fmt.Fprintf(stdout, "wrote a new random 32-byte key to %s\n", path)
	return 0
}
