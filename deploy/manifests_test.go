package deploy_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// object is one parsed YAML document.
type object = map[string]any

// at walks a path of map keys and list indexes (as strings) through v.
func at(v any, path ...string) any {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func str(v any, path ...string) string {
	s, _ := at(v, path...).(string)
	return s
}

func list(v any, path ...string) []any {
	l, _ := at(v, path...).([]any)
	return l
}

// manifests parses every document of deploy/k8s/*.yaml.
func manifests(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/k8s: %v", err)
	}
	var out []object
	for _, f := range files {
		r, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(r)
		for {
			var o object
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o == nil {
				continue
			}
			if str(o, "apiVersion") == "" || str(o, "kind") == "" || str(o, "metadata", "name") == "" {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", f)
			}
			out = append(out, o)
		}
		r.Close()
	}
	return out
}

func find(objs []object, kind string, pred func(object) bool) []object {
	var out []object
	for _, o := range objs {
		if str(o, "kind") == kind && (pred == nil || pred(o)) {
			out = append(out, o)
		}
	}
	return out
}

// configMapFile returns the cachenode config file of the ConfigMap.
func configMapFile(t *testing.T) string {
	t.Helper()
	cms := find(manifests(t), "ConfigMap", nil)
	if len(cms) != 1 {
		t.Fatalf("%d ConfigMaps, want 1", len(cms))
	}
	c := str(cms[0], "data", "cachenode.yaml")
	if c == "" {
		t.Fatal("the ConfigMap has no cachenode.yaml")
	}
	return c
}

// labelsMatch reports whether every selector label is among labels.
func labelsMatch(selector, labels any) bool {
	sel, _ := selector.(map[string]any)
	lab, _ := labels.(map[string]any)
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if lab[k] != v {
			return false
		}
	}
	return true
}

