// Package kstatus writes errors the way the Kubernetes API does: a
// metav1.Status JSON body, so kubectl and client-go show them as they would
// show the API server's own.
package kstatus

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Status mirrors the fields of metav1.Status that clients read.
type Status struct {
	Kind       string   `json:"kind"`
	APIVersion string   `json:"apiVersion"`
	Metadata   struct{} `json:"metadata"`
	Status     string   `json:"status"`
	Message    string   `json:"message"`
	Reason     string   `json:"reason,omitempty"`
	Details    *Details `json:"details,omitempty"`
	Code       int      `json:"code"`
}

// Details carries what clients use to retry.
type Details struct {
	Name              string `json:"name,omitempty"`
	Kind              string `json:"kind,omitempty"`
	RetryAfterSeconds int    `json:"retryAfterSeconds,omitempty"`
}

// Reasons, as in k8s.io/apimachinery/pkg/apis/meta/v1.
const (
	ReasonBadRequest         = "BadRequest"
	ReasonUnauthorized       = "Unauthorized"
	ReasonForbidden          = "Forbidden"
	ReasonNotFound           = "NotFound"
	ReasonTooManyRequests    = "TooManyRequests"
	ReasonRequestEntityLarge = "RequestEntityTooLarge"
	ReasonServiceUnavailable = "ServiceUnavailable"
	ReasonInternalError      = "InternalError"
	ReasonTimeout            = "Timeout"
)

// ReasonFor is the reason the API server gives with an HTTP code.
func ReasonFor(code int) string {
	switch code {
	case http.StatusBadRequest:
		return ReasonBadRequest
	case http.StatusUnauthorized:
		return ReasonUnauthorized
	case http.StatusForbidden:
		return ReasonForbidden
	case http.StatusNotFound:
		return ReasonNotFound
	case http.StatusRequestEntityTooLarge:
		return ReasonRequestEntityLarge
	case http.StatusRequestHeaderFieldsTooLarge:
		// Kubernetes has no reason of its own for this; it is the client's.
		return ReasonBadRequest
	case http.StatusTooManyRequests:
		return ReasonTooManyRequests
	case http.StatusServiceUnavailable:
		return ReasonServiceUnavailable
	case http.StatusGatewayTimeout:
		return ReasonTimeout
	default:
		return ReasonInternalError
	}
}

// New builds a failure Status with the reason that goes with code.
func New(code int, message string) Status {
	return Status{Kind: "Status", APIVersion: "v1", Status: "Failure", Message: message, Reason: ReasonFor(code), Code: code}
}

// Body is the JSON encoding of s.
func (s Status) Body() []byte {
	b, err := json.Marshal(s)
	if err != nil {
		// Only strings and ints: this cannot fail.
		panic(err)
	}
	return b
}

// WithRetryAfter sets the retry hint clients honor for 429 and 503.
func (s Status) WithRetryAfter(d time.Duration) Status {
	sec := max(int(d.Round(time.Second)/time.Second), 1)
	s.Details = &Details{RetryAfterSeconds: sec}
	return s
}

// Header is the header that goes with s: its content type, and the
// Retry-After it asks for, if any.
func (s Status) Header() http.Header {
	h := http.Header{"Content-Type": {"application/json"}, "X-Content-Type-Options": {"nosniff"}}
	if s.Details != nil && s.Details.RetryAfterSeconds > 0 {
		h.Set("Retry-After", strconv.Itoa(s.Details.RetryAfterSeconds))
	}
	return h
}

// Write sends s as the response.
func Write(w http.ResponseWriter, s Status) {
	h := w.Header()
	for k, v := range s.Header() {
		h[k] = v
	}
	w.WriteHeader(s.Code)
	_, _ = w.Write(s.Body())
}

// Error writes a failure Status with code and message.
func Error(w http.ResponseWriter, code int, message string) {
	Write(w, New(code, message))
}
