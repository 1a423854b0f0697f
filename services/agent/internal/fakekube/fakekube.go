// Package fakekube is an in-memory stand-in for a kube-apiserver, for the
// agent simulator (cmd/agentsim): thousands of simulated clusters in one
// process, each answering its agent as a kube-apiserver would for the
// requests a load test sends. ConfigMaps in any namespace: GET and LIST of
// a configurable number and size of objects (with limit), watches that
// emit events at a configurable rate until their timeoutSeconds, create,
// patch and delete, /version, a configurable service time, and
// Kubernetes Status errors (404, 409, 405) for everything else.
//
// The objects every cluster starts with are made once (a Fleet) and shared
// read-only; a cluster keeps only what was created, changed or deleted in
// it, so 10,000 idle clusters cost little more than one.
package fakekube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Config shapes every cluster of a fleet.
type Config struct {
	// Objects is how many ConfigMaps each namespace starts with
	// (cm-00000, cm-00001, ...); ObjectBytes the size of each one's data.
	Objects, ObjectBytes int
	// ServiceTime is how long each answer takes to start.
	ServiceTime time.Duration
	// WatchEvery is how often a watch gets an event (MODIFIED, of one of
	// the objects in turn); 0: never, a watch stays quiet until its end.
	WatchEvery time.Duration
	// MaxOverlay bounds what one cluster remembers of writes (default
	// 1,000 objects): past it, creates get 507 Status, as a full etcd
	// would answer.
	MaxOverlay int
}

// EmittedAnnotation is set on each watch event's object to when the
// simulated cluster sent it (Unix nanoseconds): a load driver on the same
// machine reads the event's lag from it.
const EmittedAnnotation = "tether.dev/emitted"

// Fleet holds what all its clusters share.
type Fleet struct {
	cfg  Config
	base [][]byte // the starting objects, as JSON, without namespace
}

// NewFleet makes the shared starting objects.
func NewFleet(cfg Config) (*Fleet, error) {
	if cfg.Objects < 0 || cfg.ObjectBytes < 0 || cfg.ServiceTime < 0 || cfg.WatchEvery < 0 {
		return nil, errors.New("fakekube: sizes and times cannot be negative")
	}
	if cfg.MaxOverlay <= 0 {
		cfg.MaxOverlay = 1000
	}
	f := &Fleet{cfg: cfg, base: make([][]byte, cfg.Objects)}
	data := strings.Repeat("x", cfg.ObjectBytes)
	for i := range f.base {
		b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": objectName(i), "resourceVersion": "1", "uid": fmt.Sprintf("00000000-0000-0000-0000-%012d", i)},
			"data":     map[string]string{"value": data}})
		if err != nil {
			return nil, err
		}
		f.base[i] = b
	}
	return f, nil
}

func objectName(i int) string { return fmt.Sprintf("cm-%05d", i) }

// Cluster is one simulated kube-apiserver: an http.RoundTripper for the
// agent's APITransport, and its SubjectAccessReviews (which refuse every
// impersonation: nobody may act as someone else in a simulated cluster).
type Cluster struct {
	fleet *Fleet

	mu sync.Mutex
	rv int64
	// overlay holds objects written here, by namespace/name; a nil value
	// is a deleted starting object.
	overlay map[string][]byte
}

// Cluster returns a new cluster of f.
func (f *Fleet) Cluster() *Cluster { return &Cluster{fleet: f, rv: 1} }

// RoundTrip answers r as a kube-apiserver would.
func (c *Cluster) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		defer r.Body.Close()
	}
	if d := c.fleet.cfg.ServiceTime; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return nil, r.Context().Err()
		}
	}
	if r.URL.Path == "/version" {
		return reply(r, http.StatusOK, []byte(`{"major":"1","minor":"34","gitVersion":"v1.34.4-tether-sim","platform":"linux/amd64"}`)), nil
	}
	ns, name, ok := configMapPath(r.URL.Path)
	if !ok {
		return status(r, http.StatusNotFound, "NotFound", fmt.Sprintf("the server could not find the requested resource (%s %s)", r.Method, r.URL.Path)), nil
	}
	q := r.URL.Query()
	switch {
	case name == "" && r.Method == http.MethodGet && (q.Get("watch") == "true" || q.Get("watch") == "1"):
		return c.watch(r, ns, q), nil
	case name == "" && r.Method == http.MethodGet:
		return c.list(r, ns, q), nil
	case name == "" && r.Method == http.MethodPost:
		return c.create(r, ns), nil
	case name != "" && r.Method == http.MethodGet:
		if b := c.get(ns, name); b != nil {
			return reply(r, http.StatusOK, b), nil
		}
		return notFound(r, name), nil
	case name != "" && r.Method == http.MethodPatch:
		return c.patch(r, ns, name), nil
	case name != "" && r.Method == http.MethodDelete:
		return c.remove(r, ns, name), nil
	}
	return status(r, http.StatusMethodNotAllowed, "MethodNotAllowed", fmt.Sprintf("the server does not allow this method on the requested resource (%s)", r.Method)), nil
}

