package config_test

import (
	"bytes"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestKubernetesConfigMap keeps the config shipped in
// deploy/kubernetes/configmap.yaml loadable, with the variables its Secret
// provides, so the manifests never rot apart from the code.
func TestKubernetesConfigMap(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "deploy", "kubernetes", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Kind string            `yaml:"kind"`
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(data, &cm); err != nil {
		t.Fatal(err)
	}
	doc, ok := cm.Data["tollgate.yaml"]
	if cm.Kind != "ConfigMap" || !ok {
		t.Fatalf("configmap.yaml: kind %q, keys %v; want a ConfigMap with tollgate.yaml", cm.Kind, cm.Data)
	}
	env := map[string]string{
		"TOLLGATE_ADMIN_TOKEN":  "a-long-random-admin-token-0123456789",
		"REDIS_URL":             "redis://redis:6379/0",
		"OPENAI_API_KEY":        "sk-test",
		"ANTHROPIC_API_KEY":     "sk-ant-test",
		"STRIPE_WEBHOOK_SECRET": "whsec_test",
		"STRIPE_API_KEY":        "rk_test_123",
		"STRIPE_LIVEMODE":       "false",
	}
	c := mustParse(t, doc, envOf(env))
	if len(c.Warnings) != 0 {
		t.Errorf("warnings: %q", warnings(c))
	}
	if c.Store.RedisURL == "" {
		t.Error("the Kubernetes config must use Redis: replicas share balances")
	}
	if c.Listen != "127.0.0.1:8080" {
		t.Errorf("listen = %q, want the sidecar's 127.0.0.1:8080", c.Listen)
	}
}

// manifestDir holds the Kubernetes manifests the README documents.
var manifestDir = filepath.Join("..", "deploy", "kubernetes")

// decodeManifest decodes the manifest file name into its k8s.io/api type
// strictly, as `kubectl apply --validate=strict` would: an unknown or
// repeated field is an error, so a misspelt key cannot silently do
// nothing on a real cluster.
func decodeManifest(t *testing.T, name string) runtime.Object {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(manifestDir, name))
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	codec := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Yaml: true, Strict: true})
	obj, _, err := codec.Decode(data, nil, nil)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return obj
}

// manifest decodes name strictly into a *T.
func manifest[T runtime.Object](t *testing.T, name string) T {
	t.Helper()
	obj, ok := decodeManifest(t, name).(T)
	if !ok {
		var want T
		t.Fatalf("%s is a %T, want a %T", name, decodeManifest(t, name), want)
	}
	return obj
}

