package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/ledger"
)

// journalStore is a store with its journal.
type journalStore interface {
	store
	ledger.Journal
}

var (
	_ ledger.Journal = (*ledger.BoltStore)(nil)
	_ ledger.Journal = (*ledger.RedisStore)(nil)
)

// journalTests is the journal's behaviour on every store. Each case has
// the journal to itself.
var journalTests = []struct {
	name string
	opts ledger.Options
	fn   func(t *testing.T, e *env, j ledger.Journal)
}{
	{name: "NewestFirstWithFilters", fn: testJournalFilters},
	{name: "Pages", fn: testJournalPages},
	{name: "Order", fn: testJournalOrder},
	{name: "Once", fn: testJournalOnce},
	{name: "Retention", fn: testJournalRetention},
	{name: "MaxRecords", opts: ledger.Options{JournalMaxRecords: 3}, fn: testJournalMaxRecords},
	{name: "Validation", fn: testJournalValidation},
}

func TestJournal(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			setupRedis(t, b)
			admin := b.admin
			for _, tc := range journalTests {
				t.Run(tc.name, func(t *testing.T) {
					e := newEnv(t, b, tc.opts)
					if admin != nil {
						// The journal is one per store: start empty, and
						// leave nothing on a shared server.
						forget := func() {
							for _, c := range append(e.customers, "") {
								for _, k := range ledger.JournalKeys(c) {
									admin.Del(context.Background(), k)
								}
							}
						}
						forget()
						t.Cleanup(forget)
					}
					tc.fn(t, e, e.s.(journalStore))
				})
			}
		})
	}
}

func appendJournal(t *testing.T, j ledger.Journal, at time.Time, customer, typ, data string) {
	t.Helper()
	ok, err := j.AppendJournal(ctx, ledger.JournalRecord{At: at, Customer: customer, Type: typ, Data: []byte(data)}, "")
	if err != nil || !ok {
		t.Fatalf("append %s: %v, %v", data, ok, err)
	}
}

// readJournal returns the data of one page, and its next cursor.
func readJournal(t *testing.T, j ledger.Journal, q ledger.JournalQuery) ([]string, string) {
	t.Helper()
	p, err := j.ReadJournal(ctx, q)
	if err != nil {
		t.Fatalf("read %+v: %v", q, err)
	}
	var out []string
	for _, r := range p.Records {
		if r.Customer != q.Customer && q.Customer != "" || r.Type == "" || r.ID == "" {
			t.Errorf("record %+v does not match %+v", r, q)
		}
		out = append(out, string(r.Data))
	}
	return out, p.Next
}

func wantRecords(t *testing.T, j ledger.Journal, q ledger.JournalQuery, want ...string) {
	t.Helper()
	got, next := readJournal(t, j, q)
	if fmt.Sprint(got) != fmt.Sprint(want) || next != "" {
		t.Errorf("read %+v = %q (next %q), want %q and no next page", q, got, next, want)
	}
}

func testJournalFilters(t *testing.T, e *env, j ledger.Journal) {
	a, b := e.customer("a"), e.customer("b")
	now := e.clock.Now()
	wantRecords(t, j, ledger.JournalQuery{})
	appendJournal(t, j, now, a, "invoice.paid", `{"n":1}`)
	appendJournal(t, j, now.Add(time.Second), b, "invoice.paid", `{"n":2}`)
	appendJournal(t, j, now.Add(2*time.Second), "", "customer.created", `{"n":3}`)
	appendJournal(t, j, now.Add(3*time.Second), a, "charge.refunded", `{"n":4}`)

	wantRecords(t, j, ledger.JournalQuery{}, `{"n":4}`, `{"n":3}`, `{"n":2}`, `{"n":1}`)
	wantRecords(t, j, ledger.JournalQuery{Customer: a}, `{"n":4}`, `{"n":1}`)
	wantRecords(t, j, ledger.JournalQuery{Customer: b}, `{"n":2}`)
	wantRecords(t, j, ledger.JournalQuery{Customer: e.customer("nobody")})
	wantRecords(t, j, ledger.JournalQuery{Type: "invoice.paid"}, `{"n":2}`, `{"n":1}`)
	wantRecords(t, j, ledger.JournalQuery{Customer: a, Type: "invoice.paid"}, `{"n":1}`)
	wantRecords(t, j, ledger.JournalQuery{Type: "charge.dispute.created"})

	p, err := j.ReadJournal(ctx, ledger.JournalQuery{Limit: 1})
	if err != nil || len(p.Records) != 1 {
		t.Fatalf("read: %+v, %v", p, err)
	}
	r := p.Records[0]
	if r.Customer != a || r.Type != "charge.refunded" || !r.At.Equal(now.Add(3*time.Second)) {
		t.Errorf("newest record = %+v", r)
	}
}

