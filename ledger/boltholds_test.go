package ledger

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// TestMemCustomerScans drives one customer's holds in memory through
// random puts, drops, extends, settles in flight (before their charge is
// written, written but not committed, committed) and clock steps, and
// checks after every step that the slice the scans walk holds exactly the
// live holds, that expire closes exactly the holds a full walk of the map
// would, and that reserved and txReserved sum exactly the holds a full
// walk counts. The file the readers ask about written charges is a real
// bbolt file, where a hold's charge is recorded or not at random.
func TestMemCustomerScans(t *testing.T) {
	h := newMemHolds(1<<20, time.Minute)
	c := h.lock("c")
	defer h.unlock("c", c)
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "scan.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin(true)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for _, name := range []string{bCustomers, bForget} {
		if _, err := tx.CreateBucket([]byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	bc, err := openCustomer(tx, "c", true)
	if err != nil {
		t.Fatal(err)
	}
	inFile := map[string]bool{} // holds whose charge the file records
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
			if hd.settling > 0 {
				hd.settling = 0
				hd.entry.Store(0)
				hd.charged.Store(false)
				break
			}
			hd.settling = 1
			hd.actual = max(hd.actual, rng.Int64N(2000)) // as Settle sets it; stale once settling ends
			if rng.IntN(3) == 0 {
				break // its transaction has not written the charge yet
			}
			hd.entry.Store(1 + rng.Int64N(10))
			switch rng.IntN(3) {
			case 0:
				hd.charged.Store(true)
			case 1:
				if err := bc.closeHold(hd.id, holdSettled, now, 1000*time.Hour, hd.entry.Load(), 0); err != nil {
					t.Fatal(err)
				}
				inFile[hd.id] = true
			default:
				// Only the closed record goes; its forget-index key
				// stays, which the store never leaves behind, but this
				// transaction is only read and is rolled back.
				if err := bc.closed.Delete([]byte(hd.id)); err != nil {
					t.Fatal(err)
				}
				inFile[hd.id] = false
			}
		default:
			now += rng.Int64N(100)
			seq := rng.Int64N(12)
			wantClosed := 0
			var wantSum, wantTx int64
			for _, hd := range c.live {
				e := hd.entry.Load()
				if hd.expiry > now && !hd.charged.Load() && (e == 0 || !inFile[hd.id]) {
					wantTx += hd.amount
				}
				switch {
				case hd.expiry > now || hd.settling > 0:
					// Being settled, expired or not: it counts, for the
					// larger of its amount and its charge, until the
					// charge is in the snapshot.
					if !(hd.settling > 0 && e != 0 && e <= seq && (hd.charged.Load() || inFile[hd.id])) {
						if hd.settling > 0 {
							wantSum += max(hd.amount, hd.actual)
						} else {
							wantSum += hd.amount
						}
					}
				default:
					wantClosed++
				}
			}
			tsum, err := h.txReserved(bc, now)
			if err != nil {
				t.Fatal(err)
			}
			if tsum != wantTx {
				t.Fatalf("step %d: txReserved %d, a walk of the map sums %d", step, tsum, wantTx)
			}
			var got int
			if rng.IntN(2) == 0 {
				got = c.expire(now, retention)
			} else {
				before := len(c.live)
				sum, _, err := c.reserved(now, retention, seq, func(id string) (bool, error) { return bc.settled(id, now) })
				if err != nil {
					t.Fatal(err)
				}
				if sum != wantSum {
					t.Fatalf("step %d: reserved %d as of entry %d, a walk of the map sums %d", step, sum, seq, wantSum)
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
