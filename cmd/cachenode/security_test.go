package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExposureNeedsASecret: a port beyond loopback without the secret
// that guards it is a one-line usage error naming the field and the fix,
// unless insecure is given (flag, environment or file).
func TestExposureNeedsASecret(t *testing.T) {
	key := writeFile(t, "key", strings.Repeat("ab", 32))
	token := writeFile(t, "token", "t0ken\n")
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		field string // "" when the config is accepted
	}{
		{"the defaults", nil, nil, "gossip: 0.0.0.0:7946"},
		{"gossip open", []string{"--gossip", "0.0.0.0:0", "--peer", "127.0.0.1:0"}, nil, "gossip: 0.0.0.0:0"},
		{"peer open", []string{"--gossip", "127.0.0.1:0", "--peer", "10.1.2.3:7947"}, nil, "peer: 10.1.2.3:7947"},
		{"http open, no token", []string{"--gossip-key", key, "--http", "0.0.0.0:8080"}, nil, "http: 0.0.0.0:8080"},
		{"all loopback", []string{"--gossip", "127.0.0.1:0", "--peer", "localhost:0"}, nil, ""},
		{"keyed, http on loopback", []string{"--gossip-key", key}, nil, ""},
		{"keyed, http open with a token", []string{"--gossip-key", key, "--http", "0.0.0.0:8080", "--admin-token-file", token}, nil, ""},
		{"resp open, no token", []string{"--gossip-key", key, "--resp", "0.0.0.0:6379"}, nil, "resp: 0.0.0.0:6379"},
		{"resp open via the environment", []string{"--gossip-key", key}, map[string]string{"CACHENODE_RESP": "10.0.0.1:6379"}, "resp: 10.0.0.1:6379"},
		{"keyed, resp on loopback", []string{"--gossip-key", key, "--resp", "127.0.0.1:6379"}, nil, ""},
		{"keyed, resp open with a token", []string{"--gossip-key", key, "--resp", "0.0.0.0:6379", "--admin-token-file", token}, nil, ""},
		{"--insecure", []string{"--insecure"}, nil, ""},
		{"CACHENODE_INSECURE", nil, map[string]string{"CACHENODE_INSECURE": "true"}, ""},
	} {
		env := func(k string) string { return tc.env[k] }
		rc, err := loadConfig(append([]string{"--name", "t", "--data="}, tc.args...), env, &bytes.Buffer{})
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if _, ok := err.(usageError); !ok || !strings.HasPrefix(msg, tc.field) || strings.Contains(msg, "\n") ||
			!strings.Contains(msg, "--insecure") || (!strings.Contains(msg, "keygen") && !strings.Contains(msg, "admin-token-file")) {
			t.Errorf("%s: got %v (config %+v), want a one-line usage error starting %q with the fix", tc.name, err, rc, tc.field)
		}
	}
	rc, err := loadConfig([]string{"--name", "t", "--data=", "--http", "0.0.0.0:0", "--insecure"}, noEnv, &bytes.Buffer{})
	if err != nil || !rc.Insecure || !rc.Node.Insecure || !rc.OpenHTTP {
		t.Errorf("--insecure with an open HTTP port: %+v %v", rc, err)
	}
	path := writeFile(t, "c.yaml", "name: t\ndata: ''\ninsecure: true\n")
	if rc, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{}); err != nil || !rc.Node.Insecure {
		t.Errorf("insecure: true in the file: %v", err)
	}
}

// TestGossipKeyFormats: keys are hex or base64 of 16, 24 or 32 bytes;
// several lines are a keyring, primary first; raw text is refused without
// being echoed.
func TestGossipKeyFormats(t *testing.T) {
	k16, k24, k32 := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 24), bytes.Repeat([]byte{3}, 32)
	for name, content := range map[string]string{
		"hex 16":        hex.EncodeToString(k16) + "\n",
		"hex 24":        hex.EncodeToString(k24) + "\n",
		"base64 32":     base64.StdEncoding.EncodeToString(k32),
		"raw base64 16": base64.RawStdEncoding.EncodeToString(k16),
		"url base64 24": base64.URLEncoding.EncodeToString(k24) + "\r\n",
	} {
		keys, err := readKeys(writeFile(t, "k", content))
		if err != nil || len(keys) != 1 || (len(keys[0]) != 16 && len(keys[0]) != 24 && len(keys[0]) != 32) {
			t.Errorf("%s: %v %v", name, keys, err)
		}
	}
	ring := "# rotation: new key first\n" + base64.StdEncoding.EncodeToString(k32) + "\n\n" + hex.EncodeToString(k16) + "\n"
	rc, err := loadConfig([]string{"--name", "t", "--data=", "--gossip-key", writeFile(t, "ring", ring)}, noEnv, &bytes.Buffer{})
	if err != nil || !bytes.Equal(rc.Node.GossipKey, k32) || len(rc.Node.GossipKeys) != 1 || !bytes.Equal(rc.Node.GossipKeys[0], k16) {
		t.Fatalf("keyring: %v %v", rc, err)
	}
	for name, content := range map[string]string{
		"raw text of 16":   "correcthorsebatt",
		"raw text of 32":   "this is my secret passphrase ok!",
		"raw binary of 32": string(bytes.Repeat([]byte{0xfe}, 32)),
		"hex of 20 bytes":  hex.EncodeToString(make([]byte, 20)),
		"empty":            "\n# nothing\n",
		"a bad second key": hex.EncodeToString(k16) + "\nhunter2hunter2hu\n",
		// Earlier versions read a file of exactly 16, 24 or 32 bytes as the
		// raw key: read as hex now, it would be another key, silently.
		"hex 16 without a newline":  hex.EncodeToString(k16),
		"raw binary with a newline": "\n" + string(bytes.Repeat([]byte{0xfe}, 31)),
	} {
		_, err := loadConfig([]string{"--name", "t", "--data=", "--gossip-key", writeFile(t, "k", content)}, noEnv, &bytes.Buffer{})
		if _, ok := err.(usageError); !ok || !strings.HasPrefix(err.Error(), "gossip-key:") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want a one-line gossip-key error", name, err)
			continue
		}
		if strings.Contains(err.Error(), "correcthorse") || strings.Contains(err.Error(), "passphrase") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error echoes the secret: %v", name, err)
		}
	}
}