func testJournalPages(t *testing.T, e *env, j ledger.Journal) {
	a := e.customer("a")
	now := e.clock.Now()
	for i := 1; i <= 7; i++ {
		cust := a
		if i%3 == 0 {
			cust = e.customer("other")
		}
		appendJournal(t, j, now.Add(time.Duration(i)*time.Millisecond), cust, "t", fmt.Sprint(i))
	}
	for _, tc := range []struct {
		q    ledger.JournalQuery
		want []string
	}{
		{ledger.JournalQuery{Limit: 3}, []string{"7", "6", "5", "4", "3", "2", "1"}},
		{ledger.JournalQuery{Limit: 2, Customer: a}, []string{"7", "5", "4", "2", "1"}},
		{ledger.JournalQuery{Limit: 1, Customer: a}, []string{"7", "5", "4", "2", "1"}},
		{ledger.JournalQuery{Limit: 5, Customer: a}, []string{"7", "5", "4", "2", "1"}},
	} {
		var all []string
		pages := 0
		q := tc.q
		for {
			got, next := readJournal(t, j, q)
			all = append(all, got...)
			pages++
			if next == "" || pages > 10 {
				break
			}
			q.Before = next
		}
		wantPages := (len(tc.want) + tc.q.Limit - 1) / tc.q.Limit
		if fmt.Sprint(all) != fmt.Sprint(tc.want) || pages != wantPages {
			t.Errorf("pages of %+v = %q in %d pages, want %q in %d", tc.q, all, pages, tc.want, wantPages)
		}
	}
}

