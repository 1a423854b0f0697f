package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

// Splice carries an upgraded connection over s: what s reads goes to conn,
// what conn reads goes to s, each under the stream's credit, so a side that
// stops reading holds up only this stream. A clean end of one direction is
// passed on as a half-close (CloseWrite on conn when it has one, an end
// Data frame on s) while the other direction goes on. Splice returns once
// both directions have ended, or at the first failure of either, which
// resets s; it always closes conn.
func Splice(ctx context.Context, s *Stream, conn io.ReadWriteCloser) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer conn.Close()
	// A reset from the peer, or ctx, unblocks whatever waits on conn.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	go func() {
		select {
		case <-s.Done():
			cancel()
		case <-ctx.Done():
		}
	}()

	// Both directions run on their own, so a failure of either is seen at
	// once, even while the other is idle (an idle port-forward whose client
	// vanished).
	toConn, fromConn := make(chan error, 1), make(chan error, 1)
	go func() { toConn <- spliceToConn(ctx, s, conn) }()
	go func() { fromConn <- spliceFromConn(ctx, s, conn) }()
	for pending := 2; pending > 0; pending-- {
		var err error
		code := tetherv1.ResetCode_RESET_CODE_CANCELED
		select {
		case err = <-toConn:
			toConn = nil
		case err = <-fromConn:
			fromConn, code = nil, tetherv1.ResetCode_RESET_CODE_UNAVAILABLE
		}
		if err != nil {
			s.Reset(code, "upgraded connection broken off: "+err.Error())
			cancel()
			if toConn != nil {
				<-toConn
			}
			if fromConn != nil {
				<-fromConn
			}
			return err
		}
	}
	return nil
}

func spliceToConn(ctx context.Context, s *Stream, conn io.Writer) error {
	bp := GetChunk()
	defer PutChunk(bp)
	for {
		n, err := s.ReadContext(ctx, *bp)
		if n > 0 {
			if _, werr := conn.Write((*bp)[:n]); werr != nil {
				return fmt.Errorf("writing to the connection: %w", werr)
			}
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := conn.(interface{ CloseWrite() error }); ok {
				if err := cw.CloseWrite(); err != nil {
					return fmt.Errorf("half-closing the connection: %w", err)
				}
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func spliceFromConn(ctx context.Context, s *Stream, conn io.Reader) error {
	bp := GetChunk()
	defer PutChunk(bp)
	for {
		n, err := conn.Read(*bp)
		if n > 0 {
			if _, werr := s.WriteContext(ctx, (*bp)[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return s.CloseWrite()
		}
		if err != nil {
			return fmt.Errorf("reading from the connection: %w", err)
		}
	}
}
