package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// defaultAdminURL is where the client commands look for the admin API when
// neither --admin nor $TOLLGATE_ADMIN_URL says otherwise.
const defaultAdminURL = "http://127.0.0.1:9090"

// maxResponseBytes bounds what the client reads of one admin API answer.
const maxResponseBytes = 64 << 20

// clientOptions are the flags every admin API command shares.
type clientOptions struct {
	admin   *string
	json    *bool
	timeout *time.Duration
}

func addClientFlags(f *flagSet, timeout time.Duration) clientOptions {
	return clientOptions{
		admin:   f.String("admin", "", "admin API base URL (default $TOLLGATE_ADMIN_URL, else "+defaultAdminURL+")"),
		json:    f.Bool("json", false, "print the admin API's JSON response as it is"),
		timeout: f.Duration("timeout", timeout, "give up after this long"),
	}
}

// adminClient calls a running tollgate's admin API.
type adminClient struct {
	base  string // scheme://host[/prefix], no trailing slash
	from  string // where base came from, for messages
	token string
	http  *http.Client
}

// newClient resolves the admin URL (--admin, $TOLLGATE_ADMIN_URL, the
// default) and the token ($TOLLGATE_ADMIN_TOKEN). The token has no flag,
// so that it never shows in the process list or shell history.
func newClient(o clientOptions) (*adminClient, error) {
	raw, from := *o.admin, "--admin"
	if raw == "" {
		raw, from = os.Getenv("TOLLGATE_ADMIN_URL"), "$TOLLGATE_ADMIN_URL"
	}
	if raw == "" {
		raw, from = defaultAdminURL, "the default"
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw // "127.0.0.1:9090" is what admin.listen says
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, usageErrorf("admin URL %q (from %s) is not an http or https base URL; want e.g. %s", raw, from, defaultAdminURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return &adminClient{
		base:  u.String(),
		from:  from,
		token: os.Getenv("TOLLGATE_ADMIN_TOKEN"),
		http:  &http.Client{Timeout: *o.timeout},
	}, nil
}

// apiError is an error answer of the admin API, which is OpenAI-shaped:
// {"error":{"message","type","code"}}.
type apiError struct {
	Status  int
	Message string
	Code    string
	Type    string
	hint    string
}

func (e *apiError) Error() string {
	var b strings.Builder
	b.WriteString(e.Message)
	b.WriteString(" (HTTP " + fmt.Sprint(e.Status))
	if e.Code != "" {
		b.WriteString(", " + e.Code)
	}
	b.WriteString(")")
	b.WriteString(e.hint)
	return b.String()
}

// call sends one request to the admin API and returns the body of a 2xx
// answer. path is already escaped; body, when not nil, is sent as JSON.
func (c *adminClient) call(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "tollgate-cli/"+versionString())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, c.connError(ctx, err)
	}
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	_ = res.Body.Close() // read to the end or failed: err says which
	if err != nil {
		return nil, fmt.Errorf("read the admin API's answer from %s: %w", c.base, err)
	}
	if res.StatusCode/100 == 2 {
		return data, nil
	}
	return nil, c.statusError(res, data)
}

func (c *adminClient) connError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	hint := fmt.Sprintf("is `tollgate serve` running there? Point --admin or $TOLLGATE_ADMIN_URL at its admin.listen address (%s gave this URL)", c.from)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot reach the admin API at %s: connection refused; %s", c.base, hint)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("the admin API at %s did not answer within %s; raise --timeout, or check the address (%s)", c.base, c.http.Timeout, c.from)
	}
	return fmt.Errorf("cannot reach the admin API at %s: %w; %s", c.base, err, hint)
}

func (c *adminClient) statusError(res *http.Response, data []byte) error {
	var body struct {
		Error *struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &body) != nil || body.Error == nil || body.Error.Message == "" {
		text := strings.TrimSpace(string(data))
		if len(text) > 200 {
			text = text[:200] + "…"
		}
		if text == "" {
			text = "(empty body)"
		}
		return fmt.Errorf("the admin API at %s answered %s: %s", c.base, res.Status, text)
	}
	e := &apiError{Status: res.StatusCode, Message: body.Error.Message, Code: body.Error.Code, Type: body.Error.Type}
	if res.StatusCode == http.StatusUnauthorized && c.token == "" {
		e.hint = "; set $TOLLGATE_ADMIN_TOKEN to the server's admin.token"
	}
	return e
}

// getCustomer runs the part the commands that read one customer's
// resource share (balance, lots, access): it parses `name ID` with the
// client flags, GETs the customer's path (sub below it), and under
// --json prints the raw answer. It returns the answer for the command to
// print and the customer's id, or a nil answer when there is nothing
// left to do (--help, --json).
func getCustomer(ctx context.Context, name, help string, args []string, stdout io.Writer, sub ...string) (id string, data []byte, err error) {
	f := newFlagSet(name, "ID", help)
	opts := addClientFlags(f, 30*time.Second)
	args, err = f.parse(args, stdout)
	if err != nil {
		return "", nil, done(err)
	}
	if err := f.wantArgs(args, "ID"); err != nil {
		return "", nil, err
	}
	if err := requireID(f, args[0]); err != nil {
		return "", nil, err
	}
	c, err := newClient(opts)
	if err != nil {
		return "", nil, err
	}
	data, err = c.call(ctx, http.MethodGet, customerPath(args[0], sub...), nil, nil)
	if err != nil {
		return "", nil, err
	}
	if *opts.json {
		return args[0], nil, printJSON(stdout, data)
	}
	return args[0], data, nil
}

// customerPath is the escaped admin API path of a customer's resource.
func customerPath(id string, rest ...string) string {
	p := "/v1/customers/" + url.PathEscape(id)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// printJSON writes the raw response, ending in a newline.
func printJSON(w io.Writer, data []byte) error {
	data = bytes.TrimRight(data, "\n")
	_, err := fmt.Fprintf(w, "%s\n", data)
	return err
}

func decodeAnswer(data []byte, v any, what string) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("the admin API's answer is not %s: %v", what, err)
	}
	return nil
}
