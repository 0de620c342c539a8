package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"go.uber.org/zap"

	"github.com/tollgate-dev/tollgate/config"
)

// TestEmbeddedStoreErrors: an embedded store that cannot be created says
// why in words and what to do (a writable volume for store.path, or
// Redis), before the system's error. A read-only root file system in a
// container used to end tollgate with only "open tollgate.db: read-only
// file system".
func TestEmbeddedStoreErrors(t *testing.T) {
	const fix = "set store.path to a file on a writable volume (one tollgate process per file), or set store.redis_url to keep balances in Redis"
	abs, err := filepath.Abs("tollgate.db")
	if err != nil {
		t.Fatal(err)
	}
	where := "tollgate.db (" + abs + ")"
	// How ledger.OpenBolt reports a file it cannot create.
	cause := func(errno syscall.Errno) error {
		return fmt.Errorf("ledger: open tollgate.db: %w", &fs.PathError{Op: "open", Path: "tollgate.db", Err: errno})
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{
			name: "read-only file system",
			err:  cause(syscall.EROFS),
			want: "open the embedded store: store.path " + where + " is on a read-only file system (a container's read-only root file system?); " + fix + ": ledger: open tollgate.db: open tollgate.db: read-only file system",
		},
		{
			name: "permission denied",
			err:  cause(syscall.EACCES),
			want: fmt.Sprintf("open the embedded store: this process (uid %d) may not create or write store.path %s; %s: ledger: open tollgate.db: open tollgate.db: permission denied", os.Getuid(), where, fix),
		},
		{
			name: "operation not permitted",
			err:  cause(syscall.EPERM),
			want: fmt.Sprintf("open the embedded store: this process (uid %d) may not create or write store.path %s; %s: ledger: open tollgate.db: open tollgate.db: operation not permitted", os.Getuid(), where, fix),
		},
		{
			name: "something else",
			err:  cause(syscall.EIO),
			want: "open the embedded store (store.path " + where + "): ledger: open tollgate.db: open tollgate.db: input/output error",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := embeddedStoreError("tollgate.db", tc.err)
			if got.Error() != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Error("the cause is not wrapped")
			}
		})
	}

	// For real: a store.path whose directory does not exist.
	path := filepath.Join(t.TempDir(), "missing", "tollgate.db")
	_, err = openStore(context.Background(), config.Store{Path: path}, nil, zap.NewNop())
	want := "open the embedded store: the directory of store.path " + path + " does not exist; create it, or " + fix + ": ledger: open " + path + ": open " + path + ": no such file or directory"
	if err == nil || err.Error() != want {
		t.Errorf("openStore: %v\nwant %s", err, want)
	}
}
