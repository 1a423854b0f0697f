package tunnel

import (
	"net/http"
	"testing"
)

func TestFromHTTPDropsHopByHopAndCredentials(t *testing.T) {
	h := http.Header{}
	h.Set("Accept", "application/json")
	h.Set("Connection", "keep-alive, X-Secret")
	h.Set("X-Secret", "hop")
	h.Set("Transfer-Encoding", "chunked")
	h.Set("Authorization", "Bearer stolen")
	h.Set("Impersonate-User", "system:admin")
	h["impersonate-group"] = []string{"system:masters"} // not canonical on purpose
	h.Add("Impersonate-Extra-Scopes", "x")

	got := http.Header{}
	ToHTTP(FromHTTP(h, Credential), got, nil)
	if got.Get("Accept") != "application/json" {
		t.Errorf("Accept lost: %v", got)
	}
	for _, name := range []string{"Connection", "X-Secret", "Transfer-Encoding", "Authorization", "Impersonate-User", "Impersonate-Group", "Impersonate-Extra-Scopes"} {
		if v := got.Values(name); len(v) > 0 {
			t.Errorf("%s passed through: %v", name, v)
		}
	}
}
