package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	env := func(k string) (string, bool) {
		v, ok := map[string]string{"A": "alpha", "EMPTY": "", "Q": `"x": [y]`}[k]
		return v, ok
	}
	tests := []struct {
		name, in, want string
		unset          []string
		err            string
	}{
		{name: "no reference", in: "plain $text", want: "plain $text"},
		{name: "one", in: "${A}", want: "alpha"},
		{name: "inside text", in: "Bearer ${A}!", want: "Bearer alpha!"},
		{name: "several", in: "${A}-${A}", want: "alpha-alpha"},
		{name: "set but empty is not reported", in: "x${EMPTY}y", want: "xy"},
		{name: "unset", in: "a${NOPE}b${NOPE2}", want: "ab", unset: []string{"NOPE", "NOPE2"}},
		{name: "escaped", in: "$${A} and $$ and $5", want: "${A} and $$ and $5"},
		{name: "value is not expanded again", in: "${Q}", want: `"x": [y]`},
		{name: "underscore and digits", in: "${_X1}", want: "", unset: []string{"_X1"}},
		{name: "unclosed", in: "${A", err: `has "${" without a closing "}"; write ${NAME}, or $${ for a literal "${"`},
		{name: "empty name", in: "${}", err: `has ${}, which is not a variable reference; names are letters, digits and underscores (write $${ for a literal "${")`},
		{name: "leading digit", in: "${1A}", err: `has ${1A}, which is not a variable reference; names are letters, digits and underscores (write $${ for a literal "${")`},
		{name: "default syntax is not supported", in: "${A:-x}", err: `has ${A:-x}, which is not a variable reference; names are letters, digits and underscores (write $${ for a literal "${")`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, unset, err := expand(tc.in, env)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("expand(%q) error = %v, want %s", tc.in, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want || !reflect.DeepEqual(unset, tc.unset) {
				t.Errorf("expand(%q) = %q, %q, %v; want %q, %q", tc.in, got, unset, err, tc.want, tc.unset)
			}
		})
	}
}

func TestParentPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"routes[0].prices.gpt-4o.input", "routes[0].prices.gpt-4o"},
		{"routes[0].prices", "routes[0]"},
		{"routes[0]", "routes"},
		{"routes", ""},
		{`routes[0].prices."gpt-4.1"`, "routes[0].prices"},
		{`routes[0].prices."gpt-4.1".per_image."1024x1024/hd"`, `routes[0].prices."gpt-4.1".per_image`},
		{`a."x\"y"`, "a"},
	}
	for _, tc := range tests {
		if got := parentPath(tc.in); got != tc.want {
			t.Errorf("parentPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzParse: no input makes Parse panic or hang, and an error never comes
// with a nil Config unless the YAML itself was unreadable.
func FuzzParse(f *testing.F) {
	f.Add("listen: :8080\nroutes:\n  - {path: /v1/x, api: flat, upstream: \"https://a\", prices: {\"*\": {per_request: 1}}}\n")
	f.Add("a: &a {b: *a}\n")
	f.Add("routes: [{<<: {path: /x}, prices: {m: {per_image: {\"*\": \"1.5\"}}}}]\nstripe: {webhook_secrets: [\"${X}\"]}\n")
	f.Add("x: \"${A\"\n")
	f.Fuzz(func(t *testing.T, doc string) {
		env := func(k string) (string, bool) { return strings.Repeat(k, 2), len(k)%2 == 0 }
		c, err := Parse(strings.NewReader(doc), env)
		if err == nil && c == nil {
			t.Fatal("nil Config without an error")
		}
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Parse accepted a Config that Validate rejects: %v", verr)
			}
		}
	})
}
