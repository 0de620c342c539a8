package config_test

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate-dev/tollgate/config"
)

// No Docker engine runs in the tests: these read the Dockerfile and the
// Makefile as text and hold them to what the README promises.

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ENV, …
	args string
}

// dockerfile returns the instructions of the repository's Dockerfile.
func dockerfile(t *testing.T) []instruction {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// dockerEnv is the environment the image sets (ENV KEY=value).
func dockerEnv(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, in := range dockerfile(t) {
		if in.cmd != "ENV" {
			continue
		}
		for _, kv := range shellWords(t, in.args) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("ENV %s: want KEY=value", in.args)
			}
			env[k] = v
		}
	}
	return env
}

// shellWords splits s as sh would for the simple commands of a Dockerfile
// or a Makefile recipe: on blanks, with "…" and '…' quoting.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			w.WriteByte(c)
		case c == '"' || c == '\'':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				words = append(words, w.String())
				w.Reset()
				in = false
			}
		default:
			w.WriteByte(c)
			in = true
		}
	}
	if quote != 0 {
		t.Fatalf("unterminated quote in %q", s)
	}
	if in {
		words = append(words, w.String())
	}
	return words
}

// goBuild is one go build command: its environment assignments and its
// arguments, without -o and its value (where the binary goes differs).
type goBuild struct {
	env  map[string]string
	args []string
}

// variable matches $(NAME) and ${NAME}, which make and sh spell
// differently.
var variable = regexp.MustCompile(`\$[({]([A-Za-z_][A-Za-z0-9_]*)[)}]`)

// parseGoBuild reads the go build command in cmd, a shell command line
// whose variables are spelt $(X) (make) or ${X} (sh).
func parseGoBuild(t *testing.T, cmd string) goBuild {
	t.Helper()
	cmd = variable.ReplaceAllString(cmd, "$$$1")
	words := shellWords(t, cmd)
	b := goBuild{env: map[string]string{}}
	for len(words) > 0 && strings.Contains(words[0], "=") {
		k, v, _ := strings.Cut(words[0], "=")
		b.env[k] = v
		words = words[1:]
	}
	if len(words) < 2 || words[0] != "$GO" && words[0] != "go" || words[1] != "build" {
		t.Fatalf("not a go build command: %q", cmd)
	}
	for i := 2; i < len(words); i++ {
		if words[i] == "-o" {
			i++
			continue
		}
		b.args = append(b.args, words[i])
	}
	return b
}

var makeName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// makeTarget returns the recipe lines of target in the Makefile, with
// $(NAME) replaced by the value of each NAME := … the Makefile defines.
func makeTarget(t *testing.T, target string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	vars := map[string]string{}
	for _, l := range lines {
		if k, v, ok := strings.Cut(l, ":="); ok && makeName.MatchString(strings.TrimSpace(k)) {
			vars[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	var recipe []string
	in := false
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, target+":"):
			in = true
		case in && strings.HasPrefix(l, "\t"):
			r := strings.TrimPrefix(l, "\t")
			for k, v := range vars {
				r = strings.ReplaceAll(r, "$("+k+")", v)
			}
			recipe = append(recipe, r)
		case in:
			in = false
		}
	}
	if len(recipe) == 0 {
		t.Fatalf("the Makefile has no %s target", target)
	}
	return recipe
}

// TestDockerfileBuildsLikeMake: the image's binary is built with exactly
// the environment and flags of `make build` (static, trimmed paths,
// stripped, version and commit stamped), and the version and commit reach
// it as build arguments: `tollgate version` in a container says what
// `make build` would.
func TestDockerfileBuildsLikeMake(t *testing.T) {
	recipe := makeTarget(t, "build")
	if len(recipe) != 1 {
		t.Fatalf("make build is %d commands, want the one go build: %q", len(recipe), recipe)
	}
	want := parseGoBuild(t, recipe[0])

	var run []string
	args := map[string]bool{}
	for _, in := range dockerfile(t) {
		switch in.cmd {
		case "RUN":
			if strings.Contains(in.args, "go build") {
				build, _, _ := strings.Cut(in.args, "&&")
				run = append(run, build)
			}
		case "ARG":
			name, _, _ := strings.Cut(in.args, "=")
			args[name] = true
		}
	}
	if len(run) != 1 {
		t.Fatalf("the Dockerfile runs go build %d times, want once", len(run))
	}
	got := parseGoBuild(t, run[0])
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the Dockerfile builds with\n  env %v args %q\nmake build with\n  env %v args %q", got.env, got.args, want.env, want.args)
	}
	for _, a := range []string{"VERSION", "COMMIT"} {
		if !args[a] {
			t.Errorf("the Dockerfile has no ARG %s, so docker build cannot set it", a)
		}
		if !slices.ContainsFunc(want.args, func(s string) bool { return strings.Contains(s, "$"+a) }) {
			t.Errorf("make build does not stamp $%s", a)
		}
	}

	// make image passes the same version and commit as make build.
	image := strings.Join(makeTarget(t, "image"), " ")
	for _, a := range []string{"--build-arg VERSION=$(VERSION)", "--build-arg COMMIT=$(COMMIT)"} {
		if !strings.Contains(strings.Join(strings.Fields(image), " "), a) {
			t.Errorf("make image does not pass %s: %s", a, image)
		}
	}
}

// TestImageListensOnEveryInterface: the image sets $TOLLGATE_LISTEN to
// 0.0.0.0:8080 and exposes that port, so that `docker run -p 8080:8080`
// with the README's config (listen: 127.0.0.1:8080, the container's own
// loopback) still answers.
func TestImageListensOnEveryInterface(t *testing.T) {
	env := dockerEnv(t)
	if env[config.EnvListen] != "0.0.0.0:8080" {
		t.Fatalf("the image sets %s=%q, want 0.0.0.0:8080", config.EnvListen, env[config.EnvListen])
	}
	var exposed []string
	for _, in := range dockerfile(t) {
		if in.cmd == "EXPOSE" {
			exposed = append(exposed, strings.Fields(in.args)...)
		}
	}
	if !slices.Contains(exposed, "8080") || !slices.Contains(exposed, "9090") {
		t.Errorf("EXPOSE %q, want 8080 and 9090", exposed)
	}
	data, err := os.ReadFile(filepath.Join("..", "config.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(strings.NewReader(string(data)), envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "0.0.0.0:8080" || c.Admin.Listen != ":9090" {
		t.Errorf("in the image config.example.yaml listens on %q and %q, want 0.0.0.0:8080 and :9090", c.Listen, c.Admin.Listen)
	}
}
