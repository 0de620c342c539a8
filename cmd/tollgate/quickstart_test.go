package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's quick start is executed as written by TestQuickStart. What
// it reads, in the section from "## Quick start" to the next heading:
//
//   - a fenced block marked sh is commands. The first one starts the
//     server: it runs in the background until the test ends, and the
//     next blocks run once its admin API answers. The others run in one
//     bash session, in order, as someone pasting them into a second
//     terminal would, from the repository's root;
//   - a fenced block marked js is a Node program, run with node where the
//     openai package is installed (see nodeModules);
//   - a fenced block marked json, text or http right after one of those
//     is the output that block must print, compared exactly after
//     normalize has replaced what differs from run to run (ids, times,
//     dates) in both. Nothing else is loose.

// quickBlock is a fenced block of the quick start.
type quickBlock struct {
	lang, code string
	want       *string // the output block after it, if any
	line       int     // where it starts in README.md
}

// quickStart returns the quick start's blocks.
func quickStart(t *testing.T, readme string) []quickBlock {
	t.Helper()
	start := strings.Index(readme, "\n## Quick start\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Quick start" section`)
	}
	lines := strings.Split(readme[start+1:], "\n")
	base := strings.Count(readme[:start+1], "\n") + 1
	var blocks []quickBlock
	for i := 1; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "#") {
			break // the next heading
		}
		lang, ok := strings.CutPrefix(l, "```")
		if !ok {
			if strings.TrimSpace(l) != "" && len(blocks) > 0 {
				blocks[len(blocks)-1].line = -blocks[len(blocks)-1].line // prose since: an output block no longer follows
			}
			continue
		}
		j := i + 1
		for j < len(lines) && lines[j] != "```" {
			j++
		}
		if j == len(lines) {
			t.Fatalf("README.md:%d: unclosed code block", base+i)
		}
		code := strings.Join(lines[i+1:j], "\n") + "\n"
		switch lang {
		case "sh", "js":
			blocks = append(blocks, quickBlock{lang: lang, code: code, line: base + i})
		case "json", "text", "http":
			if len(blocks) == 0 || blocks[len(blocks)-1].line < 0 || blocks[len(blocks)-1].want != nil {
				t.Fatalf("README.md:%d: a %s output block that follows no command block", base+i, lang)
			}
			blocks[len(blocks)-1].want = &code
		default:
			t.Fatalf("README.md:%d: a %q block in the quick start; the test runs sh and js, and checks json, text and http", base+i, lang)
		}
		i = j
	}
	for k := range blocks {
		if blocks[k].line < 0 {
			blocks[k].line = -blocks[k].line
		}
	}
	if len(blocks) < 2 || !strings.Contains(blocks[0].code, " serve ") {
		t.Fatalf("the quick start does not start with a serve command: %+v", blocks)
	}
	return blocks
}

