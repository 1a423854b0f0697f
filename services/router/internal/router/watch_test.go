package router

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/url"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
)

func jsonTestEvent(typ, rv string, annotations string) string {
	// Braces, brackets and escaped quotes inside strings must not end it.
	return fmt.Sprintf(`{"type":%q,"object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a{b}\"c","resourceVersion":%q%s},"data":{"k":"v}]\\\"x"}}}`+"\n", typ, rv, annotations)
}

// protoTestEvent builds a metav1.WatchEvent as the kube-apiserver frames it:
// length, WatchEvent{type, object: RawExtension{raw: "k8s\x00" +
// Unknown{typeMeta, raw: object}}}, the object's ObjectMeta first.
func protoTestEvent(typ, rv string, initialEnd bool) []byte {
	var meta []byte
	meta = protowire.AppendTag(meta, 1, protowire.BytesType)
	meta = protowire.AppendString(meta, "cm")
	meta = protowire.AppendTag(meta, 6, protowire.BytesType)
	meta = protowire.AppendString(meta, rv)
	if initialEnd {
		var entry []byte
		entry = protowire.AppendTag(entry, 1, protowire.BytesType)
		entry = protowire.AppendString(entry, initialEventsEnd)
		entry = protowire.AppendTag(entry, 2, protowire.BytesType)
		entry = protowire.AppendString(entry, "true")
		meta = protowire.AppendTag(meta, 12, protowire.BytesType)
		meta = protowire.AppendBytes(meta, entry)
	}
	var obj []byte
	obj = protowire.AppendTag(obj, 1, protowire.BytesType)
	obj = protowire.AppendBytes(obj, meta)
	obj = protowire.AppendTag(obj, 2, protowire.BytesType)
	obj = protowire.AppendString(obj, "data")
	var typeMeta []byte
	typeMeta = protowire.AppendTag(typeMeta, 1, protowire.BytesType)
	typeMeta = protowire.AppendString(typeMeta, "v1")
	var unknown []byte
	unknown = protowire.AppendTag(unknown, 1, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, typeMeta)
	unknown = protowire.AppendTag(unknown, 2, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, obj)
	var ext []byte
	ext = protowire.AppendTag(ext, 1, protowire.BytesType)
	ext = protowire.AppendBytes(ext, append([]byte("k8s\x00"), unknown...))
	var ev []byte
	ev = protowire.AppendTag(ev, 1, protowire.BytesType)
	ev = protowire.AppendString(ev, typ)
	ev = protowire.AppendTag(ev, 2, protowire.BytesType)
	ev = protowire.AppendBytes(ev, ext)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(ev))), ev...)
}

func TestFramerSplitsEventsAnywhere(t *testing.T) {
	endMark := fmt.Sprintf(`,"annotations":{%q:"true"}`, initialEventsEnd)
	tests := []struct {
		name   string
		format watchFormat
		stream []byte
		want   []watchEvent
	}{
		{"json", jsonWatch, []byte(jsonTestEvent("ADDED", "10", "") + jsonTestEvent("MODIFIED", "11", "") + "\n" + jsonTestEvent("BOOKMARK", "12", endMark)),
			[]watchEvent{{"ADDED", "10", false}, {"MODIFIED", "11", false}, {"BOOKMARK", "12", true}}},
		{"protobuf", protobufWatch, append(append(protoTestEvent("ADDED", "10", false), protoTestEvent("DELETED", "11", false)...), protoTestEvent("BOOKMARK", "12", true)...),
			[]watchEvent{{"ADDED", "10", false}, {"DELETED", "11", false}, {"BOOKMARK", "12", true}}},
	}
	for _, tt := range tests {
		// Every way of cutting the stream in two gives the same events,
		// and what comes out is exactly what went in.
		for cut := 0; cut <= len(tt.stream); cut++ {
			f := &framer{format: tt.format}
			var out bytes.Buffer
			var got []watchEvent
			for _, part := range [][]byte{tt.stream[:cut], tt.stream[cut:]} {
				b, evs, err := f.feed(part)
				if err != nil {
					t.Fatalf("%s cut at %d: %v", tt.name, cut, err)
				}
				out.Write(b)
				f.consume(len(b))
				got = append(got, evs...)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("%s cut at %d: events %v, want %v", tt.name, cut, got, tt.want)
			}
			if !bytes.Equal(out.Bytes(), tt.stream) || len(f.rest()) != 0 {
				t.Fatalf("%s cut at %d: passed on %d of %d bytes, held %d", tt.name, cut, out.Len(), len(tt.stream), len(f.rest()))
			}
		}
	}
}

// Half an event is held back: a resumed watch never shows a client a
// broken event.
func TestFramerHoldsBackPartialEvents(t *testing.T) {
	ev := jsonTestEvent("ADDED", "7", "")
	f := &framer{format: jsonWatch}
	out, evs, err := f.feed([]byte(ev + ev[:20]))
	if err != nil || string(out) != ev || len(evs) != 1 {
		t.Fatalf("got %q, %v, %v", out, evs, err)
	}
	f.consume(len(out))
	if string(f.rest()) != ev[:20] {
		t.Fatalf("held %q", f.rest())
	}
	f.reset()
	out, evs, err = f.feed([]byte(ev))
	if err != nil || string(out) != ev || len(evs) != 1 {
		t.Fatalf("after reset: %q, %v, %v", out, evs, err)
	}
}

