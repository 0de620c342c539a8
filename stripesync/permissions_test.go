package stripesync

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestAPIReadsCoverTheCode checks apiReads against the code: every Stripe
// API path the package calls (a string literal starting with /v1/ in a
// non-test file) lies under a listed resource, and every listed resource
// is called, so the permissions the documentation gives are derived from
// what the code does.
func TestAPIReadsCoverTheCode(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil || !strings.HasPrefix(s, "/v1/") {
				return true
			}
			found := false
			for _, r := range apiReads {
				if s == r.path || strings.HasPrefix(s, r.path+"/") {
					used[r.path], found = true, true
				}
			}
			if !found {
				t.Errorf("%s: the code calls %s, which no entry of apiReads covers: add the resource, so that the documented key permissions include it", fset.Position(lit.Pos()), s)
			}
			return true
		})
	}
	for _, r := range apiReads {
		if !used[r.path] {
			t.Errorf("apiReads lists %s (%s), which the code never calls", r.resource, r.path)
		}
	}
	if got, want := RestrictedKeyPermissions(), "Read access to Checkout Sessions, Invoices, PaymentIntents, Charges, Subscriptions and Events"; got != want {
		t.Errorf("RestrictedKeyPermissions() = %q, want %q", got, want)
	}
}

// TestDocumentedKeyPermissions checks that each place that tells users
// which permissions a restricted key needs says RestrictedKeyPermissions,
// word for word (across line breaks and YAML comment markers).
func TestDocumentedKeyPermissions(t *testing.T) {
	comment := regexp.MustCompile(`(?m)^\s*#\s?`)
	space := regexp.MustCompile(`\s+`)
	want := RestrictedKeyPermissions()
	for _, path := range []string{"README.md", "config.example.yaml", "deploy/kubernetes/secret.example.yaml"} {
		raw, err := os.ReadFile(filepath.Join("..", path))
		if err != nil {
			t.Fatal(err)
		}
		text := space.ReplaceAllString(comment.ReplaceAllString(string(raw), ""), " ")
		if !strings.Contains(text, want) {
			t.Errorf("%s does not say %q", path, want)
		}
		if n := strings.Count(strings.ToLower(text), "read access to"); n != 1 {
			t.Errorf("%s says \"read access to\" %d times, want once: state the permissions in one place", path, n)
		}
	}
}
