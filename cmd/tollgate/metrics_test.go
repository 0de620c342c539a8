package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	tgusage "github.com/tollgate-dev/tollgate/usage"
)

var metricName = regexp.MustCompile("`(tollgate_[a-z_]+)`")

// readmeMetrics returns the metric names the README's "Metrics and probes"
// table lists, and the row of each.
func readmeMetrics(t *testing.T) (names []string, rows map[string]string) {
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
	rows = map[string]string{}
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `tollgate_") {
			continue
		}
		// The first column names one metric or several.
		for _, m := range metricName.FindAllStringSubmatch(strings.Split(line, "|")[1], -1) {
			names = append(names, m[1])
			rows[m[1]] = line
		}
	}
	if len(names) < 15 {
		t.Fatalf("found only %d metrics in the README's table: %v", len(names), names)
	}
	return names, rows
}

// TestMetricsFromTheStart checks that /metrics on a server that has
// served nothing yet lists every metric the README documents, each with
// at least one series at zero, so that dashboards and alerts (rate(),
// absent()) work from the first scrape; and that every class a ledger
// entry counts has its series on the route, named in the README's row of
// tollgate_tokens_total or tollgate_tool_calls_total.
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
	names, rows := readmeMetrics(t)
	for _, name := range names {
		series := regexp.MustCompile(`(?m)^` + name + `(_bucket|_count|_sum)?(\{[^}]*\})? `)
		if !series.Match(body) {
			t.Errorf("/metrics of a fresh server has no series of %s", name)
		}
	}
	for class := range (tgusage.Tokens{}).TokenCounts() {
		metric, label, value := "tollgate_tokens_total", "class", strings.TrimSuffix(class, "_tokens")
		if tool, ok := strings.CutSuffix(class, "_calls"); ok {
			metric, label, value = "tollgate_tool_calls_total", "tool", tool
		}
		// The exposition format sorts labels by name: class, route, tool.
		line := fmt.Sprintf(`%s{%s=%q,route="/v1/chat/completions"} 0`, metric, label, value)
		if label == "tool" {
			line = fmt.Sprintf(`%s{route="/v1/chat/completions",%s=%q} 0`, metric, label, value)
		}
		if !bytes.Contains(body, []byte("\n"+line+"\n")) {
			t.Errorf("/metrics of a fresh server has no %s", line)
		}
		if !strings.Contains(rows[metric], "`"+value+"`") {
			t.Errorf("the README's row of %s does not name the %s `%s`: %s", metric, label, value, rows[metric])
		}
	}
}
