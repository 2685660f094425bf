package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// keygen writes a new random 32-byte gossip key, base64 on one line, to a
// new file of mode 0600 (or to stdout for "-"). It never overwrites a file:
// losing the key in use would cut the node off its cluster.
func keygen(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || args[0] == "" || (len(args[0]) > 1 && args[0][0] == '-') {
		fmt.Fprintln(stderr, "cachenode: usage: cachenode keygen FILE (a new file; - writes to stdout)")
		return 2
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		fmt.Fprintln(stderr, "cachenode: keygen: "+err.Error())
		return 1
	}
	line := base64.StdEncoding.EncodeToString(key) + "\n"
	path := args[0]
	if path == "-" {
		_, err := io.WriteString(stdout, line)
		if err != nil {
			return 1
		}
		return 0
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			fmt.Fprintf(stderr, "cachenode: keygen: %s exists: not overwritten (to rotate keys, see docs/SECURITY.md)\n", path)
		} else {
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
	fmt.Fprintf(stdout, "wrote a new 32-byte gossip key to %s (give it with --gossip-key %s or gossip_key: %s)\n", path, path, path)
	return 0
}