// TestKubernetesManifests decodes every manifest strictly into its
// k8s.io/api type, and the kustomization names exactly the manifests to
// apply (never the Secret example).
func TestKubernetesManifests(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(manifestDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `yaml:"apiVersion"`
		Kind       string   `yaml:"kind"`
		Resources  []string `yaml:"resources"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: %s %s", k.APIVersion, k.Kind)
	}
	if want := []string{"configmap.yaml", "deployment.yaml", "service.yaml"}; !slices.Equal(k.Resources, want) {
		t.Errorf("kustomization.yaml resources %q, want %q", k.Resources, want)
	}
	manifest[*corev1.ConfigMap](t, "configmap.yaml")
	manifest[*appsv1.Deployment](t, "deployment.yaml")
	manifest[*corev1.Service](t, "service.yaml")
	manifest[*corev1.Secret](t, "secret.example.yaml")
}

// sidecar is deployment.yaml's pod template and its tollgate and app
// containers.
type sidecar struct {
	pod      *corev1.PodTemplateSpec
	tollgate *corev1.Container
	app      *corev1.Container
}

func podOf(t *testing.T) sidecar {
	t.Helper()
	d := manifest[*appsv1.Deployment](t, "deployment.yaml")
	s := sidecar{pod: &d.Spec.Template}
	for i := range s.pod.Spec.InitContainers {
		if c := &s.pod.Spec.InitContainers[i]; c.Name == "tollgate" {
			s.tollgate = c
		}
	}
	if s.tollgate == nil {
		t.Fatal("deployment.yaml: no init container named tollgate")
	}
	if p := s.tollgate.RestartPolicy; p == nil || *p != corev1.ContainerRestartPolicyAlways {
		t.Error("tollgate is not a native sidecar (restartPolicy: Always)")
	}
	if len(s.pod.Spec.Containers) != 1 {
		t.Fatalf("deployment.yaml: %d app containers, want 1", len(s.pod.Spec.Containers))
	}
	s.app = &s.pod.Spec.Containers[0]
	return s
}

// containerEnv is c's environment as the kubelet builds it: the image's
// ENV, then envFrom, then env (later wins), with Secret references
// resolved from secret. A secretKeyRef to a missing key fails the test
// unless it is optional.
func containerEnv(t *testing.T, image map[string]string, c *corev1.Container, secret *corev1.Secret) map[string]string {
	t.Helper()
	env := map[string]string{}
	maps.Copy(env, image)
	for _, from := range c.EnvFrom {
		if from.SecretRef == nil || from.SecretRef.Name != secret.Name {
			t.Fatalf("%s: envFrom %+v, want the Secret %s", c.Name, from, secret.Name)
		}
		maps.Copy(env, secret.StringData)
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == secret.Name:
			v, ok := secret.StringData[e.ValueFrom.SecretKeyRef.Key]
			if !ok && (e.ValueFrom.SecretKeyRef.Optional == nil || !*e.ValueFrom.SecretKeyRef.Optional) {
				t.Fatalf("%s: %s needs key %s, which the Secret lacks", c.Name, e.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			env[e.Name] = v
		default:
			t.Fatalf("%s: %s comes from %+v", c.Name, e.Name, e.ValueFrom)
		}
	}
	return env
}

// TestKubernetesSidecar: what the manifests promise holds once they are
// put together — the image's environment, the Secret, the container's env
// and the ConfigMap's config, as Kubernetes and tollgate combine them.
func TestKubernetesSidecar(t *testing.T) {
	s := podOf(t)
	secret := manifest[*corev1.Secret](t, "secret.example.yaml")
	cm := manifest[*corev1.ConfigMap](t, "configmap.yaml")
	env := containerEnv(t, dockerEnv(t), s.tollgate, secret)
	c := mustParse(t, cm.Data["tollgate.yaml"], envOf(env))
	if len(c.Warnings) != 0 {
		t.Errorf("warnings: %q", warnings(c))
	}

	t.Run("the proxy stays on loopback", func(t *testing.T) {
		// The image listens on every interface; in the pod only the app
		// may spend credits.
		if c.Listen != "127.0.0.1:8080" {
			t.Errorf("tollgate listens on %q in the pod, want 127.0.0.1:8080", c.Listen)
		}
		for _, p := range s.tollgate.Ports {
			if p.ContainerPort == 8080 {
				t.Errorf("the proxy port is declared (%+v): only the app in the pod may reach it", p)
			}
		}
	})

	t.Run("Redis is required", func(t *testing.T) {
		// A read-only root file system has no room for the embedded
		// store, and replicas must share balances: REDIS_URL comes from a
		// Secret key that is not optional, so a Secret without it stops
		// the pod from starting instead of tollgate falling back.
		if sc := s.tollgate.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Error("tollgate's root file system is not read-only")
		}
		var ref *corev1.SecretKeySelector
		for _, e := range s.tollgate.Env {
			if e.Name == "REDIS_URL" && e.ValueFrom != nil {
				ref = e.ValueFrom.SecretKeyRef
			}
		}
		if ref == nil || ref.Key != "REDIS_URL" || ref.Optional != nil && *ref.Optional {
			t.Errorf("REDIS_URL is not a required Secret key: %+v", ref)
		}
		if c.Store.RedisURL == "" {
			t.Error("the ConfigMap's store does not use REDIS_URL")
		}
	})

	t.Run("the app reaches the proxy without a provider key", func(t *testing.T) {
		app := containerEnv(t, nil, s.app, secret) // the app's image is not ours
		_, port, _ := net.SplitHostPort(c.Listen)
		for _, k := range []string{"OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"} {
			u, err := url.Parse(app[k])
			if err != nil || u.Host != "127.0.0.1:"+port {
				t.Errorf("%s = %q, want the proxy at 127.0.0.1:%s", k, app[k], port)
			}
		}
		// The SDKs refuse to start without a key; the app gets a
		// placeholder, never the Secret's real one.
		for _, k := range []string{"OPENAI_API_KEY", "ANTHROPIC_API_KEY"} {
			if app[k] == "" || app[k] == secret.StringData[k] {
				t.Errorf("app %s = %q, want a placeholder", k, app[k])
			}
		}
		if len(s.app.EnvFrom) != 0 {
			t.Error("the app container reads a Secret")
		}
		// The placeholder never reaches a provider: every route sets its
		// own credential, which drops the client's.
		for i, r := range c.Routes {
			if len(r.Headers) == 0 {
				t.Errorf("routes[%d] (%s) sets no headers: the app's placeholder key would be forwarded", i, r.Path)
			}
		}
	})

	t.Run("the Service reaches the admin port on Kubernetes 1.29", func(t *testing.T) {
		// A named targetPort declared only on a native sidecar (an init
		// container) resolves only from Kubernetes 1.32.
		svc := manifest[*corev1.Service](t, "service.yaml")
		_, adminPort, _ := net.SplitHostPort(c.Admin.Listen)
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.Type != intstr.Int || strconv.Itoa(p.TargetPort.IntValue()) != adminPort {
				t.Errorf("port %s: targetPort %s, want the number %s", p.Name, p.TargetPort.String(), adminPort)
			}
		}
		if !slices.ContainsFunc(s.tollgate.Ports, func(p corev1.ContainerPort) bool { return strconv.Itoa(int(p.ContainerPort)) == adminPort }) {
			t.Errorf("tollgate declares no container port %s", adminPort)
		}
		for k, v := range svc.Spec.Selector {
			if s.pod.Labels[k] != v {
				t.Errorf("the Service selects %s=%s, which the pods lack", k, v)
			}
		}
	})

	t.Run("probes and config mount", func(t *testing.T) {
		named := map[string]int32{}
		for _, p := range s.tollgate.Ports {
			named[p.Name] = p.ContainerPort
		}
		for name, pr := range map[string]*corev1.Probe{"startup": s.tollgate.StartupProbe, "liveness": s.tollgate.LivenessProbe, "readiness": s.tollgate.ReadinessProbe} {
			if pr == nil || pr.HTTPGet == nil {
				t.Errorf("no %s probe", name)
				continue
			}
			if port := pr.HTTPGet.Port; port.Type == intstr.String && named[port.StrVal] == 0 {
				t.Errorf("%s probe port %q is not a port of the container", name, port.StrVal)
			}
		}
		// --config names a file in the ConfigMap's mount.
		cfg := s.tollgate.Args[slices.Index(s.tollgate.Args, "--config")+1]
		mounted := false
		for _, m := range s.tollgate.VolumeMounts {
			for _, v := range s.pod.Spec.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm.Name && filepath.Join(m.MountPath, "tollgate.yaml") == cfg {
					mounted = true
				}
			}
		}
		if !mounted {
			t.Errorf("--config %s is not the ConfigMap's tollgate.yaml", cfg)
		}
		// The kubelet waits terminationGracePeriodSeconds before killing:
		// longer than tollgate's drain, so every stream settles.
		if g := s.pod.Spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= c.ShutdownTimeout {
			t.Errorf("terminationGracePeriodSeconds %v is not longer than shutdown_timeout %s", g, c.ShutdownTimeout)
		}
	})

	t.Run("the heap stays under the memory limit", func(t *testing.T) {
		// tollgate serve runs the collector at GOGC=400 unless told
		// otherwise: without GOMEMLIMIT the heap could grow past the
		// container's limit before the collector runs.
		limit, ok := s.tollgate.Resources.Limits[corev1.ResourceMemory]
		if !ok {
			t.Fatal("the tollgate container has no memory limit")
		}
		v, ok := env["GOMEMLIMIT"]
		if !ok {
			t.Fatal("GOMEMLIMIT is not set: at GOGC=400 the heap may outgrow the memory limit before the collector runs")
		}
		q, err := resource.ParseQuantity(strings.TrimSuffix(v, "B"))
		if err != nil {
			t.Fatalf("GOMEMLIMIT %q: %v", v, err)
		}
		if q.Value() >= limit.Value()*9/10 || q.Value() < limit.Value()/2 {
			t.Errorf("GOMEMLIMIT %s, want between half and 90%% of the memory limit %s (the rest is stacks, buffers and the runtime)", v, limit.String())
		}
	})
}
