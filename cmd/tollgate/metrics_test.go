package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var metricName = regexp.MustCompile("`(tollgate_[a-z_]+)`")

// readmeMetrics returns the metric names the README's "Metrics and probes"
// table lists.
func readmeMetrics(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	start := strings.Index(readme, "\n## Metrics and probes\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Metrics and probes" section`)
	}
	section := readme[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	var names []string
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `tollgate_") {
			continue
		}
		// The first column names one metric or several.
		for _, m := range metricName.FindAllStringSubmatch(strings.Split(line, "|")[1], -1) {
			names = append(names, m[1])
		}
	}
	if len(names) < 15 {
		t.Fatalf("found only %d metrics in the README's table: %v", len(names), names)
	}
	return names
}

// TestMetricsFromTheStart checks that /metrics on a server that has
// served nothing yet lists every metric the README documents, each with
// at least one series at zero, so that dashboards and alerts (rate(),
// absent()) work from the first scrape.
func TestMetricsFromTheStart(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, writeConfig(t, dir, "http://127.0.0.1:1", boltSection(dir), "", "10"))
	res, err := http.Get(s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", res.StatusCode, err)
	}
	for _, name := range readmeMetrics(t) {
		series := regexp.MustCompile(`(?m)^` + name + `(_bucket|_count|_sum)?(\{[^}]*\})? `)
		if !series.Match(body) {
			t.Errorf("/metrics of a fresh server has no series of %s", name)
		}
	}
}
