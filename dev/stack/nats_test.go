package stack

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// natsd's --auth file holds each user's bcrypt hash, never the password a
// service reads from its own file, and each instance user reads only its
// own router inbox and _INBOX.
func TestNATSUsersFile(t *testing.T) {
	dir := t.TempDir()
	path, err := WriteNATSUsers(dir, NATSUsers(map[string]int{"router": 2, "subscriber": 1}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var auth struct {
		Users []struct {
			User, Password string
			Subscribe      []string
		}
	}
	if err := json.Unmarshal(b, &auth); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range auth.Users {
		names = append(names, u.User)
		pw, err := os.ReadFile(filepath.Join(dir, u.User))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), string(pw)) {
			t.Errorf("the --auth file holds %s's password", u.User)
		}
		if err := bcrypt.CompareHashAndPassword([]byte(u.Password), pw); err != nil {
			t.Errorf("%s: the hash is not of the password in its file: %v", u.User, err)
		}
	}
	want := []string{"agent-registry", "audit", "autoscaler", "router-0", "router-1", "subscriber-0"}
	if !slices.Equal(names, want) {
		t.Fatalf("users %v, want %v", names, want)
	}
	for _, u := range auth.Users {
		if u.User == "router-1" && !slices.Equal(u.Subscribe, []string{"tether.rtr.router-1.>", "_INBOX_router-1.>"}) {
			t.Errorf("router-1 may subscribe %v", u.Subscribe)
		}
	}
}

func TestNATSAuthRefuses(t *testing.T) {
	tests := map[string]map[string]string{
		"a plaintext password": {"router": "0123456789abcdef"},
		"an unknown user":      {"intruder": "$2a$10$abcdefghijklmnopqrstuu5Qb2dA3U6oeY7F8j9Z0aBcDeFgHiJkL"},
		"an instance of none":  {"router-x": "$2a$10$abcdefghijklmnopqrstuu5Qb2dA3U6oeY7F8j9Z0aBcDeFgHiJkL"},
		"no user at all":       {},
	}
	for name, hashes := range tests {
		if _, err := NATSAuth(hashes); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
