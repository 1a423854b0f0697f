// Package tunnel is Tether's request envelope: the Frame protocol that every
// hop of the request path speaks, streams with per-request flow control, and
// a connection that multiplexes many streams over one transport.
package tunnel

import (
	"fmt"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

const (
	// MaxChunk is the most body bytes one Data frame carries.
	MaxChunk = 64 << 10
	// MaxFrame bounds an encoded frame; heads with many headers are the big
	// ones. It stays under 256 KiB so no hop ever carries a larger message.
	MaxFrame = 256 << 10
	// DefaultWindow is the receive window a stream grants unless told
	// otherwise: enough to keep a loopback or LAN path busy, small enough
	// that thousands of stalled watches cost little memory.
	DefaultWindow = 1 << 20
	// MaxWindow bounds any grant, so a hostile peer cannot make us promise
	// to buffer without limit.
	MaxWindow = 16 << 20

	// MaxIDs is the most agent session ids a frame lists (Hello's ended
	// sessions and held subscribers, Open's previous sessions).
	MaxIDs = 64

	// MaxHeaders is the most header names an Open carries, and
	// MaxHeaderValue the longest name or value: the gateway answers a head
	// over either with a 431 before it builds an Open.
	MaxHeaders     = 512
	MaxHeaderValue = maxString
	// MaxHead is the most bytes of a client's request head a gateway may
	// take (its --max-header-bytes): the rest of MaxFrame is for the
	// signed identity (groups) and the trace.
	MaxHead = 128 << 10

	maxString = 16 << 10
	// maxSignedIdentity bounds an Open's signed identity: an assertion of
	// at most 128 KiB (lib/assertion.MaxAssertion), its signature and key
	// certificate.
	maxSignedIdentity = 128<<10 + 1024
	maxTraceKeys      = 16
	maxIDBytes        = 64
)

// Decode parses and validates one encoded frame.
func Decode(b []byte) (*tetherv1.Frame, error) {
	if len(b) > MaxFrame {
		return nil, fmt.Errorf("frame of %d bytes exceeds %d", len(b), MaxFrame)
	}
	f := &tetherv1.Frame{}
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("decoding frame: %w", err)
	}
	if err := Validate(f); err != nil {
		return nil, err
	}
	return f, nil
}

// Encode serializes f.
func Encode(f *tetherv1.Frame) ([]byte, error) {
	b, err := proto.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encoding frame: %w", err)
	}
	if len(b) > MaxFrame {
		return nil, fmt.Errorf("frame of %d bytes exceeds %d", len(b), MaxFrame)
	}
	return b, nil
}

// Validate checks what a peer could get wrong in a frame that proto decoding
// accepts: sizes, required fields, and which frames belong on stream zero.
func Validate(f *tetherv1.Frame) error {
	connLevel := false
	switch k := f.Kind.(type) {
	case nil:
		return fmt.Errorf("frame without a kind")
	case *tetherv1.Frame_Hello:
		connLevel = true
		if err := checkString("cluster id", k.Hello.ClusterId); err != nil {
			return err
		}
		if err := checkList("ended session", k.Hello.EndedSessions); err != nil {
			return err
		}
		if err := checkList("held subscriber", k.Hello.HeldSubscribers); err != nil {
			return err
		}
	case *tetherv1.Frame_Welcome, *tetherv1.Frame_Ping, *tetherv1.Frame_Pong:
		connLevel = true
	case *tetherv1.Frame_GoAway:
		connLevel = true
		if err := checkString("go-away reason", k.GoAway.Reason); err != nil {
			return err
		}
	case *tetherv1.Frame_Credential:
		connLevel = true
		if len(k.Credential.Token) > 1024 {
			return fmt.Errorf("credential of %d bytes exceeds 1024", len(k.Credential.Token))
		}
	case *tetherv1.Frame_Open:
		if err := validateOpen(k.Open); err != nil {
			return err
		}
	case *tetherv1.Frame_Response:
		if s := k.Response.Status; s < 100 || s > 599 {
			return fmt.Errorf("response status %d out of range", s)
		}
		if err := checkHeaders(k.Response.Headers); err != nil {
			return err
		}
		if len(k.Response.Body) > MaxChunk {
			return fmt.Errorf("response body of %d bytes exceeds %d", len(k.Response.Body), MaxChunk)
		}
		if len(k.Response.Body) > 0 && !k.Response.End {
			return fmt.Errorf("a response body in the head must be the whole body")
		}
		if switched := k.Response.Status == 101; switched != (k.Response.Upgrade != "") || (switched && k.Response.End) {
			return fmt.Errorf("a 101 response must name its protocol and leave the stream open, and only a 101 may")
		}
		if err := checkString("upgrade", k.Response.Upgrade); err != nil {
			return err
		}
	case *tetherv1.Frame_Data:
		if len(k.Data.Chunk) > MaxChunk {
			return fmt.Errorf("data chunk of %d bytes exceeds %d", len(k.Data.Chunk), MaxChunk)
		}
	case *tetherv1.Frame_Window:
		if k.Window.Increment == 0 || k.Window.Increment > MaxWindow {
			return fmt.Errorf("window increment %d out of range", k.Window.Increment)
		}
	case *tetherv1.Frame_Reset_:
		if err := checkString("reset message", k.Reset_.Message); err != nil {
			return err
		}
	}
	if connLevel != (f.StreamId == 0) {
		return fmt.Errorf("%T on stream %d", f.Kind, f.StreamId)
	}
	return nil
}

