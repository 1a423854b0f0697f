package identity

import (
	"context"
	"crypto/sha256"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Tokens authenticates static bearer tokens. The file is CSV, one user a
// line, like the kube-apiserver's token file with tenants added:
//
//	token,user,uid,"group1,group2","tenant1,tenant2"
type Tokens struct {
	users map[[32]byte]User
}

// LoadTokens reads a tokens file.
func LoadTokens(path string) (*Tokens, error) {
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
		t.users[key] = User{Name: rec[1], UID: rec[2], Groups: split(rec[3]), Tenants: split(rec[4])}
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
