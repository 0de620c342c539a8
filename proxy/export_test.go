package proxy

import "net/http/httputil"

// NewBufferPool returns a pool of the copy buffers a Server's reverse
// proxies use, so that BenchmarkProxy can give its bare baseline the same.
func NewBufferPool() httputil.BufferPool { return newBufferPool() }
