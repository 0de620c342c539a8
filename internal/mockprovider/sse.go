package mockprovider

import (
	"net/http"
)

// stream writes server-sent events, each flushed as it is written, as the
// providers stream: "event: NAME" lines where the API names its events
// (Responses, Anthropic, image streams), then "data: JSON" and a blank
// line.
type stream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error // the first write error: the client is gone, stop writing
}

func (x *exchange) startStream() *stream {
	h := x.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	x.w.WriteHeader(http.StatusOK)
	return &stream{w: x.w, rc: http.NewResponseController(x.w)}
}

// event writes one event named name ("" for none) whose data is v as JSON.
func (s *stream) event(name string, v any) {
	s.raw(name, marshal(v))
}

// raw writes one event whose data is b as it is.
func (s *stream) raw(name string, b []byte) {
	if s.err != nil {
		return
	}
	buf := make([]byte, 0, len(name)+len(b)+16)
	if name != "" {
		buf = append(buf, "event: "...)
		buf = append(buf, name...)
		buf = append(buf, '\n')
	}
	buf = append(buf, "data: "...)
	buf = append(buf, b...)
	buf = append(buf, "\n\n"...)
	if _, s.err = s.w.Write(buf); s.err == nil {
		s.err = s.rc.Flush()
	}
}