// TestKubernetesManifests checks what the StatefulSet needs to run a
// cluster: a headless Service (publishing pods before they are ready) that
// is the StatefulSet's serviceName and whose DNS name and gossip port are
// the join address; readiness on /readyz and liveness on /healthz on the
// HTTP port; a grace period long enough to leave the ring; a non-root
// security context; a PodDisruptionBudget over the same pods; and the
// mounts that the CACHENODE_* paths point into.
func TestKubernetesManifests(t *testing.T) {
	objs := manifests(t)
	sts := find(objs, "StatefulSet", nil)
	if len(sts) != 1 {
		t.Fatalf("%d StatefulSets, want 1", len(sts))
	}
	s := sts[0]
	podLabels := at(s, "spec", "template", "metadata", "labels")
	if !labelsMatch(at(s, "spec", "selector", "matchLabels"), podLabels) {
		t.Errorf("the StatefulSet's selector does not match its pod labels")
	}
	if r, _ := at(s, "spec", "replicas").(int); r < 3 {
		t.Errorf("replicas %v, want at least 3", at(s, "spec", "replicas"))
	}
	if p := str(s, "spec", "podManagementPolicy"); p != "" && p != "OrderedReady" {
		t.Errorf("podManagementPolicy %s: pods started in parallel may each join only themselves", p)
	}

	// The headless service.
	svcName := str(s, "spec", "serviceName")
	heads := find(objs, "Service", func(o object) bool { return str(o, "metadata", "name") == svcName })
	if len(heads) != 1 {
		t.Fatalf("no Service %q (the StatefulSet's serviceName)", svcName)
	}
	head := heads[0]
	if str(head, "spec", "clusterIP") != "None" {
		t.Errorf("Service %s is not headless (clusterIP: None)", svcName)
	}
	if at(head, "spec", "publishNotReadyAddresses") != true {
		t.Errorf("Service %s must publish not-ready pods, or the first pod can never join", svcName)
	}
	if !labelsMatch(at(head, "spec", "selector"), podLabels) {
		t.Errorf("Service %s does not select the pods", svcName)
	}
	var protos []string
	for _, p := range list(head, "spec", "ports") {
		if at(p, "port") == 7946 {
			protos = append(protos, str(p, "protocol"))
		}
	}
	if slices.Sort(protos); !slices.Equal(protos, []string{"TCP", "UDP"}) {
		t.Errorf("Service %s gossip port 7946 protocols %v, want TCP and UDP", svcName, protos)
	}

	// The container.
	spec := at(s, "spec", "template", "spec")
	cs := list(spec, "containers")
	if len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	c := cs[0]
	env := map[string]string{}
	for _, e := range list(c, "env") {
		env[str(e, "name")] = str(e, "value")
	}
	if want := svcName + ":7946"; env["CACHENODE_JOIN"] != want {
		t.Errorf("CACHENODE_JOIN=%q, want the headless service %q", env["CACHENODE_JOIN"], want)
	}
	if !strings.HasSuffix(env["CACHENODE_GOSSIP"], ":7946") || !strings.HasSuffix(env["CACHENODE_HTTP"], ":8080") {
		t.Errorf("CACHENODE_GOSSIP=%q, CACHENODE_HTTP=%q: want ports 7946 and 8080", env["CACHENODE_GOSSIP"], env["CACHENODE_HTTP"])
	}
	ports := map[string]int{}
	for _, p := range list(c, "ports") {
		port, _ := at(p, "containerPort").(int)
		ports[str(p, "name")] = port
	}
	if ports["http"] != 8080 || ports["gossip"] != 7946 || ports["gossip-udp"] != 7946 || ports["peer"] != 7947 {
		t.Errorf("container ports %v, want http 8080, gossip and gossip-udp 7946, peer 7947", ports)
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if got := str(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s on %q, want %s", probe, got, path)
		}
		if port := at(c, probe, "httpGet", "port"); port != "http" && port != 8080 {
			t.Errorf("%s on port %v, want the HTTP port", probe, port)
		}
	}
	// A graceful stop: 15 s for requests in flight, the handoff, two leave
	// timeouts of the LAN preset, flushing the records; and the preStop.
	grace, _ := at(spec, "terminationGracePeriodSeconds").(int)
	preStop, _ := at(c, "lifecycle", "preStop", "sleep", "seconds").(int)
	if grace < 30+preStop {
		t.Errorf("terminationGracePeriodSeconds %d: too short to leave the ring (want >= 30 s after a %d s preStop)", grace, preStop)
	}
	if at(spec, "securityContext", "runAsNonRoot") != true {
		t.Errorf("the pod does not require a non-root user")
	}
	if uid, _ := at(spec, "securityContext", "runAsUser").(int); uid == 0 {
		t.Errorf("runAsUser %v, want the image's non-root user", at(spec, "securityContext", "runAsUser"))
	}
	// Every file the command line and the CACHENODE_* variables name lies
	// under a mount.
	var mounts []string
	for _, m := range list(c, "volumeMounts") {
		mounts = append(mounts, str(m, "mountPath"))
	}
	paths := []string{env["CACHENODE_DATA"], env["CACHENODE_GOSSIP_KEY"], env["CACHENODE_ADMIN_TOKEN_FILE"]}
	args := list(c, "args")
	for i, a := range args {
		if a == "--config" && i+1 < len(args) {
			paths = append(paths, fmt.Sprint(args[i+1]))
		}
	}
	for _, p := range paths {
		if p == "" {
			t.Errorf("a path is missing: data %q, gossip key %q, token %q, args %v", env["CACHENODE_DATA"],
				env["CACHENODE_GOSSIP_KEY"], env["CACHENODE_ADMIN_TOKEN_FILE"], args)
			continue
		}
		if !slices.ContainsFunc(mounts, func(m string) bool { return p == m || strings.HasPrefix(p, m+"/") }) {
			t.Errorf("%s is under no volume mount (%v)", p, mounts)
		}
	}

	// The gossip key and the admin token come from a Secret: the pods'
	// gossip and peer ports bind the pod's address and HTTP every address,
	// where a node starts only with both.
	for _, name := range []string{"CACHENODE_GOSSIP_KEY", "CACHENODE_ADMIN_TOKEN_FILE"} {
		fromSecret := false
		for _, m := range list(c, "volumeMounts") {
			if mp := str(m, "mountPath"); !strings.HasPrefix(env[name], mp+"/") {
				continue
			}
			for _, v := range list(spec, "volumes") {
				if str(v, "name") == str(m, "name") && str(v, "secret", "secretName") != "" {
					fromSecret = true
				}
			}
		}
		if !fromSecret {
			t.Errorf("%s=%q is not in a volume of a Secret", name, env[name])
		}
	}

	// The disruption budget.
	pdbs := find(objs, "PodDisruptionBudget", nil)
	if len(pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(pdbs))
	}
	if !labelsMatch(at(pdbs[0], "spec", "selector", "matchLabels"), podLabels) {
		t.Errorf("the PodDisruptionBudget does not select the pods")
	}
	if at(pdbs[0], "spec", "maxUnavailable") != 1 && at(pdbs[0], "spec", "minAvailable") == nil {
		t.Errorf("the PodDisruptionBudget sets neither maxUnavailable: 1 nor minAvailable")
	}

	// A client service that routes to ready pods only.
	clients := find(objs, "Service", func(o object) bool { return str(o, "spec", "clusterIP") != "None" })
	if len(clients) != 1 || at(clients[0], "spec", "publishNotReadyAddresses") == true || !labelsMatch(at(clients[0], "spec", "selector"), podLabels) {
		t.Errorf("want one client Service over the ready pods")
	}
}

