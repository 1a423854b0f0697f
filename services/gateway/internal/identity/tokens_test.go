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
		name    string
		file    string
		wantErr bool
	}{
		{"ok", "# comment\ntok1,alice,u1,\"g1,g2\",\"acme\"\ntok2,bob,u2,,globex\n", false},
		{"too few fields", "tok1,alice,u1\n", true},
		{"empty token", ",alice,u1,g,t\n", true},
		{"duplicate token", "t,a,1,g,x\nt,b,2,g,x\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.csv")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			tok, err := LoadTokens(path)
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