// configMapPath splits /api/v1/namespaces/NS/configmaps[/NAME].
func configMapPath(p string) (ns, name string, ok bool) {
	rest, found := strings.CutPrefix(p, "/api/v1/namespaces/")
	if !found {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 2 && parts[1] == "configmaps" && parts[0] != "":
		return parts[0], "", true
	case len(parts) == 3 && parts[1] == "configmaps" && parts[0] != "" && parts[2] != "":
		return parts[0], parts[2], true
	}
	return "", "", false
}

// get returns the object's JSON, nil if there is none.
func (c *Cluster) get(ns, name string) []byte {
	c.mu.Lock()
	b, written := c.overlay[ns+"/"+name]
	c.mu.Unlock()
	if written {
		return b
	}
	if i, ok := c.fleet.index(name); ok {
		return c.fleet.inNamespace(i, ns)
	}
	return nil
}

func (f *Fleet) index(name string) (int, bool) {
	n, found := strings.CutPrefix(name, "cm-")
	i, err := strconv.Atoi(n)
	if !found || err != nil || i < 0 || i >= len(f.base) || objectName(i) != name {
		return 0, false
	}
	return i, true
}

// inNamespace is starting object i as it reads in ns.
func (f *Fleet) inNamespace(i int, ns string) []byte {
	return bytes.Replace(f.base[i], []byte(`"metadata":{`), []byte(`"metadata":{"namespace":`+strconv.Quote(ns)+`,`), 1)
}

func (c *Cluster) list(r *http.Request, ns string, q map[string][]string) *http.Response {
	limit, _ := strconv.Atoi(first(q["limit"]))
	c.mu.Lock()
	rv := c.rv
	var written [][]byte
	deleted := map[string]bool{}
	for k, b := range c.overlay {
		if kns, name, _ := strings.Cut(k, "/"); kns == ns {
			if b == nil {
				deleted[name] = true
			} else if _, base := c.fleet.index(name); !base {
				written = append(written, b)
			}
		}
	}
	c.mu.Unlock()
	var buf bytes.Buffer
	fmt.Fprintf(&buf, `{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"%d"},"items":[`, rv)
	n := 0
	add := func(b []byte) bool {
		if limit > 0 && n >= limit {
			return false
		}
		if n > 0 {
			buf.WriteByte(',')
		}
		buf.Write(b)
		n++
		return true
	}
	for i := range c.fleet.base {
		name := objectName(i)
		if deleted[name] {
			continue
		}
		if !add(c.get(ns, name)) {
			break
		}
	}
	for _, b := range written {
		if !add(b) {
			break
		}
	}
	buf.WriteString("]}")
	return reply(r, http.StatusOK, buf.Bytes())
}

func (c *Cluster) create(r *http.Request, ns string) *http.Response {
	var obj map[string]any
	if err := json.NewDecoder(io.LimitReader(r.Body, 3<<20)).Decode(&obj); err != nil {
		return status(r, http.StatusBadRequest, "BadRequest", "the object is not JSON: "+err.Error())
	}
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if name == "" {
		return status(r, http.StatusUnprocessableEntity, "Invalid", "ConfigMap is invalid: metadata.name: Required value")
	}
	if c.get(ns, name) != nil {
		return status(r, http.StatusConflict, "AlreadyExists", fmt.Sprintf("configmaps %q already exists", name))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.overlay) >= c.fleet.cfg.MaxOverlay {
		return status(r, http.StatusInsufficientStorage, "InternalError", "the simulated cluster holds no more objects")
	}
	c.rv++
	meta["namespace"], meta["resourceVersion"] = ns, strconv.FormatInt(c.rv, 10)
	obj["metadata"] = meta
	b, _ := json.Marshal(obj)
	c.put(ns+"/"+name, b)
	return reply(r, http.StatusCreated, b)
}

