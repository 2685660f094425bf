package httpapi

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cachenode/cachenode/node/client"
)

//go:embed admin.html
var adminHTML string

// newPageTemplate parses the admin page; each Server parses its own.
func newPageTemplate() *template.Template {
	return template.Must(template.New("admin").Funcs(template.FuncMap{
		"ago":   ago,
		"until": until,
		"ms": func(d time.Duration) string {
			return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
		},
		"bytes": humanBytes,
		"lag":   lagText,
		"pct": func(a, b int64) string {
			if b == 0 {
				return "–"
			}
			return strconv.FormatFloat(100*float64(a)/float64(b), 'f', 1, 64) + "%"
		},
	}).Parse(adminHTML))
}

// pageData is what the admin page shows.
type pageData struct {
	Self       string
	Ready      bool
	Insecure   bool // the node runs open to the network
	Version    string
	Uptime     string
	Partitions int
	Alive      int
	Entries    int
	Bytes      string
	Refresh    int
	Arcs       []arc
	Members    []pageMember
	Workers    []pageWorker
	Fills      []recentFill
	Invs       []recentInvalidation
	Records    []Record
	// MoreRecords: the node has more records than the page lists.
	MoreRecords bool
	// RecordsState is the state of the records store.
	RecordsState client.RecordsInfo
	// Sources are the change sources (sources.go), nil without any.
	Sources []SourceStatus
	Now     time.Time
}

type arc struct {
	D, Color, Title string
}

type pageMember struct {
	client.MemberInfo
	Color string
	Self  bool
	Pct   string
}

type pageWorker struct {
	WorkerInfo
	Reads                                     int64
	Wait, Tick, Expires, Relevance, Countdown string
}

// palette colours the owners, in the order of their names.
var palette = [...]string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"}

func colorOf(i int) string {
	if i < len(palette) {
		return palette[i]
	}
	// Beyond the palette: hues spread by the golden angle, at the
	// palette's saturation and lightness.
	h := float64((i*137)%360) / 60
	const c, l = 0.5, 0.55 // chroma and lightness
	x := c * (1 - math.Abs(math.Mod(h, 2)-1))
	var r, g, b float64
	switch int(h) {
	case 0:
		r, g = c, x
	case 1:
		r, g = x, c
	case 2:
		g, b = c, x
	case 3:
		g, b = x, c
	case 4:
		r, b = x, c
	default:
		r, b = c, x
	}
	m := l - c/2
	return fmt.Sprintf("#%02x%02x%02x", int((r+m)*255), int((g+m)*255), int((b+m)*255))
}

func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) {
	info := s.ringInfo()
	d := pageData{Self: info.Self, Ready: info.Ready, Insecure: s.insecure(), Version: strconv.FormatUint(info.Version, 16),
		Uptime: time.Since(s.started).Round(time.Second).String(), Partitions: info.PartitionCount,
		Entries: s.node.Cache().Len(), Bytes: humanBytes(int64(s.node.Cache().Bytes())), Now: time.Now()}
	if v := r.URL.Query().Get("refresh"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= 3600 {
			d.Refresh = n
		}
	}
	colors := map[string]string{}
	k := 0
	for _, m := range info.Members {
		pm := pageMember{MemberInfo: m, Self: m.Name == info.Self, Color: "#c8c8c8"}
		if m.State == "alive" {
			d.Alive++
			pm.Color = colorOf(k)
			colors[m.Name] = pm.Color
			k++
		}
		if info.PartitionCount > 0 {
			pm.Pct = strconv.FormatFloat(100*float64(m.Partitions)/float64(info.PartitionCount), 'f', 1, 64) + "%"
		}
		d.Members = append(d.Members, pm)
	}
	d.Arcs = ringArcs(info.Partitions, colors)
	for _, wk := range s.node.Cache().Workers() {
		wi := workerInfo(wk)
		p := wk.Policy()
		d.Workers = append(d.Workers, pageWorker{WorkerInfo: wi, Reads: wi.Stats.Hits + wi.Stats.Misses + wi.Stats.StaleHits,
			Wait: shortDur(p.Budget()), Tick: shortDur(p.Tick), Expires: shortDur(p.Expires),
			Relevance: shortDur(p.RelevanceExpires), Countdown: shortDur(p.DelayCountdown)})
	}
	d.RecordsState = s.recordsInfo()
	d.Sources = s.sourceStatuses()
	if recs, next, err := s.listRecords("", "", pageRecords); err == nil {
		d.Records, d.MoreRecords = recs, next != ""
	}
	d.Fills, d.Invs = s.metrics.recent()
	d.Fills, d.Invs = d.Fills[:min(len(d.Fills), pageRecent)], d.Invs[:min(len(d.Invs), pageRecent)]
	var buf bytes.Buffer
	if err := s.page.Execute(&buf, d); err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "cannot render the page: "+err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// The page has no script and loads nothing from elsewhere.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	w.Write(buf.Bytes())
}

// ringArcs draws every partition as a sector of an annulus centred at
// (180, 180), partition 0 at the top, clockwise.
func ringArcs(owners []string, colors map[string]string) []arc {
	const cx, cy, ro, ri = 180.0, 180.0, 170.0, 112.0
	n := len(owners)
	out := make([]arc, 0, n)
	pt := func(r, a float64) string {
		return strconv.FormatFloat(cx+r*math.Sin(a), 'f', 2, 64) + " " + strconv.FormatFloat(cy-r*math.Cos(a), 'f', 2, 64)
	}
	for i, o := range owners {
		a0 := 2 * math.Pi * float64(i) / float64(n)
		a1 := 2 * math.Pi * float64(i+1) / float64(n)
		c, ok := colors[o]
		if !ok {
			c = "#e0e0e0"
		}
		title := "partition " + strconv.Itoa(i) + " → " + o
		if o == "" {
			title = "partition " + strconv.Itoa(i) + ": no owner"
		}
		dd := "M" + pt(ro, a0) + " A" + fmt.Sprintf("%g %g 0 0 1 ", ro, ro) + pt(ro, a1) +
			" L" + pt(ri, a1) + " A" + fmt.Sprintf("%g %g 0 0 0 ", ri, ri) + pt(ri, a0) + " Z"
		out = append(out, arc{D: dd, Color: c, Title: title})
	}
	return out
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	d := time.Since(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h ago"
	}
	return t.Format("2006-01-02 15:04")
}

// How many records, fills and invalidations the page lists.
const (
	pageRecords = 8
	pageRecent  = 8
)

// until says how far t is, "in 5m", or how long ago it passed.
func until(t *time.Time) string {
	d := time.Until(*t)
	if d < 0 {
		return ago(*t)
	}
	return "in " + shortDur(d.Round(time.Second))
}

// shortDur writes d without zero units: 1h rather than 1h0m0s.
func shortDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func humanBytes(b int64) string {
	switch {
	case b < 1<<10:
		return strconv.FormatInt(b, 10) + " B"
	case b < 1<<20:
		return strconv.FormatFloat(float64(b)/(1<<10), 'f', 1, 64) + " KiB"
	case b < 1<<30:
		return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB"
	}
	return strconv.FormatFloat(float64(b)/(1<<30), 'f', 2, 64) + " GiB"
}
