package kube

import (
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

func (c Config) validate() error {
	if c.BinDir == "" {
		return errors.New("BinDir is empty")
	}
	if err := checkBinaries(c.BinDir); err != nil {
		return fmt.Errorf("BinDir %s: %w", c.BinDir, err)
	}
	if c.Dir == "" {
		return errors.New("Dir is empty")
	}
	names, tokens := map[string]bool{adminName: true}, map[string]bool{}
	for i, u := range c.Users {
		if err := u.validate(); err != nil {
			return fmt.Errorf("Users[%d]: %w", i, err)
		}
		if names[u.Name] {
			return fmt.Errorf("Users[%d]: name %q is reserved or already used", i, u.Name)
		}
		if tokens[u.Token] {
			return fmt.Errorf("Users[%d] (%s): token already used by another user", i, u.Name)
		}
		names[u.Name], tokens[u.Token] = true, true
	}
	return nil
}

func (u User) validate() error {
	switch {
	case u.Name == "" || u.Name == "." || u.Name == "..":
		return fmt.Errorf("invalid user name %q", u.Name)
	case strings.ContainsAny(u.Name, `/\`) || hasControl(u.Name):
		// The name becomes part of a file name.
		return fmt.Errorf("user name %q has a slash or control character", u.Name)
	case u.Token == "":
		return fmt.Errorf("user %s: empty token", u.Name)
	case strings.ContainsAny(u.Token, " \t") || hasControl(u.Token):
		// The token travels in an Authorization header.
		return fmt.Errorf("user %s: token has whitespace or control characters", u.Name)
	case hasControl(u.UID):
		return fmt.Errorf("user %s: UID has control characters", u.Name)
	}
	for _, g := range u.Groups {
		// The token file joins groups with commas in a single CSV field.
		if g == "" || strings.Contains(g, ",") || hasControl(g) {
			return fmt.Errorf("user %s: invalid group %q", u.Name, g)
		}
	}
	return nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// writeTokenFile writes the --token-auth-file CSV: token,user,uid,"g1,g2".
func writeTokenFile(path string, users []User) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	w := csv.NewWriter(f)
	for _, u := range users {
		rec := []string{u.Token, u.Name, u.UID}
		// An empty fourth column would put the user in group "".
		if len(u.Groups) > 0 {
			rec = append(rec, strings.Join(u.Groups, ","))
		}
		w.Write(rec)
	}
	w.Flush()
	if err := errors.Join(w.Error(), f.Close()); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b) // never fails; see crypto/rand.Read
	return hex.EncodeToString(b)
}
