package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/tinct/tinct/config"
)

// No cluster runs here: these tests decode every manifest strictly into
// the Kubernetes API types (an unknown or misspelt field fails) and check
// that what the manifests say agrees with the binary: flags that exist,
// configuration keys that parse, ports, probes, secrets and mounts.

var (
	buildOnce sync.Once
	tinctBin  string
	buildErr  error
	helpCache sync.Map // "coordinator start" → flag names
)

// tinct builds the binary once for the flag checks.
func tinct(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tinct-deploy-test-")
		if err != nil {
			buildErr = err
			return
		}
		tinctBin = filepath.Join(dir, "tinct")
		out, err := exec.Command("go", "build", "-o", tinctBin, "../cmd/tinct").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return tinctBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tinctBin != "" {
		os.RemoveAll(filepath.Dir(tinctBin))
	}
	os.Exit(code)
}

// flags lists the long flags `tinct WORDS… --help` prints.
func flags(t *testing.T, words ...string) map[string]bool {
	t.Helper()
	key := strings.Join(words, " ")
	if v, ok := helpCache.Load(key); ok {
		return v.(map[string]bool)
	}
	out, err := exec.Command(tinct(t), append(slices.Clone(words), "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("tinct %s --help: %v\n%s", key, err, out)
	}
	fs := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		fs[m[1]] = true
	}
	if len(fs) == 0 {
		t.Fatalf("tinct %s --help lists no flags:\n%s", key, out)
	}
	helpCache.Store(key, fs)
	return fs
}

// strict decodes YAML into v, refusing unknown fields.
func strict(doc []byte, v any) error {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(j))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// kustomization is the part of kustomize's schema these manifests use.
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Resources []string `json:"resources"`
	Images    []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
	Patches []struct {
		Path string `json:"path"`
	} `json:"patches"`
}

// manifests are the decoded objects of a kustomization and its resources,
// patches included.
type manifests struct {
	deployments  []*appsv1.Deployment
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	configMaps   []*corev1.ConfigMap
}

func load(t *testing.T, dir string, m *manifests) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := strict(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	if k.Kind != "Kustomization" || k.APIVersion != "kustomize.config.k8s.io/v1beta1" {
		t.Errorf("%s/kustomization.yaml: kind %q, apiVersion %q", dir, k.Kind, k.APIVersion)
	}
	files := k.Resources
	for _, p := range k.Patches {
		files = append(files, p.Path)
	}
	for _, r := range files {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s names %s: %v", dir, r, err)
		}
		if st.IsDir() {
			load(t, p, m)
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var meta struct {
				Kind string `json:"kind"`
			}
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s doc %d: %v", p, i, err)
			}
			var obj any
			switch meta.Kind {
			case "Deployment":
				d := &appsv1.Deployment{}
				m.deployments, obj = append(m.deployments, d), d
			case "StatefulSet":
				s := &appsv1.StatefulSet{}
				m.statefulSets, obj = append(m.statefulSets, s), s
			case "Service":
				s := &corev1.Service{}
				m.services, obj = append(m.services, s), s
			case "ConfigMap":
				c := &corev1.ConfigMap{}
				m.configMaps, obj = append(m.configMaps, c), c
			default:
				t.Fatalf("%s doc %d: kind %q is not one this test knows", p, i, meta.Kind)
			}
			if err := strict([]byte(doc), obj); err != nil {
				t.Errorf("%s doc %d (%s): %v", p, i, meta.Kind, err)
			}
		}
	}
}

func TestKubernetesBase(t *testing.T) {
	var m manifests
	load(t, "kubernetes/base", &m)
	if len(m.deployments) != 1 || len(m.statefulSets) != 2 || len(m.services) != 3 {
		t.Fatalf("base: %d deployments, %d statefulsets, %d services", len(m.deployments), len(m.statefulSets), len(m.services))
	}
	co, workers, serve := m.statefulSets[0], m.statefulSets[1], m.deployments[0]
	// a StatefulSet of one: its replacement pod starts only when the old
	// one has ended (its shutdown checkpoint saved), so that two
	// coordinators never overlap
	if co.Name != "tinct-coordinator" || *co.Spec.Replicas != 1 || co.Spec.PodManagementPolicy == appsv1.ParallelPodManagement {
		t.Error("the coordinator must be a StatefulSet of one replica, started only when the old pod has ended")
	}
	checkPod(t, "coordinator", co.Spec.Template.Spec, m.configMaps)
	checkPod(t, "workers", workers.Spec.Template.Spec, m.configMaps)
	checkPod(t, "serve", serve.Spec.Template.Spec, m.configMaps)
	for _, s := range m.services {
		var pod *corev1.PodTemplateSpec
		for _, p := range []*corev1.PodTemplateSpec{&co.Spec.Template, &workers.Spec.Template, &serve.Spec.Template} {
			if selects(s.Spec.Selector, p.Labels) {
				pod = p
			}
		}
		if pod == nil {
			t.Errorf("service %s selects no pod", s.Name)
			continue
		}
		for _, p := range s.Spec.Ports {
			if _, ok := containerPort(pod.Spec.Containers[0], p.TargetPort.String()); !ok {
				t.Errorf("service %s: target port %s is not a port of its pods", s.Name, p.TargetPort.String())
			}
		}
	}
	if workers.Spec.ServiceName == "" || !slices.ContainsFunc(m.services, func(s *corev1.Service) bool {
		return s.Name == workers.Spec.ServiceName && s.Spec.ClusterIP == corev1.ClusterIPNone
	}) {
		t.Errorf("workers: serviceName %q is not a headless service", workers.Spec.ServiceName)
	}
	// the workers dial the coordinator's service on its gRPC port
	coAddr := flagValue(workers.Spec.Template.Spec.Containers[0].Args, "coordinator")
	host, port, _ := net.SplitHostPort(coAddr)
	if !slices.ContainsFunc(m.services, func(s *corev1.Service) bool {
		return s.Name == host && slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port })
	}) {
		t.Errorf("workers dial %s, which is no service port", coAddr)
	}
}