func TestFramerRefusesWhatIsNotEvents(t *testing.T) {
	for _, in := range []string{`[1,2]`, `"x"`, `{"type":1}` + "\n", "{}\n"} {
		f := &framer{format: jsonWatch}
		if _, _, err := f.feed([]byte(in)); err == nil {
			t.Errorf("%q framed as events", in)
		}
	}
	f := &framer{format: protobufWatch}
	if _, _, err := f.feed([]byte{0xff, 0xff, 0xff, 0xff}); err == nil {
		t.Error("a 4 GiB protobuf event was accepted")
	}
	f = &framer{format: protobufWatch}
	if _, _, err := f.feed(append([]byte{0, 0, 0, 3}, 1, 2, 3)); err == nil {
		t.Error("garbage framed as a protobuf event")
	}
}

func FuzzFramer(f *testing.F) {
	f.Add([]byte(jsonTestEvent("ADDED", "1", "")), uint8(jsonWatch), uint16(5))
	f.Add(protoTestEvent("ADDED", "1", true), uint8(protobufWatch), uint16(9))
	f.Fuzz(func(t *testing.T, in []byte, format uint8, cut uint16) {
		fr := &framer{format: watchFormat(format%2 + 1)}
		c := int(cut) % (len(in) + 1)
		var out []byte
		for _, part := range [][]byte{in[:c], in[c:]} {
			b, _, err := fr.feed(part)
			if err != nil {
				return
			}
			out = append(out, b...)
			fr.consume(len(b))
		}
		// Whatever is passed on is the stream's own bytes, in order.
		if !bytes.Equal(append(out, fr.rest()...), in) {
			t.Fatalf("bytes changed: %q -> %q + %q", in, out, fr.rest())
		}
	})
}

func resp(ctype string, extra ...*tetherv1.Header) *tetherv1.Response {
	return &tetherv1.Response{Status: 200, Headers: append([]*tetherv1.Header{{Name: "Content-Type", Values: []string{ctype}}}, extra...)}
}

func TestPlanWatch(t *testing.T) {
	start := time.Unix(1000, 0)
	watch := func(q string) *tetherv1.Open {
		return &tetherv1.Open{Method: "GET", Path: "/api/v1/namespaces/d/configmaps", Query: q, End: true}
	}
	tests := []struct {
		name   string
		open   *tetherv1.Open
		resp   *tetherv1.Response
		format watchFormat
		rv     string
	}{
		{"json from a version", watch("watch=true&resourceVersion=42"), resp("application/json"), jsonWatch, "42"},
		{"protobuf", watch("watch=1&resourceVersion=42"), resp("application/vnd.kubernetes.protobuf;stream=watch"), protobufWatch, "42"},
		{"initial events", watch("watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"), resp("application/json"), jsonWatch, ""},
		{"any version is no point to go on from", watch("watch=1&resourceVersion=0"), resp("application/json"), 0, ""},
		{"no version: begins with the state in no order", watch("watch=1"), resp("application/json"), 0, ""},
		{"not a watch", watch("resourceVersion=42"), resp("application/json"), 0, ""},
		{"compressed", watch("watch=1&resourceVersion=42"), resp("application/json", &tetherv1.Header{Name: "Content-Encoding", Values: []string{"gzip"}}), 0, ""},
		{"cbor", watch("watch=1&resourceVersion=42"), resp("application/cbor-seq"), 0, ""},
		{"logs -f", &tetherv1.Open{Method: "GET", Path: "/api/v1/namespaces/d/pods/p/log", Query: "follow=true&resourceVersion=4", End: true}, resp("text/plain"), 0, ""},
		{"refused", watch("watch=1&resourceVersion=42"), &tetherv1.Response{Status: 410}, 0, ""},
	}
	for _, tt := range tests {
		p := planWatch(tt.open, tt.resp, start)
		switch {
		case tt.format == 0 && p != nil:
			t.Errorf("%s: planned %+v, want no resuming", tt.name, p)
		case tt.format != 0 && (p == nil || p.format != tt.format || p.rv != tt.rv):
			t.Errorf("%s: planned %+v, want format %v from %q", tt.name, p, tt.format, tt.rv)
		}
	}
}

func TestWatchPlanFollowsEvents(t *testing.T) {
	start := time.Unix(1000, 0)
	open := &tetherv1.Open{Method: "GET", Path: "/api/v1/configmaps", Query: "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=60", End: true}
	p := planWatch(open, resp("application/json"), start)
	for _, ev := range []watchEvent{{"ADDED", "9", false}, {"ADDED", "3", false}} {
		p.seen(ev)
		if p.resumable() {
			t.Fatalf("resumable during the initial events, after %v", ev)
		}
	}
	p.seen(watchEvent{"BOOKMARK", "12", true})
	p.seen(watchEvent{"MODIFIED", "13", false})
	if !p.resumable() || p.rv != "13" {
		t.Fatalf("after the initial events: %+v", p)
	}
	q, ok := p.resumeQuery(start.Add(20 * time.Second))
	if !ok {
		t.Fatal("resume refused before the watch's timeout")
	}
	v, _ := url.ParseQuery(q)
	want := url.Values{"watch": {"1"}, "allowWatchBookmarks": {"true"}, "resourceVersion": {"13"}, "timeoutSeconds": {"40"}}
	if !reflect.DeepEqual(v, want) {
		t.Fatalf("resume query %v, want %v", v, want)
	}
	if _, ok := p.resumeQuery(start.Add(61 * time.Second)); ok {
		t.Fatal("resumed after the watch's own timeout")
	}
	p.seen(watchEvent{typ: "ERROR"})
	if p.resumable() {
		t.Fatal("resumable after an error event")
	}
}