// testJournalOrder: records of one millisecond keep their order, and a
// record dated before the newest goes after it, so a cursor never skips
// it.
func testJournalOrder(t *testing.T, e *env, j ledger.Journal) {
	a := e.customer("a")
	now := e.clock.Now()
	appendJournal(t, j, now, a, "t", "1")
	appendJournal(t, j, now, a, "t", "2")
	appendJournal(t, j, now.Add(-time.Minute), a, "t", "3")
	appendJournal(t, j, now.Add(time.Millisecond), a, "t", "4")
	wantRecords(t, j, ledger.JournalQuery{}, "4", "3", "2", "1")
	wantRecords(t, j, ledger.JournalQuery{Customer: a}, "4", "3", "2", "1")
	p, err := j.ReadJournal(ctx, ledger.JournalQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(p.Records); i++ {
		if p.Records[i-1].ID <= p.Records[i].ID {
			t.Errorf("ids %q then %q do not decrease", p.Records[i-1].ID, p.Records[i].ID)
		}
	}
}

func testJournalOnce(t *testing.T, e *env, j ledger.Journal) {
	a := e.customer("a")
	now := e.clock.Now()
	rec := ledger.JournalRecord{At: now, Customer: a, Type: "t", Data: []byte("1")}
	for i, want := range []bool{true, false, false} {
		ok, err := j.AppendJournal(ctx, rec, "evt_1:ignored")
		if err != nil || ok != want {
			t.Errorf("append %d with once: %v, %v; want %v", i, ok, err, want)
		}
	}
	if ok, err := j.AppendJournal(ctx, rec, "evt_1:applied"); err != nil || !ok {
		t.Errorf("append with another once: %v, %v", ok, err)
	}
	appendJournal(t, j, now, a, "t", "2")
	wantRecords(t, j, ledger.JournalQuery{}, "2", "1", "1")
}

func testJournalRetention(t *testing.T, e *env, j ledger.Journal) {
	a := e.customer("a")
	start := e.clock.Now()
	if ok, err := j.AppendJournal(ctx, ledger.JournalRecord{At: start, Customer: a, Type: "t", Data: []byte("old")}, "once"); err != nil || !ok {
		t.Fatalf("append: %v %v", ok, err)
	}
	e.clock.Advance(ledger.JournalRetention)
	wantRecords(t, j, ledger.JournalQuery{}, "old")
	e.clock.Advance(time.Millisecond)
	// Too old to show, before any write has forgotten it.
	wantRecords(t, j, ledger.JournalQuery{})
	wantRecords(t, j, ledger.JournalQuery{Customer: a})
	// Forgotten with its once key by the next append.
	if ok, err := j.AppendJournal(ctx, ledger.JournalRecord{At: e.clock.Now(), Customer: a, Type: "t", Data: []byte("new")}, "once"); err != nil || !ok {
		t.Errorf("append once again after the first was forgotten: %v %v", ok, err)
	}
	wantRecords(t, j, ledger.JournalQuery{Customer: a}, "new")
	wantRecords(t, j, ledger.JournalQuery{}, "new")
}

func testJournalMaxRecords(t *testing.T, e *env, j ledger.Journal) {
	a, b := e.customer("a"), e.customer("b")
	now := e.clock.Now()
	for i := 1; i <= 5; i++ {
		cust := a
		if i == 4 {
			cust = b
		}
		if ok, err := j.AppendJournal(ctx, ledger.JournalRecord{At: now, Customer: cust, Type: "t", Data: []byte(fmt.Sprint(i))}, fmt.Sprint("once", i)); err != nil || !ok {
			t.Fatalf("append %d: %v %v", i, ok, err)
		}
	}
	wantRecords(t, j, ledger.JournalQuery{}, "5", "4", "3")
	wantRecords(t, j, ledger.JournalQuery{Customer: a}, "5", "3")
	if got, next := readJournal(t, j, ledger.JournalQuery{Customer: a, Limit: 1, Before: strings.Repeat("9", 15) + "-0000000000"}); fmt.Sprint(got) != "[5]" || next == "" {
		t.Errorf("first page of one = %q, next %q; want [5] and a next page", got, next)
	}
	// The once key of a forgotten record is free again; a kept one not.
	if ok, err := j.AppendJournal(ctx, ledger.JournalRecord{At: now, Customer: a, Type: "t", Data: []byte("1 again")}, "once1"); err != nil || !ok {
		t.Errorf("once of a forgotten record: %v %v", ok, err)
	}
	if ok, err := j.AppendJournal(ctx, ledger.JournalRecord{At: now, Customer: a, Type: "t", Data: []byte("5 again")}, "once5"); err != nil || ok {
		t.Errorf("once of a kept record: %v %v", ok, err)
	}
	wantRecords(t, j, ledger.JournalQuery{}, "1 again", "5", "4")
}

func testJournalValidation(t *testing.T, e *env, j ledger.Journal) {
	now := e.clock.Now()
	for _, tc := range []struct {
		name string
		r    ledger.JournalRecord
		once string
		want error
	}{
		{"no time", ledger.JournalRecord{Type: "t", Data: []byte("x")}, "", ledger.ErrInvalidArgument},
		{"bad customer", ledger.JournalRecord{At: now, Customer: "a b", Type: "t", Data: []byte("x")}, "", ledger.ErrInvalidCustomer},
		{"no type", ledger.JournalRecord{At: now, Data: []byte("x")}, "", ledger.ErrInvalidArgument},
		{"no data", ledger.JournalRecord{At: now, Type: "t"}, "", ledger.ErrInvalidArgument},
		{"data too large", ledger.JournalRecord{At: now, Type: "t", Data: make([]byte, ledger.MaxJournalData+1)}, "", ledger.ErrInvalidArgument},
		{"bad once", ledger.JournalRecord{At: now, Type: "t", Data: []byte("x")}, "a b", ledger.ErrInvalidArgument},
	} {
		if _, err := j.AppendJournal(ctx, tc.r, tc.once); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct {
		q    ledger.JournalQuery
		want error
	}{
		{ledger.JournalQuery{Before: "nope"}, ledger.ErrInvalidCursor},
		{ledger.JournalQuery{Before: "1-x"}, ledger.ErrInvalidCursor},
		{ledger.JournalQuery{Customer: "{x}"}, ledger.ErrInvalidCustomer},
		{ledger.JournalQuery{Type: "a b"}, ledger.ErrInvalidArgument},
		{ledger.JournalQuery{Limit: ledger.MaxPageSize + 1}, ledger.ErrInvalidArgument},
		{ledger.JournalQuery{Limit: -1}, ledger.ErrInvalidArgument},
	} {
		if _, err := j.ReadJournal(ctx, tc.q); !errors.Is(err, tc.want) {
			t.Errorf("read %+v: %v, want %v", tc.q, err, tc.want)
		}
	}
	wantRecords(t, j, ledger.JournalQuery{})
}
