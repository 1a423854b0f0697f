package router

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/tunnel"
)

// A watch that loses its subscriber or agent goes on from the last event it
// delivered: the router passes on whole events only, remembers the
// resourceVersion of each, and asks again from there. The client sees one
// response with every event once, in order (ADR 006).

// watchFormat is how a watch response frames its events.
type watchFormat int

const (
	// jsonWatch: one JSON object per event, each followed by a newline.
	jsonWatch watchFormat = iota + 1
	// protobufWatch: each event a 4-byte big-endian length, then a
	// metav1.WatchEvent whose object is the full protobuf encoding
	// ("k8s\x00" and a runtime.Unknown).
	protobufWatch
)

// maxEvent bounds an event held back until it is whole (etcd keeps objects
// of at most 1.5 MiB; a watch event is one object). A larger one turns
// resuming off for the rest of the watch instead of holding more.
const maxEvent = 8 << 20

// initialEventsEnd marks the bookmark that ends a watch's initial events
// (sendInitialEvents=true): only after it is the last resourceVersion a
// place to go on from.
const initialEventsEnd = "k8s.io/initial-events-end"

// watchPlan is how a watch can be resumed; nil when it cannot.
type watchPlan struct {
	format watchFormat
	query  url.Values
	// rv is where the watch would go on from; empty until known (a watch
	// with initial events, until their end).
	rv string
	// initial: the watch asked for initial events (sendInitialEvents);
	// they are not asked for again on resuming.
	initial bool
	// deadline is when the kube-apiserver would have ended the watch
	// (timeoutSeconds); zero: never.
	deadline time.Time
}

// planWatch decides whether the watch open answered by resp can be
// resumed. Only a watch that starts from a known point can: a
// resourceVersion (not "0", which is any point, nor unset, which begins
// with the current state as synthetic events in no order), or initial
// events with their end bookmark.
func planWatch(open *tetherv1.Open, resp *tetherv1.Response, start time.Time) *watchPlan {
	if open.Method != "GET" || open.Upgrade != "" || !isWatch(open) || strings.Contains(open.Path, "/log") || resp.Status != 200 {
		return nil
	}
	var ctype, cenc string
	for _, h := range resp.Headers {
		switch strings.ToLower(h.Name) {
		case "content-type":
			if len(h.Values) > 0 {
				ctype = h.Values[0]
			}
		case "content-encoding":
			if len(h.Values) > 0 {
				cenc = h.Values[0]
			}
		}
	}
	if cenc != "" && cenc != "identity" {
		return nil
	}
	p := &watchPlan{}
	mt, params, err := mime.ParseMediaType(ctype)
	switch {
	case err != nil:
		return nil
	case mt == "application/json":
		p.format = jsonWatch
	case mt == "application/vnd.kubernetes.protobuf" && params["stream"] == "watch":
		p.format = protobufWatch
	default:
		return nil
	}
	q, err := url.ParseQuery(open.Query)
	if err != nil {
		return nil
	}
	p.query = q
	p.initial = strings.EqualFold(q.Get("sendInitialEvents"), "true")
	if rv := q.Get("resourceVersion"); !p.initial {
		if rv == "" || rv == "0" {
			return nil
		}
		p.rv = rv
	}
	if t := q.Get("timeoutSeconds"); t != "" {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n < 0 {
			return nil
		}
		if n > 0 {
			p.deadline = start.Add(time.Duration(n) * time.Second)
		}
	}
	return p
}

// seen records a delivered event.
func (p *watchPlan) seen(ev watchEvent) {
	switch {
	case ev.typ == "ERROR":
		// The kube-apiserver ends the watch after an error event; going
		// on would hide what it said.
		p.rv = ""
		p.initial, p.format = false, 0
	case ev.rv == "":
	case p.initial && p.rv == "" && !(ev.typ == "BOOKMARK" && ev.initialEnd):
		// Still in the initial events, which come in no order.
	default:
		p.rv = ev.rv
	}
}

