package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"
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
