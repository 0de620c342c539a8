package ledger

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestMemCustomerScans drives one customer's holds in memory through
// random puts, drops, extends, settles in flight and clock steps, and
// checks after every step that the slice the scans walk holds exactly
// the live holds, that expire closes exactly the holds a full walk of the
// map would, and that reserved sums exactly the holds a full walk counts.
func TestMemCustomerScans(t *testing.T) {
	h := newMemHolds(1<<20, time.Minute)
	c := h.lock("c")
	defer h.unlock("c", c)
	rng := rand.New(rand.NewPCG(1, 2))
	const retention = int64(time.Hour / time.Millisecond)
	now := int64(1_000_000)
	next := 0
	for step := range 20_000 {
		switch op := rng.IntN(10); {
		case op < 4:
			id := fmt.Sprintf("h%d", next)
			next++
			c.put(id, &memHold{amount: rng.Int64N(1000), expiry: now + rng.Int64N(500), ttl: 500})
		case op < 6 && len(c.order) > 0:
			c.drop(c.order[rng.IntN(len(c.order))].id)
		case op < 7 && len(c.order) > 0:
			hd := c.order[rng.IntN(len(c.order))]
			c.extend(hd, hd.expiry+rng.Int64N(500), 500)
		case op < 8 && len(c.order) > 0:
			hd := c.order[rng.IntN(len(c.order))]
			hd.settling = 1 - hd.settling
		default:
			now += rng.Int64N(100)
			wantClosed := 0
			var wantSum int64
			for _, hd := range c.live {
				switch {
				case hd.expiry > now:
					wantSum += hd.amount
				case hd.settling == 0:
					wantClosed++
				}
			}
			var got int
			if rng.IntN(2) == 0 {
				got = c.expire(now, retention)
			} else {
				before := len(c.live)
				sum, err := c.reserved(now, retention, 0, func(string) (bool, error) { return false, nil })
				if err != nil {
					t.Fatal(err)
				}
				if sum != wantSum {
					t.Fatalf("step %d: reserved %d, a walk of the map sums %d", step, sum, wantSum)
				}
				got = before - len(c.live)
			}
			if got != wantClosed {
				t.Fatalf("step %d: the scan closed %d holds, a walk of the map finds %d due", step, got, wantClosed)
			}
			for _, hd := range c.live {
				if hd.expiry <= now && hd.settling == 0 {
					t.Fatalf("step %d: %s is due at %d and still live at %d", step, hd.id, hd.expiry, now)
				}
			}
		}
		if len(c.order) != len(c.live) {
			t.Fatalf("step %d: %d holds in order, %d live", step, len(c.order), len(c.live))
		}
		for i, hd := range c.order {
			if hd.at != i || c.live[hd.id] != hd {
				t.Fatalf("step %d: order[%d] is %s at %d, live has %p for it, not %p", step, i, hd.id, hd.at, c.live[hd.id], hd)
			}
			if hd.expiry < c.nextExpiry {
				t.Fatalf("step %d: %s expires at %d, before the bound %d", step, hd.id, hd.expiry, c.nextExpiry)
			}
		}
	}
}
