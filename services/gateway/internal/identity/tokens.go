package identity

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Tokens authenticates static bearer tokens. The file is CSV, one user a
// line, like the kube-apiserver's token file with tenants added:
//
//	token,user,uid,"group1,group2","tenant1,tenant2"
type Tokens struct {
	users map[[32]byte]User
}

// LoadTokens reads a tokens file. A user or group with the Kubernetes
// system: prefix is refused, unless listed in allowSystem: a token file is
// a long-lived secret, and one leaked line naming system:masters would be
// every cluster's administrator (agents refuse such names too, unless the
// cluster allows them).
func LoadTokens(path string, allowSystem ...string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.Comment = '#'
	t := &Tokens{users: map[[32]byte]User{}}
	for line := 1; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("tokens: %s: %w", path, err)
		}
		if len(rec) < 5 {
			return nil, fmt.Errorf("tokens: %s line %d: want token,user,uid,groups,tenants", path, line)
		}
		if rec[0] == "" || rec[1] == "" {
			return nil, fmt.Errorf("tokens: %s line %d: empty token or user", path, line)
		}
		key := sha256.Sum256([]byte(rec[0]))
		if _, dup := t.users[key]; dup {
			return nil, fmt.Errorf("tokens: %s line %d: token listed twice", path, line)
		}
		u := User{Name: rec[1], UID: rec[2], Groups: split(rec[3]), Tenants: split(rec[4])}
		for _, n := range append([]string{u.Name}, u.Groups...) {
			if strings.HasPrefix(n, "system:") && !slices.Contains(allowSystem, n) {
				return nil, fmt.Errorf("tokens: %s line %d: %q is a Kubernetes system name; bind a group of your own to the role instead, or allow it by name with --allow-system-names-in-tokens", path, line, n)
			}
		}
		t.users[key] = u
	}
	return t, nil
}

// Authenticate returns the user a bearer token belongs to.
func (t *Tokens) Authenticate(_ context.Context, token string) (User, error) {
	if token == "" {
		return User{}, ErrUnknown
	}
	// Looking up by hash keeps the comparison's timing independent of how
	// much of a guessed token matches.
	key := sha256.Sum256([]byte(token))
	u, ok := t.users[key]
	if !ok {
		return User{}, ErrUnknown
	}
	return u, nil
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