// TestKeygen: keygen writes a new random 32-byte key in base64, mode 0600,
// that serve accepts, and never overwrites a file.
func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gossip.key")
	var out, errb bytes.Buffer
	if code := run([]string{"keygen", path}, &out, &errb); code != 0 {
		t.Fatalf("keygen: exit %d %s", code, errb.String())
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v, want mode 0600", st, err)
	}
	b, _ := os.ReadFile(path)
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != 32 {
		t.Fatalf("key %q: %d bytes, %v", b, len(k), err)
	}
	keys, err := readKeys(path)
	if err != nil || !bytes.Equal(keys[0], k) {
		t.Fatalf("serve does not read the key keygen wrote: %v", err)
	}
	errb.Reset()
	if code := run([]string{"keygen", path}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "exists") {
		t.Fatalf("keygen over an existing file: exit %d %q", code, errb.String())
	}
	if b2, _ := os.ReadFile(path); !bytes.Equal(b, b2) {
		t.Fatal("keygen overwrote the existing key")
	}
	out.Reset()
	if code := run([]string{"keygen", "-"}, &out, &errb); code != 0 {
		t.Fatalf("keygen -: exit %d", code)
	}
	if k2, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out.String())); err != nil || len(k2) != 32 || bytes.Equal(k2, k) {
		t.Fatalf("keygen - wrote %q (%v), want another 32-byte key", out.String(), err)
	}
	for _, args := range [][]string{{"keygen"}, {"keygen", "--force", path}, {"keygen", "--if-missing"}} {
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	// --if-missing keeps an existing file and makes the missing ones, each
	// with its own key.
	token := filepath.Join(dir, "admin.token")
	if code := run([]string{"keygen", "--if-missing", path, token}, &out, &errb); code != 0 {
		t.Fatalf("keygen --if-missing: exit %d %s", code, errb.String())
	}
	b3, _ := os.ReadFile(path)
	tok, _ := os.ReadFile(token)
	if !bytes.Equal(b, b3) || len(bytes.TrimSpace(tok)) != 44 || bytes.Equal(tok, b) {
		t.Fatalf("keygen --if-missing: key %q (was %q), token %q", b3, b, tok)
	}
}

// TestPeerTLSNeedsCA: tls.peer without ca is a config error; with it, the
// members' certificates are verified against the CA only, never the system
// roots.
func TestPeerTLSNeedsCA(t *testing.T) {
	cert, key, pool := selfSigned(t)
	path := writeFile(t, "c.yaml", "name: n\ndata: ''\ntls:\n  cert: "+cert+"\n  key: "+key+"\n  peer: true\n")
	_, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{})
	if _, ok := err.(usageError); !ok || !strings.HasPrefix(err.Error(), "tls.ca: required") {
		t.Fatalf("tls.peer without ca: %v", err)
	}
	path = writeFile(t, "c.yaml", "name: n\ndata: ''\ntls:\n  cert: "+cert+"\n  key: "+key+"\n  ca: "+cert+"\n  peer: true\n")
	rc, err := loadConfig([]string{"--config", path}, noEnv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !rc.Node.PeerTLS.ClientCAs.Equal(pool) || !rc.Node.PeerTLS.RootCAs.Equal(pool) {
		t.Fatal("the peer TLS pools are not exactly the configured CA")
	}
	if sys, err := x509.SystemCertPool(); err == nil && rc.Node.PeerTLS.ClientCAs.Equal(sys) {
		t.Fatal("client certificates are verified against the system roots")
	}
}

// FuzzReadKeys: any key file gives keys of 16, 24 or 32 bytes or an error
// that does not echo its lines.
func FuzzReadKeys(f *testing.F) {
	f.Add(strings.Repeat("ab", 16))
	f.Add("# c\n" + base64.StdEncoding.EncodeToString(make([]byte, 32)) + "\n\n" + hex.EncodeToString(make([]byte, 24)))
	f.Add("correcthorsebatterystaple")
	f.Add("\x00\xff\n\r\n")
	f.Fuzz(func(t *testing.T, content string) {
		path := filepath.Join(t.TempDir(), "k")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		keys, err := readKeys(path)
		if err != nil {
			for _, line := range strings.Split(content, "\n") {
				if l := strings.TrimSpace(line); len(l) >= 16 && strings.Contains(err.Error(), l) {
					t.Fatalf("the error echoes a line of the file: %v", err)
				}
			}
			return
		}
		if len(keys) == 0 {
			t.Fatal("no key and no error")
		}
		for _, k := range keys {
			if n := len(k); n != 16 && n != 24 && n != 32 {
				t.Fatalf("a key of %d bytes", n)
			}
		}
	})
}