func validateOpen(o *tetherv1.Open) error {
	for name, v := range map[string]string{"request id": o.RequestId, "cluster id": o.ClusterId, "method": o.Method, "path": o.Path} {
		if v == "" {
			return fmt.Errorf("open without a %s", name)
		}
		if err := checkString(name, v); err != nil {
			return err
		}
	}
	if o.Path[0] != '/' {
		return fmt.Errorf("open path %q is not absolute", o.Path)
	}
	if o.Window > MaxWindow {
		return fmt.Errorf("open window %d exceeds %d", o.Window, MaxWindow)
	}
	if o.Upgrade != "" && o.End {
		return fmt.Errorf("an upgrade request cannot end before its response")
	}
	if err := checkString("upgrade", o.Upgrade); err != nil {
		return err
	}
	if err := checkList("previous session", o.PreviousSessions); err != nil {
		return err
	}
	if len(o.Trace) > maxTraceKeys {
		return fmt.Errorf("open carries %d trace keys", len(o.Trace))
	}
	// What the identity says, the agent checks once it verified who
	// signed it; here only its size.
	if si := o.SignedIdentity; si != nil && len(si.Assertion)+len(si.Signature)+len(si.KeyCertificate) > maxSignedIdentity {
		return fmt.Errorf("signed identity of %d bytes exceeds %d", len(si.Assertion)+len(si.Signature)+len(si.KeyCertificate), maxSignedIdentity)
	}
	return checkHeaders(o.Headers)
}

func checkHeaders(hs []*tetherv1.Header) error {
	if len(hs) > MaxHeaders {
		return fmt.Errorf("%d headers exceed %d", len(hs), MaxHeaders)
	}
	for _, h := range hs {
		if h.Name == "" {
			return fmt.Errorf("header without a name")
		}
		if err := checkString("header name", h.Name); err != nil {
			return err
		}
		for _, v := range h.Values {
			// proto3 strings are UTF-8; HTTP allows other bytes, which the
			// sender turns into a clear error instead of a broken frame.
			if err := checkString("value of header "+h.Name, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkList bounds a list of ids (agent sessions) a frame carries.
func checkList(what string, ids []string) error {
	if len(ids) > MaxIDs {
		return fmt.Errorf("%d of %s exceed %d", len(ids), what, MaxIDs)
	}
	for _, id := range ids {
		if len(id) > maxIDBytes {
			return fmt.Errorf("%s of %d bytes exceeds %d", what, len(id), maxIDBytes)
		}
		if err := checkString(what, id); err != nil {
			return err
		}
	}
	return nil
}

func checkString(what, s string) error {
	if len(s) > maxString {
		return fmt.Errorf("%s of %d bytes exceeds %d", what, len(s), maxString)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	return nil
}

// HandlerOptions and ClientOptions are the Connect RPC options of every
// hop that carries frames: no message above MaxFrame, and no compression.
// Bodies are compact or already compressed by the kube-apiserver, and gzip
// per message cost more CPU than all the rest of a hop
// (bench/results/core-path.md).
func HandlerOptions() connect.HandlerOption {
	return connect.WithHandlerOptions(connect.WithReadMaxBytes(MaxFrame), connect.WithCompression("gzip", nil, nil))
}

// ClientOptions: see HandlerOptions.
func ClientOptions() connect.ClientOption {
	return connect.WithClientOptions(connect.WithReadMaxBytes(MaxFrame), connect.WithAcceptCompression("gzip", nil, nil))
}

// Mutates reports whether a request may change the cluster: any method but
// GET, HEAD and OPTIONS, and not an upgrade (exec and port-forward are
// neither read nor written again). Such a request is acknowledged before
// it reaches an agent, and remembered there by its id (ADR 006).
func Mutates(open *tetherv1.Open) bool {
	switch open.Method {
	case "GET", "HEAD", "OPTIONS":
		return false
	}
	return open.Upgrade == ""
}

// ResetFrame is the frame that resets stream id with code and why.
func ResetFrame(id uint64, code tetherv1.ResetCode, why string) *tetherv1.Frame {
	return &tetherv1.Frame{StreamId: id, Kind: &tetherv1.Frame_Reset_{Reset_: &tetherv1.Reset{Code: code, Message: why}}}
}
