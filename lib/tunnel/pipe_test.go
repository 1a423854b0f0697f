package tunnel

import (
	"errors"
	"io"
	"sync"

	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// pipeEnd is one end of an in-memory Transport. Frames are encoded and
// decoded on the way, as on a real wire, so nothing is shared between ends.
type pipeEnd struct {
	in     chan []byte
	out    chan []byte
	done   chan struct{}
	peer   *pipeEnd
	once   sync.Once
	silent chan struct{} // closed: drop everything sent (a dead peer)
}

func pipe() (*pipeEnd, *pipeEnd) {
	ab, ba := make(chan []byte, 1024), make(chan []byte, 1024)
	a := &pipeEnd{in: ba, out: ab, done: make(chan struct{}), silent: make(chan struct{})}
	b := &pipeEnd{in: ab, out: ba, done: make(chan struct{}), silent: make(chan struct{})}
	a.peer, b.peer = b, a
	return a, b
}

var errPipeClosed = errors.New("pipe closed")

func (p *pipeEnd) Send(f *tetherv1.Frame) error {
	b, err := Encode(f)
	if err != nil {
		return err
	}
	select {
	case <-p.silent:
		return nil
	default:
	}
	select {
	case p.out <- b:
		return nil
	case <-p.done:
		return errPipeClosed
	case <-p.peer.done:
		return errPipeClosed
	}
}

func (p *pipeEnd) Receive() (*tetherv1.Frame, error) {
	select {
	case b := <-p.in:
		// Like a Connect stream: decoded, not validated; that is Conn's job.
		f := &tetherv1.Frame{}
		return f, proto.Unmarshal(b, f)
	case <-p.done:
		return nil, io.EOF
	case <-p.peer.done:
		return nil, io.EOF
	}
}

func (p *pipeEnd) Close() { p.once.Do(func() { close(p.done) }) }
