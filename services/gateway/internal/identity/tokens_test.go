package identity

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestLoadTokens(t *testing.T) {
	tests := []struct {
		name        string
		file        string
		allowSystem []string
		wantErr     bool
	}{
		{"ok", "# comment\ntok1,alice,u1,\"g1,g2\",\"acme\"\ntok2,bob,u2,,globex\n", nil, false},
		{"too few fields", "tok1,alice,u1\n", nil, true},
		{"empty token", ",alice,u1,g,t\n", nil, true},
		{"duplicate token", "t,a,1,g,x\nt,b,2,g,x\n", nil, true},
		{"system:masters", "tok1,alice,u1,\"g1,g2\",\"acme\"\ntok2,admin,u2,\"system:masters\",acme\n", nil, true},
		{"a system user", "tok1,alice,u1,\"g1,g2\",\"acme\"\ntok2,system:admin,u2,,acme\n", nil, true},
		{"system:masters allowed by name", "tok1,alice,u1,\"g1,g2\",\"acme\"\ntok2,admin,u2,\"system:masters\",acme\n", []string{"system:masters"}, false},
		{"another system group than allowed", "tok1,alice,u1,\"g1,g2\",\"acme\"\ntok2,admin,u2,\"system:nodes\",acme\n", []string{"system:masters"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.csv")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			tok, err := LoadTokens(path, tt.allowSystem...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			ctx := context.Background()
			u, err := tok.Authenticate(ctx, "tok1")
			want := User{Name: "alice", UID: "u1", Groups: []string{"g1", "g2"}, Tenants: []string{"acme"}}
			if err != nil || !reflect.DeepEqual(u, want) {
				t.Fatalf("Authenticate(tok1) = %+v, %v", u, err)
			}
			if _, err := tok.Authenticate(ctx, "tok"); !errors.Is(err, ErrUnknown) {
				t.Fatalf("a prefix of a token: %v", err)
			}
			if _, err := tok.Authenticate(ctx, ""); !errors.Is(err, ErrUnknown) {
				t.Fatalf("the empty token: %v", err)
			}
		})
	}
}
