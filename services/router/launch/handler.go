package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
)

// handlerTransport calls an http.Handler in this process as a server
// would, without HTTP/2 in between: the request body streams in while the
// response streams out, each through an io.Pipe, and closing the response
// body cancels the handler's context, as a reset stream would. It serves
// Connect's protocol (no HTTP trailers), which is all a ProxyService
// client speaks.
type handlerTransport struct {
	h http.Handler
	// closed refuses new calls once the router is stopped.
	mu     sync.Mutex
	closed bool
}

func (t *handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		cancel()
		return nil, errStopped
	}

	sreq := req.Clone(ctx)
	sreq.Proto, sreq.ProtoMajor, sreq.ProtoMinor = "HTTP/2.0", 2, 0
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "in-process"
	sreq.Host = req.URL.Host
	if sreq.Body == nil {
		sreq.Body = http.NoBody
	}
	// A reset stream ends the handler's reads too: its context alone
	// would not unblock a read of the request body.
	stopReads := context.AfterFunc(ctx, func() { _ = sreq.Body.Close() })
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, body: pw, head: make(chan struct{})}
	go func() {
		defer stopReads()
		defer func() {
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				w.abort(fmt.Errorf("router handler panicked: %v", p))
			} else if p != nil {
				w.abort(http.ErrAbortHandler)
			}
			w.writeHeaderOnce(http.StatusOK)
			_ = pw.Close()
			// As a server does: the request body ends with the handler.
			_ = sreq.Body.Close()
		}()
		t.h.ServeHTTP(w, sreq)
	}()
	select {
	case <-w.head:
	case <-ctx.Done():
		cancel()
		_ = pr.CloseWithError(ctx.Err())
		return nil, ctx.Err()
	}
	return &http.Response{
		Status: strconv.Itoa(w.code) + " " + http.StatusText(w.code), StatusCode: w.code,
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: w.sent, ContentLength: -1,
		Body: &cancelBody{ReadCloser: pr, cancel: cancel}, Request: req,
	}, nil
}

// close refuses new calls; those open end with their callers, whose
// closing of the response cancels the handler.
func (t *handlerTransport) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
}

// errStopped is a dial error, which the gateway takes for a router it
// cannot reach.
var errStopped = &net.OpError{Op: "dial", Net: "in-process", Err: errors.New("the router is stopped")}

// cancelBody ends the handler's call when the caller closes the response.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	b.cancel()
	return b.ReadCloser.Close()
}

// pipeWriter is the handler's http.ResponseWriter: the head goes to the
// caller at WriteHeader (or the first Write or Flush), the body through
// the pipe as it is written.
type pipeWriter struct {
	header   http.Header
	sent     http.Header
	code     int
	body     *io.PipeWriter
	head     chan struct{}
	headOnce sync.Once
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) { w.writeHeaderOnce(code) }

func (w *pipeWriter) writeHeaderOnce(code int) {
	w.headOnce.Do(func() {
		w.code, w.sent = code, w.header.Clone()
		close(w.head)
	})
}

func (w *pipeWriter) Write(p []byte) (int, error) {
	w.writeHeaderOnce(http.StatusOK)
	return w.body.Write(p)
}

// Flush sends the head if it has not gone; a pipe holds nothing back.
func (w *pipeWriter) Flush() { w.writeHeaderOnce(http.StatusOK) }

func (w *pipeWriter) abort(err error) {
	w.writeHeaderOnce(http.StatusOK)
	_ = w.body.CloseWithError(err)
}