// TestCompose checks deploy/docker-compose.yml: three nodes built from
// deploy/Dockerfile, each joining the two others by name (never only
// itself), with a health check on /healthz, a stop grace period long
// enough to leave the ring, the config file it mounts, and the gossip key
// and admin token that the secrets service makes before any node starts.
func TestCompose(t *testing.T) {
	var doc struct {
		Services map[string]struct {
			Build struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
				Target     string `yaml:"target"`
			} `yaml:"build"`
			Command     []string          `yaml:"command"`
			Volumes     []string          `yaml:"volumes"`
			Environment map[string]string `yaml:"environment"`
			DependsOn   map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
			StopGrace   string `yaml:"stop_grace_period"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(readFile(t, "docker-compose.yml")), &doc); err != nil {
		t.Fatal(err)
	}
	// The secrets service: keygen of the key and the token into a volume.
	sec, ok := doc.Services["secrets"]
	if !ok || len(sec.Command) < 3 || sec.Command[0] != "keygen" || !slices.Contains(sec.Command, "--if-missing") {
		t.Fatalf("no secrets service running cachenode keygen --if-missing: %+v", sec)
	}
	secVolume := map[string]string{} // volume name → the directory keygen writes in
	for _, v := range sec.Volumes {
		src, dst, _ := strings.Cut(v, ":")
		secVolume[src] = dst
	}
	// secretOn reports whether path is a file keygen makes, mounted in the
	// service through one of volumes.
	secretOn := func(path string, volumes []string) bool {
		for _, v := range volumes {
			src, dst, _ := strings.Cut(v, ":")
			dst, _, _ = strings.Cut(dst, ":")
			dir, ok := secVolume[src]
			if rel, under := strings.CutPrefix(path, dst+"/"); ok && under && slices.Contains(sec.Command, dir+"/"+rel) {
				return true
			}
		}
		return false
	}
	nodes := 0
	for name, s := range doc.Services {
		if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
			t.Errorf("%s: build %s/%s: %v", name, s.Build.Context, s.Build.Dockerfile, err)
		}
		if s.Build.Target != "cachenode" || len(s.Command) == 0 || s.Command[0] != "serve" {
			continue
		}
		nodes++
		for _, env := range []string{"CACHENODE_GOSSIP_KEY", "CACHENODE_ADMIN_TOKEN_FILE"} {
			if !secretOn(s.Environment[env], s.Volumes) {
				t.Errorf("%s: %s=%q is not a file the secrets service makes, mounted here (%v)", name, env, s.Environment[env], s.Volumes)
			}
		}
		if s.DependsOn["secrets"].Condition != "service_completed_successfully" {
			t.Errorf("%s: does not wait for the secrets service to complete: %+v", name, s.DependsOn)
		}
		flag := func(f string) string {
			if i := slices.Index(s.Command, f); i >= 0 && i+1 < len(s.Command) {
				return s.Command[i+1]
			}
			return ""
		}
		if flag("--name") != name {
			t.Errorf("%s: --name %q", name, flag("--name"))
		}
		join := strings.Split(flag("--join"), ",")
		if len(join) != 2 || slices.Contains(join, name+":7946") {
			t.Errorf("%s: --join %v, want the two other nodes", name, join)
		}
		if !slices.ContainsFunc(s.Healthcheck.Test, func(a string) bool { return strings.HasSuffix(a, "/healthz") }) {
			t.Errorf("%s: healthcheck %v is not on /healthz", name, s.Healthcheck.Test)
		}
		if d, err := time.ParseDuration(s.StopGrace); err != nil || d < 30*time.Second {
			t.Errorf("%s: stop_grace_period %q, want >= 30s", name, s.StopGrace)
		}
		cfg := flag("--config")
		found := false
		for _, v := range s.Volumes {
			src, dst, _ := strings.Cut(v, ":")
			if strings.HasPrefix(dst, cfg) {
				found = true
				if _, err := os.Stat(src); err != nil {
					t.Errorf("%s: volume %s: %v", name, v, err)
				}
			}
		}
		if !found {
			t.Errorf("%s: --config %s is not mounted", name, cfg)
		}
	}
	if nodes != 3 {
		t.Errorf("%d cachenode services, want 3", nodes)
	}
}
