package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// runCLI runs the program as main would and returns what it printed and
// its exit status.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(t.Context(), args, &out, &errb)
	code = exitCode(err, &errb)
	return out.String(), errb.String(), code
}

// unsetenv removes variables for the test and restores them after it.
func unsetenv(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		t.Setenv(n, "") // registers the restore
		os.Unsetenv(n)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout bool // usage on stdout (asked for) or stderr (a mistake)
		wantErr    string
	}{
		{name: "no command", args: nil, wantCode: 2, wantErr: "tollgate: no command given\nRun 'tollgate help' for usage.\n"},
		{name: "help", args: []string{"help"}, wantCode: 0, wantStdout: true},
		{name: "--help", args: []string{"--help"}, wantCode: 0, wantStdout: true},
		{name: "-h", args: []string{"-h"}, wantCode: 0, wantStdout: true},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantErr: "tollgate: unknown command \"frobnicate\"\nRun 'tollgate help' for usage.\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit code = %d, want %d", code, tc.wantCode)
			}
			usageOut := stderr
			if tc.wantStdout {
				usageOut = stdout
			}
			for _, c := range commands() {
				if !strings.Contains(usageOut, "\n  "+c.name+" ") {
					t.Errorf("usage does not list %q:\n%s", c.name, usageOut)
				}
			}
			if tc.wantErr != "" && !strings.HasSuffix(stderr, tc.wantErr) {
				t.Errorf("stderr ends %q, want suffix %q", stderr, tc.wantErr)
			}
		})
	}
}

func TestCommandHelp(t *testing.T) {
	for _, args := range [][]string{{"help", "credit"}, {"credit", "--help"}, {"credit", "cust_1", "-h"}} {
		stdout, stderr, code := runCLI(t, args...)
		if code != 0 || stderr != "" {
			t.Fatalf("%q: code %d, stderr %q", args, code, stderr)
		}
		for _, want := range []string{"Usage: tollgate credit " + creditSynopsis + "\n", "  -key string\n", "  -reason string\n", "  -expires-in string\n", "  -priority int\n", "  -admin string\n", "  -json\n"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%q: help lacks %q:\n%s", args, want, stdout)
			}
		}
	}
	_, stderr, code := runCLI(t, "balance", "--bogus", "x")
	if code != 2 || stderr != "tollgate: balance: flag provided but not defined: -bogus\nRun 'tollgate help' for usage.\n" {
		t.Errorf("unknown flag: code %d, stderr %q", code, stderr)
	}
}

