package ledger

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/tollgate-dev/tollgate/money"
)

// TestBoltMissingBucketIsCorrupt removes each of a customer's sub-buckets
// from the file in turn and checks that the call needing it fails as
// corrupt data naming the bucket, instead of panicking on a nil bucket.
// The buckets are opened when a call first uses them, so each has a call
// that reaches it.
func TestBoltMissingBucketIsCorrupt(t *testing.T) {
	ctx := context.Background()
	calls := map[string]func(s *BoltStore) error{
		bClosed: func(s *BoltStore) error { return s.Reserve(ctx, "c", "h", 1, time.Minute) },
		bEntries: func(s *BoltStore) error {
			_, err := s.Entries(ctx, "c", "", 0)
			return err
		},
		bCredits: func(s *BoltStore) error {
			_, err := s.Credit(ctx, Credit{Customer: "c", Amount: 1, Kind: KindGrant, Key: "k2"})
			return err
		},
		bSuspension: func(s *BoltStore) error { return s.Suspend(ctx, "c", "fraud") },
	}
	for _, name := range []string{bLots, bLotBurn, bLotExp} {
		calls[name] = func(s *BoltStore) error {
			_, err := s.Lots(ctx, "c")
			return err
		}
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			s, err := OpenBolt(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Credit(ctx, Credit{Customer: "c", Amount: money.Micros(5_000_000), Kind: KindGrant, Key: "k1"}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bbolt.Tx) error {
				return tx.Bucket([]byte(bCustomers)).Bucket([]byte("c")).DeleteBucket([]byte(name))
			})
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			s, err = OpenBolt(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			err = call(s)
			if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), "lacks the "+name+" bucket") {
				t.Fatalf("with the %s bucket gone: %v; want errCorrupt naming it", name, err)
			}
		})
	}
}
