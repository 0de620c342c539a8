package proxy_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/money"
)

// stormRequests is how many requests race for one balance.
const stormRequests = 300

// TestStorm sends 300 concurrent requests against one balance that pays
// for about half of them, on each store and on two tollgate instances
// sharing one Redis. Nothing may be overspent: every request either
// succeeds and is charged exactly its cost, or is refused with 402; the
// balance equals the sum of the ledger, is not negative, and nothing stays
// reserved.
func TestStorm(t *testing.T) {
	t.Run("bolt", func(t *testing.T) {
		h := newHarness(t, harnessOptions{})
		storm(t, h.store, h)
	})
	t.Run("redis", func(t *testing.T) {
		h := newHarness(t, harnessOptions{store: redisStore(t)})
		storm(t, h.store, h)
	})
	t.Run("two instances sharing redis", func(t *testing.T) {
		up := newUpstream(t)
		a := newHarness(t, harnessOptions{store: redisStore(t), upstream: up})
		b := newHarness(t, harnessOptions{store: redisStore(t), upstream: up})
		storm(t, a.store, a, b)
	})
}

func storm(t *testing.T, st ledger.Store, instances ...*harness) {
	cust := newCustomer()
	balance := mustMicros(t, "0.5")
	instances[0].grant(cust, balance.String())
	// Each request costs 0.003253 (chat_completion.json's usage) and
	// reserves more (its worst case), so reservations contend harder than
	// charges.
	cost := mustMicros(t, "0.003253")
	body := chatBody("gpt-4o", `,"max_tokens":300`)

	tr := &http.Transport{MaxIdleConnsPerHost: stormRequests}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	statuses := make([]int, stormRequests)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range stormRequests {
		wg.Go(func() {
			<-start
			h := instances[i%len(instances)]
			req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("X-Tollgate-Customer", cust)
			res, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			res.Body.Close()
			statuses[i] = res.StatusCode
		})
	}
	close(start)
	wg.Wait()

	ok, refused := 0, 0
	for _, s := range statuses {
		switch s {
		case 200:
			ok++
		case 402:
			refused++
		default:
			t.Errorf("status %d", s)
		}
	}
	if ok == 0 || refused == 0 {
		t.Fatalf("%d succeeded and %d were refused; the balance should pay for some but not all", ok, refused)
	}
	charges := waitSettled(t, st, cust, ok, 5*time.Second)
	var charged money.Micros
	for _, c := range charges {
		if c.Amount != -cost {
			t.Errorf("a charge of %s, want %s", -c.Amount, cost)
		}
		charged -= c.Amount
	}
	if charged != money.Micros(ok)*cost {
		t.Errorf("charged %s for %d successes, want %s", charged, ok, money.Micros(ok)*cost)
	}
	acct, err := st.Account(context.Background(), cust)
	if err != nil {
		t.Fatal(err)
	}
	var sum money.Micros
	page, err := st.Entries(context.Background(), cust, "", ledger.MaxPageSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range page.Entries {
		sum += e.Amount
	}
	if acct.Balance != sum || acct.Balance != balance-charged || acct.Balance < 0 || acct.Reserved != 0 {
		t.Errorf("balance %s, ledger sum %s, reserved %s; want balance %s = ledger sum ≥ 0 and nothing reserved",
			acct.Balance, sum, acct.Reserved, balance-charged)
	}
	t.Logf("%d succeeded, %d refused with 402; charged %s of %s", ok, refused, charged, balance)
}