// resumable reports whether the watch can go on from p.rv.
func (p *watchPlan) resumable() bool { return p.format != 0 && p.rv != "" }

// resumeQuery is the query that goes on from the last event delivered,
// and false once the watch's own timeout has passed (it would have ended).
func (p *watchPlan) resumeQuery(now time.Time) (string, bool) {
	q := url.Values{}
	for k, v := range p.query {
		q[k] = v
	}
	q.Set("resourceVersion", p.rv)
	// The initial events were delivered; only what changed since follows.
	q.Del("sendInitialEvents")
	q.Del("resourceVersionMatch")
	if !p.deadline.IsZero() {
		left := p.deadline.Sub(now)
		if left <= 0 {
			return "", false
		}
		q.Set("timeoutSeconds", strconv.FormatInt(int64(math.Ceil(left.Seconds())), 10))
	}
	return q.Encode(), true
}

// watchEvent is what the router reads of an event.
type watchEvent struct {
	typ        string
	rv         string
	initialEnd bool
}

var errNotEvents = errors.New("router: watch response is not a stream of events")

// framer splits a watch response into whole events.
type framer struct {
	format  watchFormat
	buf     []byte
	scanned int // JSON: how far into buf the scanner got
	start   int // JSON: where the event being scanned began
	depth   int
	inStr   bool
	esc     bool
}

// feed appends p and returns the bytes that end with the last whole event
// (whitespace between events included) and those events. The returned
// bytes are valid until the next call.
func (f *framer) feed(p []byte) ([]byte, []watchEvent, error) {
	f.buf = append(f.buf, p...)
	var n int
	var evs []watchEvent
	var err error
	if f.format == jsonWatch {
		n, evs, err = f.json()
	} else {
		n, evs, err = f.protobuf()
	}
	if err != nil {
		return nil, nil, err
	}
	out := f.buf[:n]
	if len(f.buf)-n > maxEvent {
		return nil, nil, fmt.Errorf("router: a watch event exceeds %d bytes", maxEvent)
	}
	return out, evs, nil
}

// consume drops the n bytes feed returned, once they are sent.
func (f *framer) consume(n int) {
	rest := copy(f.buf, f.buf[n:])
	f.buf = f.buf[:rest]
	f.scanned -= n
	f.start -= n
}

// rest is what is held back: part of an event.
func (f *framer) rest() []byte { return f.buf }

// reset forgets a partial event: the stream it came from is gone.
func (f *framer) reset() {
	*f = framer{format: f.format, buf: f.buf[:0]}
}

func (f *framer) json() (int, []watchEvent, error) {
	var evs []watchEvent
	done := 0
	if f.depth == 0 {
		done = f.scanned
	} else {
		done = f.start
	}
	for i := f.scanned; i < len(f.buf); i++ {
		c := f.buf[i]
		if f.depth == 0 {
			switch c {
			case ' ', '\t', '\r', '\n':
				done = i + 1
			case '{':
				f.depth, f.start = 1, i
			default:
				return 0, nil, errNotEvents
			}
			continue
		}
		switch {
		case f.inStr && f.esc:
			f.esc = false
		case f.inStr && c == '\\':
			f.esc = true
		case f.inStr && c == '"':
			f.inStr = false
		case f.inStr:
		case c == '"':
			f.inStr = true
		case c == '{' || c == '[':
			f.depth++
		case c == '}' || c == ']':
			f.depth--
			if f.depth == 0 {
				ev, err := jsonEvent(f.buf[f.start : i+1])
				if err != nil {
					return 0, nil, err
				}
				evs = append(evs, ev)
				done = i + 1
			}
		}
	}
	f.scanned = len(f.buf)
	return done, evs, nil
}

