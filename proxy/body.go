package proxy

import (
	"io"
	"net/http"
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