// volatile are the parts of the outputs that differ from run to run.
var volatile = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`), "<time>"},
	{regexp.MustCompile(`(?m)^Date: .*$`), "Date: <date>"},
	{regexp.MustCompile(`"created":\d+`), `"created":<unix>`},
	{regexp.MustCompile(`\btg_[0-9a-f]{32}\b`), "tg_<id>"},
	{regexp.MustCompile(`\b(chatcmpl-mock|resp_mock|msg_mock|req_mock_|modr-mock)[A-Z2-7]{26}\b`), "${1}<id>"},
}

// normalize makes an output comparable: LF line ends, volatile values
// replaced, no trailing blank lines.
func normalize(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	for _, v := range volatile {
		s = v.re.ReplaceAllString(s, v.with)
	}
	return strings.TrimRight(s, "\n") + "\n"
}

// nodeModules returns a node_modules directory with the openai package,
// from $TOLLGATE_TEST_NODE_MODULES (.ci/run installs one there), or "".
func nodeModules() string {
	dir := os.Getenv("TOLLGATE_TEST_NODE_MODULES")
	if dir == "" {
		return ""
	}
	if _, err := os.Stat(filepath.Join(dir, "openai", "package.json")); err != nil {
		return ""
	}
	return dir
}

// skipOrFail skips the test with why, or fails it under CI, where
// everything the test needs must be there (.ci/run installs it).
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// TestQuickStart runs the README's quick start as written and checks its
// outputs. It needs bash, curl, go and the quick start's ports; node with
// the openai package for the SDK step.
func TestQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("the quick start builds and runs tollgate; skipped under -short")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := quickStart(t, string(raw))
	for _, tool := range []string{"bash", "curl", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, "the quick start needs "+tool+" on PATH")
		}
	}
	// The quick start uses the ports of config.example.yaml.
	for _, addr := range []string{"127.0.0.1:8080", ":9090"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			skipOrFail(t, fmt.Sprintf("the quick start needs %s free: %v", addr, err))
		}
		ln.Close()
	}
	env := append(os.Environ(), "TOLLGATE_ADMIN_TOKEN=", "TOLLGATE_ADMIN_URL=", "TOLLGATE_CONFIG=")

	server := startQuickServer(t, root, env, blocks[0])

	// The other shell blocks run in one bash session; a marker line
	// between them tells their outputs apart.
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	marker := func(i int) string { return fmt.Sprintf("@@quickstart-block-%d@@", i) }
	var nodeDir, notRun string
	for i, b := range blocks[1:] {
		fmt.Fprintf(&script, "printf '%%s\\n' '%s'\n", marker(i))
		switch b.lang {
		case "sh":
			script.WriteString(b.code)
		case "js":
			mods := nodeModules()
			if mods == "" {
				why := fmt.Sprintf("README.md:%d: the SDK step needs node and the openai package: npm install --prefix DIR openai, then set TOLLGATE_TEST_NODE_MODULES=DIR/node_modules", b.line)
				if os.Getenv("CI") != "" {
					t.Fatal(why)
				}
				notRun = why
				blocks[i+1].want = nil
				continue
			}
			if nodeDir == "" {
				nodeDir = t.TempDir()
				if err := os.Symlink(mods, filepath.Join(nodeDir, "node_modules")); err != nil {
					t.Fatal(err)
				}
			}
			file := filepath.Join(nodeDir, fmt.Sprintf("block%d.mjs", i))
			if err := os.WriteFile(file, []byte(b.code), 0o600); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&script, "node %q\n", file)
		}
	}
	fmt.Fprintf(&script, "printf '%%s\\n' '%s'\n", marker(len(blocks)-1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir, cmd.Env = root, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()

	out := stdout.String()
	for i, b := range blocks[1:] {
		start := strings.Index(out, marker(i)+"\n")
		end := strings.Index(out, marker(i+1)+"\n")
		if start < 0 || end < 0 {
			t.Fatalf("README.md:%d: the quick start stopped in this block: %v\nstdout:\n%s\nstderr:\n%s\nserver:\n%s", b.line, runErr, out, stderr.String(), server.String())
		}
		got := out[start+len(marker(i))+1 : end]
		if b.want == nil {
			continue
		}
		if g, w := normalize(got), normalize(*b.want); g != w {
			t.Errorf("README.md:%d: the output differs from the README's (after normalizing ids and times):\ngot:\n%s\nwant:\n%s", b.line, g, w)
		}
	}
	if runErr != nil {
		t.Errorf("the quick start failed: %v\n%s", runErr, stderr.String())
	}
	if notRun != "" {
		// Everything else was checked; a failure above still fails.
		t.Skip(notRun)
	}
}

// startQuickServer starts the quick start's first block, the server, in
// its own process group, and waits until its admin API answers. The test's
// end stops it as Ctrl-C would, and checks that it stopped cleanly.
func startQuickServer(t *testing.T, root string, env []string, b quickBlock) *syncBuffer {
	t.Helper()
	out := &syncBuffer{}
	cmd := exec.Command("bash", "-c", b.code)
	cmd.Dir, cmd.Env = root, env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// Ctrl-C reaches the whole foreground process group: go run and
		// tollgate.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
			// go run itself exits 1 when interrupted, whatever its
			// program does: tollgate's own last line tells.
			if !strings.Contains(out.String(), `"msg":"tollgate stopped"`) {
				t.Errorf("README.md:%d: the server did not stop cleanly on Ctrl-C:\n%s", b.line, out.String())
			}
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("README.md:%d: the server did not stop within 30 s of Ctrl-C", b.line)
		}
	})
	// go run compiles first: give it time on a cold build cache.
	deadline := time.Now().Add(4 * time.Minute)
	for {
		res, err := http.Get("http://127.0.0.1:9090/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return out
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("README.md:%d: the server exited: %v\n%s", b.line, err, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("README.md:%d: the server did not become ready:\n%s", b.line, out.String())
		}
	}
}
