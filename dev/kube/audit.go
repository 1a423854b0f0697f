package kube

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

// auditPolicy records every request that may change something, with its
// metadata, once its response is complete: enough to tell which requests
// reached the kube-apiserver, how often, as whom and with what answer.
// Reads are left out; a cluster serves many more of them.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted", "Panic"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
`

// AuditEvent is what tests read of an audit log entry
// (k8s.io/apiserver/pkg/apis/audit/v1.Event).
type AuditEvent struct {
	// AuditID is the request's Audit-ID header when it had one: Tether's
	// agent sends its request id there.
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *AuditStatus `json:"responseStatus"`
}

// AuditStatus is an audit event's response status.
type AuditStatus struct {
	Code int `json:"code"`
}

// GetCode is the response code, 0 if there is none.
func (s *AuditStatus) GetCode() int {
	if s == nil {
		return 0
	}
	return s.Code
}

// Audit reads the audit log: every mutating request the kube-apiserver
// answered so far, in order.
func (cp *ControlPlane) Audit() ([]AuditEvent, error) {
	f, err := os.Open(cp.AuditLog)
	if err != nil {
		return nil, fmt.Errorf("kube: reading the audit log: %w", err)
	}
	defer f.Close()
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			// The last line may be half written.
			continue
		}
		out = append(out, ev)
	}
	return out, sc.Err()
}
