package proxy

import (
	"regexp"
	"testing"
	"time"
)

// TestRequestIDOrder checks the request id's shape and that ids made later
// sort after earlier ones (the embedded store's settled-hold index grows
// at its end because of it), while ids of the same millisecond differ.
func TestRequestIDOrder(t *testing.T) {
	shape := regexp.MustCompile(`^tg_[0-9a-f]{32}$`)
	at := time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)
	prev := newRequestID(at)
	seen := map[string]bool{prev: true}
	for i := 1; i <= 1000; i++ {
		now := at.Add(time.Duration(i/10) * time.Millisecond)
		id := newRequestID(now)
		if !shape.MatchString(id) {
			t.Fatalf("id %q is not tg_ and 32 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("id %q made twice", id)
		}
		seen[id] = true
		if i%10 == 0 && id <= prev {
			t.Fatalf("id %q made at %s sorts before %q, made a millisecond earlier", id, now, prev)
		}
		prev = id
	}
	if got, want := newRequestID(at)[3:15], "01a2370e1700"; got != want {
		t.Fatalf("time part %q, want %q (unix ms %d in hex)", got, want, at.UnixMilli())
	}
}