func TestVersion(t *testing.T) {
	t.Run("from ldflags", func(t *testing.T) {
		defer func(v, c string) { version, commit = v, c }(version, commit)
		version, commit = "v1.2.3", "0123abc"
		for _, args := range [][]string{{"version"}, {"--version"}} {
			stdout, stderr, code := runCLI(t, args...)
			want := fmt.Sprintf("tollgate v1.2.3 (commit 0123abc, %s %s/%s)\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			if code != 0 || stdout != want || stderr != "" {
				t.Errorf("%q = %q, %q, %d; want %q", args, stdout, stderr, code, want)
			}
		}
	})
	t.Run("from build info", func(t *testing.T) {
		stdout, _, code := runCLI(t, "version")
		// A test binary has no module version or VCS stamp.
		want := fmt.Sprintf(" (commit unknown, %s %s/%s)\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
		if code != 0 || !strings.HasPrefix(stdout, "tollgate ") || !strings.HasSuffix(stdout, want) {
			t.Errorf("version = %q, want tollgate <version>%s", stdout, want)
		}
	})
	if _, stderr, code := runCLI(t, "version", "extra"); code != 2 || !strings.Contains(stderr, "version takes 0 argument(s), got 1 (extra)") {
		t.Errorf("version extra: %d %q", code, stderr)
	}
}

// exampleVars are the variables config.example.yaml references.
var exampleVars = []string{"TOLLGATE_ADMIN_TOKEN", "REDIS_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY", "AZURE_OPENAI_API_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY"}

func TestCheckExample(t *testing.T) {
	unsetenv(t, append(exampleVars, "TOLLGATE_CONFIG", "TOLLGATE_LISTEN")...)
	path := filepath.Join("..", "..", "config.example.yaml")
	stdout, stderr, code := runCLI(t, "check", "--config", path)
	if code != 0 {
		t.Fatalf("check config.example.yaml: exit %d\n%s", code, stderr)
	}
	// With nothing set, every referenced variable is reported, with its line.
	for _, v := range exampleVars {
		if !strings.Contains(stderr, "environment variable "+v+" is not set") {
			t.Errorf("stderr lacks the warning for %s:\n%s", v, stderr)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if !strings.HasPrefix(line, "warning: "+path+":") {
			t.Errorf("stderr line %q is not a warning with a position", line)
		}
	}
	for _, want := range []string{
		path + " is valid: 10 routes.\n",
		"listen             127.0.0.1:8080\n",
		"store              embedded, file tollgate.db\n",
		"/v1/chat/completions  openai.chat → https://api.openai.com\n  sets headers Authorization; max_output_tokens 4096\n",
		"  MODEL                  INPUT  CACHED_INPUT  CACHE_WRITE_INPUT  AUDIO_INPUT  OUTPUT  AUDIO_OUTPUT\n",
		"  gpt-4o-audio-preview   2.5    2.5           2.5                40           10      80\n",
		"  gpt-4o-mini            0.15   0.075         0.15               0.15         0.6     0.6\n",
		"  gpt-4o-mini:\n    service_tier priority: input 0.25, cached_input 0.125, output 1\n",
		"  o4-mini:\n    service_tier flex: input 0.55, cached_input 0.138, output 2.2\n    service_tier priority: input 2, cached_input 0.5, output 8\n",
		"  gpt-4o-search-preview:\n    tools (per call): web_search 0.035\n",
		"server_tools file_search: 5 calls of 16000 input tokens; server_tools web_search: 5 calls of 25000 input tokens\n",
		"    tools (per call): web_search 0.01, file_search 0.0025, code_interpreter 0.03, image_generation 0.25\n",
		"  MODEL                   INPUT\n  text-embedding-3-large  0.13\n",
		"  dall-e-3            0      0             0            0       -\n    1024x1024                                                   0.04\n",
		"    1024x1024/high                                              0.167\n",
		"  MODEL              INPUT  AUDIO_INPUT  OUTPUT  PER_MINUTE\n  gpt-4o-transcribe  2.5    6            10      0.006\n  whisper-1          0      0            0       0.006\n",
		"  claude-sonnet-4-5         3      0.3           3.75               6                     15\n",
		"    above 200000 input tokens: input 6, cached_input 0.6, cache_write_input 7.5, cache_write_input_1h 12, output 22.5\n",
		"    speed fast: input 30, cached_input 3, cache_write_input 37.5, cache_write_input_1h 60, output 150\n    inference_geo us: token rates × 1.1\n",
		"  MODEL                PER_REQUEST\n  * (any other model)  0.0001\n",
		"stripe price       price_credits_10k = 10000 credits per unit; they expire at the period end on subscriptions, never on one-off purchases; priority 50\n",
		"stripe price       price_pro_monthly = 1000 credits per unit; they expire at the period end + 72h; priority 50\n",
		"stripe price       price_promo_pack = 500 credits per unit; they expire 720h after the grant; priority 10\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "Bearer") {
		t.Error("check printed a header value")
	}

	// $TOLLGATE_CONFIG names the file when --config does not.
	t.Setenv("TOLLGATE_CONFIG", path)
	if stdout2, _, code := runCLI(t, "check"); code != 0 || stdout2 != stdout {
		t.Errorf("check with $TOLLGATE_CONFIG: exit %d, output differs", code)
	}

	// $TOLLGATE_LISTEN (the container image's 0.0.0.0:8080) overrides the
	// file's listen, and check says where the address came from.
	t.Setenv("TOLLGATE_LISTEN", "0.0.0.0:8080")
	stdout3, _, code := runCLI(t, "check")
	if want := "listen             0.0.0.0:8080 (from $TOLLGATE_LISTEN)\n"; code != 0 || !strings.Contains(stdout3, want) {
		t.Errorf("check with $TOLLGATE_LISTEN: exit %d, stdout lacks %q:\n%s", code, want, stdout3)
	}
}

func TestCheckBroken(t *testing.T) {
	unsetenv(t, "TOLLGATE_CONFIG", "OPENAI_KEY")
	dir := t.TempDir()
	path := filepath.Join(dir, "tollgate.yaml")
	const broken = `listen: 127.0.0.1:8080
admin: {token: "${OPENAI_KEY}"}
store:
  hold_ttl: 0
routes:
  - path: /v1/chat/completions
    api: openai.chat
    upstrem: https://api.openai.com
    prices:
      gpt-4o-mini: {input: "abc", output: "0.60"}
`
	if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCLI(t, "check", "--config", path)
	want := "warning: " + path + `:2: admin.token: environment variable OPENAI_KEY is not set; it expands to ""` + "\n" +
		"warning: " + path + ":2: admin.token: is empty: the admin API (/v1/*) refuses every call until it is set; the Stripe webhook, probes and metrics still work\n" +
		"error: " + path + `:4: store.hold_ttl: "0s" must be greater than 0 (want e.g. "10m")` + "\n" +
		"error: " + path + ":6: routes[0].upstream: is empty (want the provider's base URL, e.g. \"https://api.openai.com\")\n" +
		"error: " + path + ":8: routes[0].upstrem: unknown key (did you mean upstream?); allowed keys: path, api, upstream, headers, max_output_tokens, stream_usage, model_from, server_tools, prices\n" +
		"error: " + path + `:10: routes[0].prices.gpt-4o-mini.input: "abc" is not a decimal (want e.g. "0.15")` + "\n" +
		path + ": 4 problems; nothing was started\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("check broken config: exit %d\nstdout %q\nstderr:\n%s\nwant:\n%s", code, stdout, stderr, want)
	}

	_, stderr, code = runCLI(t, "check", "--config", filepath.Join(dir, "nope.yaml"))
	if code != 1 || !strings.Contains(stderr, "tollgate: no config file at "+filepath.Join(dir, "nope.yaml")+" (--config); pass --config FILE or set $TOLLGATE_CONFIG, or start from config.example.yaml\n") {
		t.Errorf("missing config: exit %d, %q", code, stderr)
	}
	t.Chdir(dir)
	os.Remove(path)
	if _, stderr, _ = runCLI(t, "check"); !strings.Contains(stderr, "no config file at tollgate.yaml (the default)") {
		t.Errorf("default config: %q", stderr)
	}
}

func TestServeFlags(t *testing.T) {
	if _, stderr, code := runCLI(t, "serve", "--log-format", "xml"); code != 2 || !strings.Contains(stderr, `--log-format "xml": want json or console`) {
		t.Errorf("serve --log-format xml: exit %d, %q", code, stderr)
	}
	if _, stderr, code := runCLI(t, "serve", "--log-level", "loud"); code != 2 || !strings.Contains(stderr, `--log-level "loud": want debug, info, warn or error`) {
		t.Errorf("serve --log-level loud: exit %d, %q", code, stderr)
	}
}

// TestCheckHidesRedisSecrets: check prints the store's Redis URL without
// its password, also when the password sits where a user name goes.
func TestCheckHidesRedisSecrets(t *testing.T) {
	unsetenv(t, "TOLLGATE_CONFIG")
	for _, tc := range []struct{ url, want string }{
		{"redis://:hunter2@redis:6379/0", "store              redis redis://:xxxxx@redis:6379/0\n"},
		{"redis://hunter2@redis:6379/0", "store              redis redis://xxxxx@redis:6379/0\n"},
	} {
		path := filepath.Join(t.TempDir(), "tollgate.yaml")
		cfg := "store: {redis_url: \"" + tc.url + "\"}\nroutes:\n  - {path: /v1/models, api: flat, upstream: \"http://127.0.0.1:1\", prices: {\"*\": {per_request: \"1\"}}}\n"
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, code := runCLI(t, "check", "--config", path)
		if code != 0 || strings.Contains(stdout+stderr, "hunter2") || !strings.Contains(stdout, tc.want) {
			t.Errorf("check with %s: exit %d, want %q in\n%s%s", tc.url, code, tc.want, stdout, stderr)
		}
	}
}
