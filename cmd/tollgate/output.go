package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// printer writes a command's output and keeps the first write error, so
// that the command checks once, when it is done, that all it printed
// arrived: `tollgate ledger ID --all > /full/disk` or a closed pipe exits
// with status 1 instead of reporting success ("Errors are values",
// https://go.dev/blog/errors-are-values). After an error it writes
// nothing more.
type printer struct {
	w   io.Writer
	err error
}

// Write implements io.Writer, for what writes to one (flag.FlagSet's
// defaults, text/tabwriter).
func (p *printer) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n, err := p.w.Write(b)
	p.err = err
	return n, err
}

func (p *printer) printf(format string, args ...any) {
	_, _ = fmt.Fprintf(p, format, args...) // Write keeps the error
}

// table prints tab-separated cells, aligned in columns two spaces apart
// (text/tabwriter) when done writes them out.
type table struct {
	out printer
	tw  *tabwriter.Writer
}

func newTable(w io.Writer) *table {
	t := &table{out: printer{w: w}}
	t.tw = tabwriter.NewWriter(&t.out, 0, 0, 2, ' ', 0)
	return t
}

func (t *table) printf(format string, args ...any) {
	_, _ = fmt.Fprintf(t.tw, format, args...) // t.out keeps the error
}

// done writes the table out and returns the first write error.
func (t *table) done() error {
	_ = t.tw.Flush() // t.out keeps the error
	return t.out.err
}