func TestKubernetesGPUOverlay(t *testing.T) {
	var m manifests
	load(t, "kubernetes/overlays/gpu", &m)
	if len(m.statefulSets) != 3 {
		t.Fatalf("want the base's two StatefulSets and the overlay's patch, got %d", len(m.statefulSets))
	}
	patch := m.statefulSets[2].Spec.Template.Spec
	c := patch.Containers[0]
	if flagValue(c.Args, "gpu") != "0" {
		t.Errorf("GPU workers without --gpu: %v", c.Args)
	}
	if q := c.Resources.Limits["nvidia.com/gpu"]; q.Value() != 1 {
		t.Errorf("GPU workers must request one nvidia.com/gpu, limits %v", c.Resources.Limits)
	}
	if !slices.Equal(c.Args[:2], []string{"worker", "join"}) {
		t.Fatalf("args %v", c.Args)
	}
	fs := flags(t, "worker", "join")
	for _, a := range c.Args[2:] {
		if name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "="); !fs[name] {
			t.Errorf("GPU workers: tinct worker join has no flag --%s", name)
		}
	}
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

// flagValue is the value of --name=VALUE in args ("" if absent).
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

func containerPort(c corev1.Container, nameOrNumber string) (corev1.ContainerPort, bool) {
	for _, p := range c.Ports {
		if p.Name == nameOrNumber || strconv.Itoa(int(p.ContainerPort)) == nameOrNumber {
			return p, true
		}
	}
	return corev1.ContainerPort{}, false
}