func (c *Cluster) put(key string, b []byte) {
	if c.overlay == nil {
		c.overlay = map[string][]byte{}
	}
	c.overlay[key] = b
}

// patch sets the object's annotation tether.dev/patched to the patch's
// size: the change a load test makes, whatever the patch says.
func (c *Cluster) patch(r *http.Request, ns, name string) *http.Response {
	n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 3<<20))
	b := c.get(ns, name)
	if b == nil {
		return notFound(r, name)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		return status(r, http.StatusInternalServerError, "InternalError", err.Error())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rv++
	meta, _ := obj["metadata"].(map[string]any)
	meta["resourceVersion"] = strconv.FormatInt(c.rv, 10)
	meta["annotations"] = map[string]string{"tether.dev/patched": strconv.FormatInt(n, 10)}
	out, _ := json.Marshal(obj)
	c.put(ns+"/"+name, out)
	return reply(r, http.StatusOK, out)
}

func (c *Cluster) remove(r *http.Request, ns, name string) *http.Response {
	if c.get(ns, name) == nil {
		return notFound(r, name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rv++
	c.put(ns+"/"+name, nil)
	return status(r, http.StatusOK, "", "")
}

// watch streams a MODIFIED event of each object in turn every WatchEvery,
// until timeoutSeconds or the caller goes away.
func (c *Cluster) watch(r *http.Request, ns string, q map[string][]string) *http.Response {
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(r.Context())
	if s, err := strconv.Atoi(first(q["timeoutSeconds"])); err == nil && s > 0 {
		ctx, cancel = context.WithTimeout(r.Context(), time.Duration(s)*time.Second)
	}
	go func() {
		defer cancel()
		defer pw.Close()
		every := c.fleet.cfg.WatchEvery
		if every <= 0 || len(c.fleet.base) == 0 {
			<-ctx.Done()
			return
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			c.mu.Lock()
			c.rv++
			rv := c.rv
			c.mu.Unlock()
			obj := bytes.Replace(c.fleet.inNamespace(i%len(c.fleet.base), ns), []byte(`"resourceVersion":"1"`), []byte(`"resourceVersion":"`+strconv.FormatInt(rv, 10)+`"`), 1)
			// When the event left the cluster, for a load test's lag.
			obj = bytes.Replace(obj, []byte(`"metadata":{`), []byte(`"metadata":{"annotations":{"`+EmittedAnnotation+`":"`+strconv.FormatInt(time.Now().UnixNano(), 10)+`"},`), 1)
			if _, err := fmt.Fprintf(pw, `{"type":"MODIFIED","object":%s}`+"\n", obj); err != nil {
				return
			}
		}
	}()
	resp := reply(r, http.StatusOK, nil)
	resp.Body, resp.ContentLength = pr, -1
	resp.Header.Set("Transfer-Encoding", "chunked")
	return resp
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func reply(r *http.Request, code int, body []byte) *http.Response {
	return &http.Response{
		StatusCode: code, Status: fmt.Sprintf("%d %s", code, http.StatusText(code)), Proto: "HTTP/2.0", ProtoMajor: 2,
		Header:        http.Header{"Content-Type": {"application/json"}, "Audit-Id": {r.Header.Get("Audit-Id")}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)), Request: r,
	}
}

func notFound(r *http.Request, name string) *http.Response {
	return status(r, http.StatusNotFound, "NotFound", fmt.Sprintf("configmaps %q not found", name))
}

// status is a Kubernetes Status; an empty reason is a Success.
func status(r *http.Request, code int, reason, msg string) *http.Response {
	st := map[string]any{"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{}, "code": code}
	if reason == "" {
		st["status"] = "Success"
	} else {
		st["status"], st["reason"], st["message"] = "Failure", reason, msg
	}
	b, _ := json.Marshal(st)
	return reply(r, code, b)
}

// Create answers a SubjectAccessReview: in a simulated cluster nobody may
// impersonate anyone (kubectl --as gets the kube-apiserver's 403).
func (c *Cluster) Create(_ context.Context, sar *authorizationv1.SubjectAccessReview, _ metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
	out := sar.DeepCopy()
	out.Status = authorizationv1.SubjectAccessReviewStatus{Allowed: false, Reason: "a simulated cluster allows no impersonation"}
	return out, nil
}
