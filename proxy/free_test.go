package proxy_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

// TestFreeRouteLeavesNoRecord sends requests naming a thousand customer
// ids nobody ever credited to a route priced zero: they are served, and
// the embedded store's file does not grow (it grew by about 8 KB per id
// when every free request stored a hold and a zero charge). A suspended
// customer and one below zero are still refused on the free route.
func TestFreeRouteLeavesNoRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tollgate.db")
	st, err := ledger.OpenBolt(path, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	yaml := configWith(t, `"*": {per_request: "0.001"}`, `"*": {per_request: "0"}`)
	h := newHarness(t, harnessOptions{store: st, yaml: yaml})
	size := func() int64 {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()

	const customers, workers = 1000, 8
	ids := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				res, body := h.do(request{path: "/v1/models", customer: fmt.Sprintf("free-%s-%d", runID, i)})
				if res.StatusCode != http.StatusOK {
					t.Errorf("free request: %d %s", res.StatusCode, body)
				}
			}
		}()
	}
	for i := range customers {
		ids <- i
	}
	close(ids)
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Drain(ctx); err != nil { // every settlement committed
		t.Fatal(err)
	}
	if after := size(); after != before {
		t.Errorf("%d free requests of new customers grew the store from %d to %d bytes", customers, before, after)
	}

	suspended, debtor := newCustomer(), newCustomer()
	h.grant(suspended, "1")
	if err := st.Suspend(context.Background(), suspended, "dp_free"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Credit(context.Background(), ledger.Credit{Customer: debtor, Amount: -1, Kind: ledger.KindAdjust, Key: "debt"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		customer string
		status   int
		code     string
	}{
		{suspended, http.StatusForbidden, "customer_suspended"},
		{debtor, http.StatusPaymentRequired, "insufficient_credits"},
	} {
		res, body := h.do(request{path: "/v1/models", customer: tc.customer})
		if res.StatusCode != tc.status || decodeError(t, body).Error.Code != tc.code {
			t.Errorf("free request of %s: %d %s; want %d %s", tc.customer, res.StatusCode, body, tc.status, tc.code)
		}
	}
}