// checkPod checks one pod template against the binary.
func checkPod(t *testing.T, what string, spec corev1.PodSpec, cms []*corev1.ConfigMap) {
	t.Helper()
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers", what, len(spec.Containers))
	}
	c := spec.Containers[0]
	if len(c.Args) < 2 {
		t.Fatalf("%s: args %v", what, c.Args)
	}
	// the command words, then flags and configuration keys
	nw := 0
	for nw < len(c.Args) && !strings.HasPrefix(c.Args[nw], "-") && !strings.Contains(c.Args[nw], "=") {
		nw++
	}
	fs := flags(t, c.Args[:nw]...)
	var keys []string
	for _, a := range c.Args[nw:] {
		if strings.HasPrefix(a, "-") {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !fs[name] {
				t.Errorf("%s: tinct %s has no flag --%s", what, strings.Join(c.Args[:nw], " "), name)
			}
			continue
		}
		keys = append(keys, a)
	}
	if _, err := config.Parse(nil, keys); err != nil {
		t.Errorf("%s: configuration keys: %v", what, err)
	}
	// $(VAR) in args must be defined in env
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
	}
	for _, a := range c.Args {
		for _, m := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(a, -1) {
			if !env[m[1]] {
				t.Errorf("%s: %s uses $(%s), which env does not define", what, a, m[1])
			}
		}
	}
	// every address the process binds is a container port (gossip: TCP and UDP)
	binds := map[string]string{"listen": "TCP", "ring-listen": "TCP", "gossip": "TCP", "health": "TCP", "addr": "TCP"}
	for flag, proto := range binds {
		v := flagValue(c.Args, flag)
		if v == "" {
			continue
		}
		_, port, err := net.SplitHostPort(v)
		if err != nil {
			t.Errorf("%s: --%s=%s: %v", what, flag, v, err)
			continue
		}
		protos := []string{proto}
		if flag == "gossip" {
			protos = append(protos, "UDP")
		}
		for _, pr := range protos {
			if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
				return strconv.Itoa(int(p.ContainerPort)) == port && (string(p.Protocol) == pr || (p.Protocol == "" && pr == "TCP"))
			}) {
				t.Errorf("%s: --%s binds port %s/%s, which is not a container port", what, flag, port, pr)
			}
		}
	}
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "metrics_addr="); ok {
			_, port, _ := net.SplitHostPort(v)
			if _, ok := containerPort(c, port); !ok {
				t.Errorf("%s: metrics_addr port %s is not a container port", what, port)
			}
		}
	}
	// the probes ask the health server (the web app answers them on its
	// own address)
	healthFlag := "health"
	if c.Args[0] == "serve" {
		healthFlag = "addr"
	}
	_, healthPort, _ := net.SplitHostPort(flagValue(c.Args, healthFlag))
	for name, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[name]
		if pr == nil || pr.HTTPGet == nil {
			t.Errorf("%s: no %s probe", what, name)
			continue
		}
		p, ok := containerPort(c, pr.HTTPGet.Port.String())
		if !ok || strconv.Itoa(int(p.ContainerPort)) != healthPort || pr.HTTPGet.Path != want {
			t.Errorf("%s: %s probe asks %s on port %s; the health server (--health) is on %s and answers %s", what, name, pr.HTTPGet.Path, pr.HTTPGet.Port.String(), healthPort, want)
		}
	}
	// files the flags and variables name come from the right secrets
	mounts := map[string]string{} // mount path → secret name
	for _, vm := range c.VolumeMounts {
		for _, v := range spec.Volumes {
			if v.Name == vm.Name && v.Secret != nil {
				mounts[vm.MountPath] = v.Secret.SecretName
			}
		}
	}
	wantSecret := func(path, secret, why string) {
		if got := mounts[path]; got != secret {
			t.Errorf("%s: %s wants secret %s mounted at %s, got %q", what, why, secret, path, got)
		}
	}
	for flag, secret := range map[string]string{"tls-dir": "tinct-tls", "secret-file": "tinct-cluster", "token-file": "tinct-serve"} {
		v := flagValue(c.Args, flag)
		if v == "" {
			continue
		}
		if flag != "tls-dir" {
			v = filepath.Dir(v)
		}
		wantSecret(v, secret, "--"+flag)
	}
	for _, e := range c.Env {
		if strings.HasSuffix(e.Name, "_FILE") && strings.HasPrefix(e.Name, "AWS_") {
			wantSecret(filepath.Dir(e.Value), "tinct-s3", e.Name)
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil && !slices.ContainsFunc(cms, func(cm *corev1.ConfigMap) bool { return cm.Name == ef.ConfigMapRef.Name }) {
			t.Errorf("%s: envFrom names config map %s, which is not in the manifests", what, ef.ConfigMapRef.Name)
		}
	}
	// tinct writes only /data and /tmp: a read-only root, as non-root
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: the root filesystem should be read-only", what)
	}
	if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot {
		t.Errorf("%s: should run as non-root", what)
	}
	for _, p := range []string{"/data", "/tmp"} {
		if !slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == p }) {
			t.Errorf("%s: no writable volume at %s", what, p)
		}
	}
}

// TestK8sBinModule holds deploy/kubernetes/k8sbin/go.mod (the Kubernetes
// programs make k8s-validate and make k8s-test build) to one release:
// k8s.io/kubernetes vX.Y.Z, and each of its staging modules replaced by
// the same module at v0.Y.Z (the release's own go.mod replaces them with
// ./staging folders, which a module proxy does not serve).
func TestK8sBinModule(t *testing.T) {
	b, err := os.ReadFile("kubernetes/k8sbin/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?k8s\.io/kubernetes\s+v1\.(\d+)\.(\d+)\s*(?://.*)?$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("k8sbin/go.mod requires no k8s.io/kubernetes v1.Y.Z")
	}
	want := fmt.Sprintf("v0.%s.%s", m[1], m[2])
	replaces := regexp.MustCompile(`(?m)^\s*(k8s\.io/[a-z0-9-]+)\s+=>\s+(\S+)\s+(\S+)\s*$`).FindAllSubmatch(b, -1)
	// the staging modules of the 1.3x releases: at least these
	for _, name := range []string{"api", "apimachinery", "apiserver", "client-go", "kubectl", "kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager", "component-base"} {
		if !slices.ContainsFunc(replaces, func(r [][]byte) bool { return string(r[1]) == "k8s.io/"+name }) {
			t.Errorf("k8sbin/go.mod does not replace k8s.io/%s", name)
		}
	}
	for _, r := range replaces {
		if string(r[1]) != string(r[2]) || string(r[3]) != want {
			t.Errorf("k8sbin/go.mod: %s => %s %s, want %s => %s %s", r[1], r[2], r[3], r[1], r[1], want)
		}
	}
	if len(replaces) < 30 {
		t.Errorf("k8sbin/go.mod replaces %d staging modules; k8s.io/kubernetes v1.%s has 31", len(replaces), m[1])
	}
}