func jsonEvent(b []byte) (watchEvent, error) {
	var ev struct {
		Type   string `json:"type"`
		Object struct {
			Metadata struct {
				ResourceVersion string            `json:"resourceVersion"`
				Annotations     map[string]string `json:"annotations"`
			} `json:"metadata"`
		} `json:"object"`
	}
	if err := json.Unmarshal(b, &ev); err != nil || ev.Type == "" {
		return watchEvent{}, fmt.Errorf("%w: %v", errNotEvents, err)
	}
	md := ev.Object.Metadata
	return watchEvent{typ: ev.Type, rv: md.ResourceVersion, initialEnd: md.Annotations[initialEventsEnd] == "true"}, nil
}

func (f *framer) protobuf() (int, []watchEvent, error) {
	var evs []watchEvent
	done := 0
	for {
		rest := f.buf[done:]
		if len(rest) < 4 {
			return done, evs, nil
		}
		n := binary.BigEndian.Uint32(rest)
		if n > maxEvent {
			return 0, nil, fmt.Errorf("router: a watch event of %d bytes exceeds %d", n, maxEvent)
		}
		if len(rest) < 4+int(n) {
			return done, evs, nil
		}
		ev, err := protobufEvent(rest[4 : 4+n])
		if err != nil {
			return 0, nil, err
		}
		evs = append(evs, ev)
		done += 4 + int(n)
	}
}

// protobufMagic starts the full protobuf encoding of a Kubernetes object.
var protobufMagic = []byte("k8s\x00")

// protobufEvent reads a metav1.WatchEvent: type (1) and object (2), a
// RawExtension whose raw (1) is "k8s\x00" and a runtime.Unknown, whose raw
// (2) is the object; its metadata (1) is an ObjectMeta with
// resourceVersion (6) and annotations (12).
func protobufEvent(b []byte) (watchEvent, error) {
	var ev watchEvent
	var ext []byte
	err := fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			ev.typ = string(v)
		case 2:
			ext = v
		}
		return nil
	})
	if err != nil || ev.typ == "" {
		return ev, fmt.Errorf("%w: %v", errNotEvents, err)
	}
	raw, err := field(ext, 1)
	if err != nil {
		return ev, err
	}
	if !bytes.HasPrefix(raw, protobufMagic) {
		return ev, fmt.Errorf("%w: object without the protobuf prefix", errNotEvents)
	}
	var obj []byte
	if err := fields(raw[len(protobufMagic):], func(num protowire.Number, v []byte) error {
		switch num {
		case 2:
			obj = v
		case 3:
			if len(v) > 0 {
				return errors.New("object has a content encoding")
			}
		}
		return nil
	}); err != nil {
		return ev, err
	}
	meta, err := field(obj, 1)
	if err != nil {
		return ev, err
	}
	err = fields(meta, func(num protowire.Number, v []byte) error {
		switch num {
		case 6:
			ev.rv = string(v)
		case 12:
			var k, val string
			if err := fields(v, func(num protowire.Number, v []byte) error {
				switch num {
				case 1:
					k = string(v)
				case 2:
					val = string(v)
				}
				return nil
			}); err != nil {
				return err
			}
			if k == initialEventsEnd && val == "true" {
				ev.initialEnd = true
			}
		}
		return nil
	})
	return ev, err
}

// fields calls fn with each length-delimited field of the message b,
// skipping the others.
func fields(b []byte, fn func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if err := fn(num, v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// sendChunks passes b on to the gateway in Data frames.
func sendChunks(gw sender, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), tunnel.MaxChunk)
		if err := gw.Send(&tetherv1.Frame{StreamId: 1, Kind: &tetherv1.Frame_Data{Data: &tetherv1.Data{Chunk: b[:n]}}}); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// field is the last value of the length-delimited field num in b, as
// protobuf's own decoding keeps the last of a repeated singular field.
func field(b []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	err := fields(b, func(n protowire.Number, v []byte) error {
		if n == num {
			out = v
		}
		return nil
	})
	return out, err
}
