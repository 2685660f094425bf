package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cachenode/cachenode/worker"
)

// chromium returns the path of a headless-capable Chromium, or skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium is not installed (apt-get install chromium; scripts/test.sh installs it as root): skipping the browser test of the admin page")
	return ""
}

// runChromium runs headless Chromium on url with extra flags and returns
// its stdout and stderr. The flags keep it off the network (this machine
// has none) and out of the user's profile.
func runChromium(t *testing.T, bin, url string, extra ...string) (string, string) {
	t.Helper()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--disable-default-apps", "--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0"}
	args = append(append(args, extra...), url)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	return stdout.String(), stderr.String()
}

// consoleErrors returns the lines of Chromium's log that report a console
// message, an uncaught error, a refused resource or a blocked one (CSP).
func consoleErrors(log string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, ":CONSOLE") || strings.Contains(line, "Uncaught") ||
			strings.Contains(line, "Content Security Policy") || strings.Contains(line, "Failed to load resource") {
			out = append(out, line)
		}
	}
	return out
}

// TestAdminPageInBrowser loads /admin/ of a three-node cluster in headless
// Chromium: the page renders with no console errors, and shows every
// member, the ring and the workers. With CACHENODE_ADMIN_SCREENSHOT=FILE it
// also writes a screenshot (docs/admin.png is made that way).
func TestAdminPageInBrowser(t *testing.T) {
	bin := chromium(t)
	db := newFooDB()
	ms := startCluster(t, 3, "", db)
	// Some traffic, so that the page has counters, fills, records and an
	// invalidation to show.
	for i, m := range ms {
		for _, q := range []string{"filtered?attr1=red", "filtered?attr1=blue", "filtered?attr1=green", "items?id=1", "items?id=2", "items?id=3&tag=a&tag=b"} {
			call(t, "GET", m.url+"/v1/cache/"+q, "", "")
		}
		for j := range 8 {
			call(t, "GET", fmt.Sprintf("%s/v1/cache/items?id=%d", m.url, 10+8*i+j), "", "")
		}
	}
	for i := 0; ; i++ { // a failing fill on n1, whose page is checked
		args := worker.Args{"fail": "1", "id": fmt.Sprint(i)}
		if k, _ := worker.KeyOf("items", args); ms[0].node.Owner(k) == "n1" {
			call(t, "GET", ms[0].url+"/v1/cache/items?fail=1&id="+fmt.Sprint(i), "", "")
			break
		}
	}
	call(t, "POST", ms[0].url+"/v1/invalidate", "", `{"model":"Foo","changes":[{"op":"update","old":{"attr1":"red"},"new":{"attr1":"blue"}}]}`)
	call(t, "POST", ms[0].url+"/v1/invalidate", "", `{"label":"items","args":{"id":"1"}}`)

	page := ms[0].url + "/admin/"
	dom, log := runChromium(t, bin, page, "--dump-dom")
	if errs := consoleErrors(log); len(errs) > 0 {
		t.Errorf("console errors on %s:\n%s", page, strings.Join(errs, "\n"))
	}
	if !strings.Contains(dom, "<svg") {
		t.Fatalf("no ring drawn; DOM:\n%s", dom)
	}
	if n := strings.Count(dom, "<path "); n != 271 {
		t.Errorf("the ring has %d partitions drawn, want 271", n)
	}
	members := regexp.MustCompile(`(?s)<section class="card" id="members">.*?</section>`).FindString(dom)
	for _, m := range ms {
		name := m.node.Name()
		if !strings.Contains(members, "<b>"+name+"</b>") || !strings.Contains(members, m.srv.Listener.Addr().String()) {
			t.Errorf("the members table does not show %s", name)
		}
	}
	if strings.Count(members, ">alive<") != 3 {
		t.Errorf("the members table does not show 3 alive members")
	}
	for _, want := range []string{"<b>filtered</b>", "<b>items</b>", "Recent fills", "Recent invalidations", "model Foo", "the database is down"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page does not show %q", want)
		}
	}
	for _, tag := range []string{"<script", "<link rel=\"stylesheet\"", "<img src=\"http"} {
		if strings.Contains(dom, tag) {
			t.Errorf("the page loads %s", tag)
		}
	}

	if out := os.Getenv("CACHENODE_ADMIN_SCREENSHOT"); out != "" {
		abs, err := filepath.Abs(out)
		if err != nil {
			t.Fatal(err)
		}
		runChromium(t, bin, page, "--hide-scrollbars", "--window-size=1480,1250", "--screenshot="+abs)
		if st, err := os.Stat(abs); err != nil || st.Size() == 0 {
			t.Fatalf("no screenshot at %s: %v", abs, err)
		}
		t.Logf("screenshot written to %s", abs)
	}
}

// TestBrowserSeesConsoleErrors proves that the console check above is not
// vacuous: a page with a script error is reported.
func TestBrowserSeesConsoleErrors(t *testing.T) {
	bin := chromium(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(`<!doctype html><p>x</p><script>throw new Error("boom")</script>`))
	}))
	defer srv.Close()
	_, log := runChromium(t, bin, srv.URL, "--dump-dom")
	if errs := consoleErrors(log); len(errs) == 0 || !strings.Contains(strings.Join(errs, "\n"), "boom") {
		t.Errorf("a script error was not seen in Chromium's log:\n%s", log)
	}
}
