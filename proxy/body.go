package proxy

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"
)

// A request body that stops arriving must not hold a handler, a
// connection and its buffers forever: only the header and idle timeouts
// guard the proxy listener, since its requests and streams may rightly
// last for minutes (a whole-request ReadTimeout would cut large uploads
// and long streams alike). So while the body is read, the connection's
// read deadline is request_body_timeout ahead, and every read that brings
// bytes moves it forward: the timeout bounds a pause, not the upload, as
// nginx's client_body_timeout does. It works the same for a
// Content-Length, a chunked body and an HTTP/2 stream (where
// http.ResponseController sets the stream's own deadline, not the
// connection's). The deadlines are real time, not the Server's clock:
// the network runs on it.

// progressBody extends the read deadline of its request by timeout after
// every read that brought bytes.
type progressBody struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	}
	return n, err
}

// watchBody returns r's body, read with request_body_timeout as the
// longest pause between bytes, and a function to call once the whole body
// is read. That function lifts the deadline: after the body, the server
// keeps reading the connection to notice a client that goes away, and a
// deadline passing then would look like one, cancelling the request. After
// a failed read the deadline stays, so that the server's own attempt to
// drain the rest of the body before reusing the connection is bounded
// too. A ResponseWriter that cannot set deadlines (a test recorder, a
// wrapper) reads without one.
func watchBody(w http.ResponseWriter, r *http.Request, timeout time.Duration) (io.Reader, func()) {
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return r.Body, func() {}
	}
	return &progressBody{r: r.Body, rc: rc, timeout: timeout}, func() { _ = rc.SetReadDeadline(time.Time{}) }
}

// bodyTimedOut is the answer to a body that stopped arriving. On HTTP/1
// the connection is closed after it: the rest of the body may still come
// and cannot be told from the next request. An HTTP/2 stream is reset by
// the server on its own, and the connection's other streams go on.
func bodyTimedOut(w http.ResponseWriter, r *http.Request, timeout time.Duration) error {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	return refuse(http.StatusRequestTimeout, CodeRequestTimeout,
		"the request body stopped arriving: no bytes for %s (request_body_timeout), so tollgate gave up on it; nothing was forwarded or charged. Send the whole body without pausing, or raise request_body_timeout",
		timeout)
}

// readBody reads the request body, at most limit bytes, waiting at most
// timeout for each next byte (see body.go). A body of known length is
// read into one exact buffer.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, nil
	}
	body, read := watchBody(w, r, timeout)
	var buf []byte
	var err error
	if r.ContentLength > 0 {
		buf = make([]byte, r.ContentLength)
		_, err = io.ReadFull(body, buf)
	} else {
		buf, err = io.ReadAll(http.MaxBytesReader(w, io.NopCloser(body), limit))
	}
	switch {
	case err == nil:
		read()
		return buf, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, bodyTimedOut(w, r, timeout)
	}
	return nil, bodyError(err)
}

func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return refuse(http.StatusBadRequest, CodeInvalidRequest, "could not read the request body: it ended early or was malformed")
}

func (ex *exchange) getBody() (io.ReadCloser, error) {
	return &bodyReader{b: ex.body, sent: &ex.sent}, nil
}

// bodyReader reads the request body to the Transport, and records when
// the Transport has taken all of it: from then on the provider may have
// the request, and a request it has is never free.
type bodyReader struct {
	b    []byte
	off  int
	sent *atomic.Bool
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	if r.off == len(r.b) {
		r.sent.Store(true)
	}
	return n, nil
}

// delivered reports whether the provider may have received the request.
// A request without a body gives no sign of it and counts as delivered.
func (ex *exchange) delivered() bool {
	return len(ex.body) == 0 || ex.sent.Load()
}

func (r *bodyReader) Close() error { return nil }
